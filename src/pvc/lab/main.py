"""pvc-lab: a whole PVC cluster on one machine, for trying PVC and for the system tests.

`up` builds it step by step (each step waited for by a readiness check), `down` removes every
trace (by pid files, namespaces, mounts and state directory), `status` shows every component,
and `node`/`fence` are the failure tools the HA tests use.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import httpx

from pvc.lab import labtls, proc
from pvc.lab.plan import API_PORT, DEFAULT_NAME, STATE_ROOT, ZK_CLIENT_PORT, LabPlan, NodePlan, make_plan
from pvc.lab.proc import LabError

BASE_IMAGE = "pvc-lab-guest"
BASE_POOL = "vms"


class Steps:
    """Prints each step with its duration, as `up` promises."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, title: str, fn: Callable[[], object]) -> object:
        t0 = time.monotonic()
        click.echo(f"==> {title} ...", nl=False)
        try:
            result = fn()
        except Exception:
            click.echo(" failed")
            raise
        click.echo(f" done ({time.monotonic() - t0:.1f}s)")
        return result

    @property
    def total(self) -> float:
        return time.monotonic() - self.started


def _api(plan: LabPlan) -> httpx.Client:
    return labtls.api_client(plan)


def _api_nodes(plan: LabPlan) -> list[dict]:
    try:
        with _api(plan) as api:
            response = api.get("/node")
            return response.json() if response.status_code == 200 else []
    except httpx.HTTPError:
        return []


def _lab_exists(name: str) -> bool:
    from pvc.lab import netns

    return (STATE_ROOT / name / "lab.json").exists() or bool(netns.list_lab_netns(name))


# -- up --------------------------------------------------------------------------------------------

DEMO_VM = "demo1"


DEMO_DISK = f"{DEMO_VM}_vda"
DEMO_VNI = 100
DEMO_USERDATA = "#!/bin/sh\necho \"PVC-DEMO hello from $(hostname), provisioned by PVC\"\n"


def demo_steps(plan: LabPlan) -> list[tuple[str, str, dict[str, Any]]]:
    """What the demo asks of the API: a managed network with DHCP, templates, userdata, the
    shipped clone script and a profile `demo` (the tiny guest's kernel and initramfs, its root
    filesystem on a clone of the guest disk), then `provisioner create demo1 demo`."""
    from pvc.worker import provisioner

    files = plan.extra["guest_files"]
    assert isinstance(files, dict)
    script = (Path(provisioner.__file__).parent / "examples" / "2-clone.py").read_text()
    return [
        ("POST", "/network", {"vni": DEMO_VNI, "description": "demo", "nettype": "managed",
                              "domain": "demo.lab", "ip4_network": "10.210.100.0/24",
                              "ip4_gateway": "10.210.100.1", "dhcp4": "true",
                              "dhcp4_start": "10.210.100.100", "dhcp4_end": "10.210.100.199"}),
        ("POST", "/provisioner/template/system", {"name": "demo", "vcpus": 1, "vram": 128, "serial": "true",
                                                  "vnc": "false", "node_selector": "mem"}),
        ("POST", "/provisioner/template/network", {"name": "demo"}),
        ("POST", "/provisioner/template/network/demo/net", {"vni": DEMO_VNI}),
        ("POST", "/provisioner/template/storage", {"name": "demo"}),
        ("POST", "/provisioner/template/storage/demo/disk", {"disk_id": "vda", "pool": BASE_POOL,
                                                            "source_volume": BASE_IMAGE}),
        ("POST", "/provisioner/userdata", {"name": "demo", "data": DEMO_USERDATA}),
        ("POST", "/provisioner/script", {"name": "clone", "data": script}),
        ("POST", "/provisioner/profile", {"name": "demo", "profile_type": "provisioner",
                                          "system_template": "demo", "network_template": "demo",
                                          "storage_template": "demo", "userdata": "demo", "script": "clone",
                                          "arg": [f"kernel={files['kernel']}", f"initrd={files['initrd']}"]}),
        ("POST", "/provisioner/create", {"name": DEMO_VM, "profile": "demo"}),
    ]


def boot_demo(plan: LabPlan) -> str:
    """Provision the demo VM through the API and wait until it runs from its RBD root and has
    fetched its user-data from the metadata service."""
    with _api(plan) as api:
        api.timeout = httpx.Timeout(120)
        task = ""
        for method, path, data in demo_steps(plan):
            response = _call_retrying(api, method, path, {}, data)
            if response.status_code not in (200, 202):
                raise LabError(f"demo VM: {method} {path} failed: {response.text}")
            if path == "/provisioner/create":
                task = str(response.json()["task_id"])

        def provisioned() -> bool:
            status = api.get(f"/tasks/{task}").json()
            if status.get("state") in ("FAILURE", "CANCELLED"):
                raise LabError(f"demo VM: provisioning failed: {status.get('status')}")
            return status.get("state") == "SUCCESS"

        proc.wait_until(provisioned, 180, "the demo VM's provisioning job", interval=0.5)

        def booted() -> str | None:
            console = api.get(f"/vm/{DEMO_VM}/console", params={"lines": 200})
            text = console.json().get("data", "") if console.status_code == 200 else ""
            if "PVC-GUEST-ROOT dev=/dev/vda" in text and "PVC-DEMO hello" in text:
                return str(api.get(f"/vm/{DEMO_VM}").json()[0]["node"])
            return None

        return str(proc.wait_until(booted, 180, "the demo VM's boot and user-data markers", interval=1))


def _call_retrying(api: httpx.Client, method: str, path: str, params: dict[str, Any],
                   data: dict[str, Any]) -> httpx.Response:
    """One API call; a 503 (Ceph not yet reachable from a just-elected primary) is retried."""
    deadline = time.monotonic() + 60
    while True:
        response = api.request(method, path, params=params, data=data or None)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(1)


def lab_up(name: str, nodes: int, demo: bool = False, chaos: bool | None = None) -> LabPlan:
    """Bring a lab up; `chaos` (default: PVC_LAB_CHAOS) gives each node a size-limited state directory."""
    from pvc.lab import ceph, guest, libvirt, netns, pvcnodes, relay, zookeeper

    if _lab_exists(name):
        raise LabError(f"a lab named '{name}' already exists; run 'pvc-lab down --name {name}' first")
    plan = make_plan(name, nodes, chaos=chaos)
    plan.save()  # first, so `down` can clean up a half-finished `up`
    step = Steps()
    step("building the guest image", lambda: plan.extra.update(
        guest_files={k: str(v) for k, v in vars(guest.build_guest()).items()}))

    def network() -> None:
        netns.create_switch(plan)
        for node in plan.nodes:
            netns.create_node_netns(plan, node)
        netns.wait_links_ready(plan)

    step(f"creating the switch and {nodes} node namespaces", network)
    step("starting the ZooKeeper ensemble", lambda: (zookeeper.start_ensemble(plan),
                                                      zookeeper.wait_ensemble(plan, 60)))
    step("publishing ZooKeeper on 127.0.0.1", lambda: relay.start_relay(
        plan, "zookeeper", plan.zk_port, ZK_CLIENT_PORT, plan.coordinators))
    step("bootstrapping Ceph (mons, mgr, OSDs)", lambda: ceph.bootstrap(plan))

    def libvirtds() -> None:
        for node in plan.nodes:
            libvirt.start_libvirtd(plan, node)
        for node in plan.nodes:
            libvirt.wait_libvirtd(plan, node)

    step("starting a libvirtd per node", libvirtds)
    step("importing the guest disk into Ceph", lambda: ceph.import_image(
        plan, Path(str(plan.extra["guest_files"]["disk_raw"])), BASE_POOL, BASE_IMAGE))
    plan.save()

    def daemons() -> None:
        pvcnodes.write_configs(plan)
        for node in plan.nodes:
            pvcnodes.start_node(plan, node)

    step("starting pvcnoded and pvcworkerd on every node", daemons)
    step("publishing the API on 127.0.0.1", lambda: relay.start_relay(
        plan, "api", plan.api_port, API_PORT, plan.coordinators))
    step("waiting for every node to run and a primary with the API",
         lambda: proc.wait_until(lambda: len([n for n in _api_nodes(plan)
                                              if n["daemon_state"] == "run"]) == nodes, 120,
                                 "all nodes in run state"))
    step("readying the nodes", lambda: _ready_all(plan))
    step("waiting for the primary's first Ceph statistics", lambda: _storage_registered(plan))
    step("adding the 'lab' connection to the pvc CLI", lambda: _add_connection(plan))
    plan.save()
    click.echo(f"Lab '{name}' is up in {step.total:.1f}s: {nodes} nodes, "
               f"API at {labtls.api_base(plan)} (CA {labtls.ca_file(plan)}; pvc -c {_conn_name(plan)} ...), "
               f"ZooKeeper at 127.0.0.1:{plan.zk_port}, guest base volume {BASE_POOL}/{BASE_IMAGE}.")
    if demo:
        node = step(f"booting the demo VM '{DEMO_VM}'", lambda: boot_demo(plan))
        conn = _conn_name(plan)
        click.echo(f"Demo VM '{DEMO_VM}' runs on {node} with its root on RBD volume {BASE_POOL}/{DEMO_DISK}: "
                   f"pvc -c {conn} vm info {DEMO_VM}; pvc -c {conn} vm log {DEMO_VM}.")
    return plan


def _storage_registered(plan: LabPlan) -> None:
    """Until the primary's stats pass has registered the pool (it waits two passes before it
    trusts a new object) and Ceph status; then register the base image without waiting more."""
    with _api(plan) as api:
        def known() -> bool:
            return all(api.get(path).status_code == 200
                       for path in ("/storage/ceph/status", f"/storage/ceph/pool/{BASE_POOL}"))

        proc.wait_until(known, 90, f"pool {BASE_POOL} in the API", interval=0.5)
        response = _call_retrying(api, "POST", f"/storage/ceph/volume/{BASE_POOL}/{BASE_IMAGE}/scan", {}, {})
        if response.status_code != 200:
            raise LabError(f"registering {BASE_POOL}/{BASE_IMAGE}: {response.text}")


def _ready_all(plan: LabPlan) -> None:
    with _api(plan) as api:
        for node in plan.nodes:
            response = api.post(f"/node/{node.name}/domain-state", params={"state": "ready"})
            if response.status_code != 200:
                raise LabError(f"readying {node.name}: {response.text}")
    proc.wait_until(lambda: all(n["domain_state"] == "ready" for n in _api_nodes(plan)), 60,
                    "nodes ready")


def _conn_name(plan: LabPlan) -> str:
    return "lab" if plan.name == DEFAULT_NAME else f"lab-{plan.name}"


def _pvc(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pvc.cli", *args], capture_output=True, text=True,
                          input=input)


def _add_connection(plan: LabPlan) -> None:
    name = _conn_name(plan)
    _pvc("connection", "remove", name)
    # the token through standard input: never on a command line (other users see those)
    result = _pvc("connection", "add", name, "-d", f"pvc-lab {plan.name}", "-a", "127.0.0.1",
                  "-p", str(plan.api_port), "--api-key-file", "-",
                  "--ca-file", str(labtls.ca_file(plan)), input=str(plan.extra["api_token"]) + "\n")
    if result.returncode != 0:
        raise LabError(f"pvc connection add failed: {result.stderr or result.stdout}")


# -- down ------------------------------------------------------------------------------------------

def lab_down(name: str) -> list[str]:
    """Remove everything of lab `name`; safe to run twice or after a half-failed up."""
    from pvc.lab import netns

    done: list[str] = []
    plan = LabPlan.load(name) or make_plan(name, 1)
    pid_dir = plan.pid_dir
    if pid_dir.exists():
        # PVC daemons first (they hold sessions and hand the primary over), then the rest;
        # each group stopped in parallel, by pid file.
        pidfiles = sorted(pid_dir.glob("*.pid"))
        for group in ([p for p in pidfiles if "pvc" in p.name], [p for p in pidfiles if "pvc" not in p.name]):
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(lambda p: proc.stop(p, timeout=5), group))
            done += [f"stopped {p.stem}" for p in group]
    for ns in netns.list_lab_netns(name):
        pids = proc.run(["ip", "netns", "pids", ns], check=False).stdout.split()
        for pid in pids:
            proc.run(["kill", "-9", pid], check=False)
        if pids:
            done.append(f"killed {len(pids)} leftover process(es) in {ns}")
    _unmount_under(plan.state_dir, done)
    _detach_loops(plan.state_dir, done)
    netns.delete_all(plan)
    done.append("deleted namespaces")
    if plan.state_dir.exists():
        shutil.rmtree(plan.state_dir, ignore_errors=True)
        done.append(f"removed {plan.state_dir}")
    _pvc("connection", "remove", _conn_name(plan))
    return done


def _unmount_under(path: Path, done: list[str]) -> None:
    try:
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    for mount in sorted((m for m in mounts if m.startswith(str(path))), key=len, reverse=True):
        proc.run(["umount", "-l", mount], check=False)
        done.append(f"unmounted {mount}")


def _detach_loops(path: Path, done: list[str]) -> None:
    result = proc.run(["losetup", "-J"], check=False)
    try:
        devices = json.loads(result.stdout or "{}").get("loopdevices", [])
    except ValueError:
        return
    for device in devices:
        if str(device.get("back-file", "")).startswith(str(path)):
            proc.run(["losetup", "-d", device["name"]], check=False)
            done.append(f"detached {device['name']}")


# -- status ---------------------------------------------------------------------------------------

def lab_status(plan: LabPlan) -> list[dict[str, str]]:
    from pvc.lab import netns

    rows = []
    existing = set(netns.list_lab_netns(plan.name))
    pidfiles = {p.stem: p for p in plan.pid_dir.glob("*.pid")} if plan.pid_dir.exists() else {}
    api_nodes = {n["name"]: n for n in _api_nodes(plan)}
    for node in plan.nodes:
        rows.append({"node": node.name, "component": "namespace",
                     "state": "up" if node.netns in existing else "down", "pid": "",
                     "address": f"{node.address} ({node.netns})"})
        for stem, path in sorted(pidfiles.items()):
            if not stem.startswith(node.name + "-"):
                continue
            pid = proc.pid_of(path)
            rows.append({"node": node.name, "component": stem[len(node.name) + 1:],
                         "state": "up" if pid else "down", "pid": str(pid or ""), "address": node.address})
        info = api_nodes.get(node.name)
        if info:
            rows.append({"node": node.name, "component": "pvc node",
                         "state": f"{info['daemon_state']}/{info['coordinator_state']}/"
                                  f"{info['domain_state']}", "pid": "", "address": node.address})
    for stem, path in sorted(pidfiles.items()):
        if stem.startswith("relay-"):
            pid = proc.pid_of(path)
            port = plan.api_port if stem == "relay-api" else plan.zk_port
            rows.append({"node": "-", "component": stem, "state": "up" if pid else "down",
                         "pid": str(pid or ""), "address": f"127.0.0.1:{port}"})
    return rows


# -- failure tools ---------------------------------------------------------------------------------

def node_stop(plan: LabPlan, node: NodePlan) -> None:
    """Clean stop of all of a node's services, in reverse start order."""
    from pvc.lab import ceph, libvirt, pvcnodes, zookeeper

    pvcnodes.stop_node(plan, node)
    libvirt.stop_libvirtd(plan, node)
    ceph.stop_node_daemons(plan, node)
    if node.coordinator:
        zookeeper.stop_member(plan, node)


def node_start(plan: LabPlan, node: NodePlan) -> None:
    from pvc.lab import ceph, libvirt, netns, pvcnodes, zookeeper

    if node.netns not in netns.list_lab_netns(plan.name):
        raise LabError(f"{node.name}'s namespace is gone; the lab must be rebuilt")
    if node.coordinator:
        zookeeper.start_member(plan, node)
    ceph.start_node_daemons(plan, node)
    libvirt.start_libvirtd(plan, node)
    libvirt.wait_libvirtd(plan, node)
    pvcnodes.start_node(plan, node)


def node_kill(plan: LabPlan, node: NodePlan) -> int:
    """SIGKILL every process in the node's namespace (VMs, daemons, Ceph, ZooKeeper)."""
    killed: set[str] = set()

    def survivors() -> list[str]:
        pids = proc.run(["ip", "netns", "pids", node.netns], check=False).stdout.split()
        return [p for p in pids if proc.alive(int(p))]

    for _ in range(50):
        pids = survivors()
        if not pids:
            break
        proc.run(["kill", "-9", *pids], check=False)
        killed.update(pids)
        time.sleep(0.1)
    for pidfile in plan.pid_dir.glob(f"{node.name}-*.pid"):
        if proc.pid_of(pidfile) is None:
            pidfile.unlink(missing_ok=True)
    return len(killed)


def fence(plan: LabPlan, node: NodePlan) -> None:
    """The lab's fence agent: the node's VMs and daemons die and its links go down."""
    from pvc.lab import netns

    node_kill(plan, node)
    netns.isolate(plan, node)


# -- command line ------------------------------------------------------------------------------------

def _plan(name: str) -> LabPlan:
    plan = LabPlan.load(name)
    if plan is None:
        raise click.ClickException(f"no lab named '{name}' (pvc-lab up --name {name})")
    return plan


name_option = click.option("--name", default=DEFAULT_NAME, show_default=True, help="Lab name.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """A real PVC cluster on this machine, in network namespaces.

    \b
    Two labs side by side (e.g. to send, mirror and promote VMs between two clusters):
      pvc-lab up --name b          a second lab: own namespaces (b-*), ports, ZooKeeper and Ceph;
                                   CLI connection "lab-b" (the default lab's "lab" is untouched)
      pvc-lab link pvclab b        lab b's API on the default lab's underlay, for its nodes:
                                   prints the URL they use (a relay in the labs' own namespaces)
      pvc-lab link b pvclab        the other way (for promoting back)
      pvc -c lab vm mirror create VM https://10.200.0.240:7370/api/v1 --key-file KEY --no-verify-ssl
      pvc-lab down --name b        removes lab b (and links from it); unlink removes one link
    """


@cli.command()
@name_option
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 32), help="Node count.")
@click.option("--demo/--no-demo", default=True, show_default=True,
              help="Boot a demo VM once the cluster is up.")
def up(name: str, nodes: int, demo: bool) -> None:
    """Build the lab, start every component and boot a demo VM."""
    try:
        lab_up(name, nodes, demo)
    except (LabError, ValueError, subprocess.TimeoutExpired) as exc:
        raise click.ClickException(f"{exc}\n(run 'pvc-lab down --name {name}' to clean up)") from None


@cli.command()
@name_option
def down(name: str) -> None:
    """Stop everything and remove every trace of the lab."""
    for line in lab_down(name):
        click.echo(line)
    click.echo(f"Lab '{name}' is gone.")


@cli.command()
@name_option
@click.option("--format", "fmt", type=click.Choice(["pretty", "json"]), default="pretty")
def status(name: str, fmt: str) -> None:
    """Every component per node (up/down, pid, address) and the API URL."""
    from rich.console import Console
    from rich.table import Table

    plan = _plan(name)
    rows = lab_status(plan)
    if fmt == "json":
        click.echo(json.dumps({"name": plan.name, "api": labtls.api_base(plan),
                               "ca_file": str(labtls.ca_file(plan)),
                               "zookeeper": f"127.0.0.1:{plan.zk_port}", "components": rows}, indent=1))
        return
    table = Table(title=f"pvc-lab {plan.name}: API {labtls.api_base(plan)}")
    for column in ("node", "component", "state", "pid", "address"):
        table.add_column(column)
    for row in rows:
        colour = "green" if row["state"].startswith(("up", "run")) else "red"
        table.add_row(row["node"], row["component"], f"[{colour}]{row['state']}[/]", row["pid"],
                      row["address"])
    Console().print(table)


@cli.command("node")
@name_option
@click.argument("action", type=click.Choice(["stop", "kill", "start", "isolate", "rejoin"]))
@click.argument("node")
def node_cmd(name: str, action: str, node: str) -> None:
    """Failure tools: stop/kill/start a node's processes, isolate/rejoin its underlay link."""
    from pvc.lab import netns

    plan = _plan(name)
    try:
        target = plan.node(node)
    except KeyError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        if action == "stop":
            node_stop(plan, target)
        elif action == "start":
            node_start(plan, target)
        elif action == "kill":
            click.echo(f"killed {node_kill(plan, target)} process(es)")
        elif action == "isolate":
            netns.isolate(plan, target)
        else:
            netns.rejoin(plan, target)
    except LabError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{node}: {action} done")


@cli.command("fence")
@name_option
@click.argument("node")
def fence_cmd(name: str, node: str) -> None:
    """Lab fence agent: kill the node's VMs and daemons and cut its links."""
    plan = _plan(name)
    try:
        fence(plan, plan.node(node))
    except (KeyError, LabError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{node}: fenced")


@cli.command("link")
@click.argument("lab")
@click.argument("peer")
def link_cmd(lab: str, peer: str) -> None:
    """Let the nodes of LAB reach the API of lab PEER (prints the URL they use)."""
    from pvc.lab import link

    try:
        url = link.link(_plan(lab), _plan(peer))
    except LabError as exc:
        raise click.ClickException(str(exc)) from None
    other = _plan(peer)
    click.echo(f"lab {lab}'s nodes reach lab {peer}'s API at {url} (its key: that of the CLI connection "
               f"{_conn_name(other)}; its CA: {labtls.ca_file(other)})")


@cli.command("unlink")
@click.argument("lab")
@click.argument("peer")
def unlink_cmd(lab: str, peer: str) -> None:
    """Remove the link from LAB to lab PEER."""
    from pvc.lab import link

    done = link.unlink(_plan(lab), peer)
    click.echo(f"lab {lab}: link to {peer} {'removed' if done else 'was not there'}")


@cli.command("chaos")
@name_option
@click.option("--minutes", default=10.0, show_default=True, type=click.FloatRange(0.1, 24 * 60),
              help="How long the workload and the faults run (then: heal, settle, check, clean up).")
@click.option("--seed", type=int, default=None, help="The seed of every random choice [default: a new one, "
                                                     "printed]; the same seed replays the run.")
@click.option("--workers", default=3, show_default=True, type=click.IntRange(1, 16),
              help="Worker threads sending requests at once.")
@click.option("--max-vms", default=5, show_default=True, type=click.IntRange(1, 50),
              help="At most this many of the run's VMs at a time (tiny TCG guests).")
@click.option("--kinds", default="", help="Comma-separated fault kinds to draw from [default: all].")
@click.option("--faults/--no-faults", default=True, show_default=True, help="Inject faults.")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the report goes [default: /var/lib/pvc-lab/chaos-reports].")
def chaos_cmd(name: str, minutes: float, seed: int | None, workers: int, max_vms: int, kinds: str,
              faults: bool, report_dir: Path | None) -> None:
    """Seeded workload through the API under seeded faults, with invariants checked all along
    and at the end (no VM twice, nothing accepted lost, everything healed and healthy). Exits
    non-zero on any violation; the report names the seed and every operation and fault.

    The state-directory fault needs a lab brought up with PVC_LAB_CHAOS=1 (elsewhere it is
    drawn and skipped)."""
    import random

    from pvc.lab.chaos import runner

    plan = _plan(name)
    config = runner.Config(minutes=minutes, seed=random.SystemRandom().randrange(1, 10**6) if seed is None
                           else seed, workers=workers, max_vms=max_vms,
                           kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()), faults=faults,
                           report_dir=report_dir or runner.REPORT_DIR)
    click.echo(f"chaos on lab {name}: seed {config.seed} (replay: {config.replay(name)})")
    try:
        result, json_path, text_path = runner.run(plan, config, echo=click.echo)
    except runner.ChaosError as exc:
        raise click.ClickException(str(exc)) from None
    counts = result["counts"]
    click.echo(f"operations {counts['operations']}, faults injected {counts['faults']}, "
               f"invariant violations {counts['violations']}; report {text_path} ({json_path.name})")
    if counts["violations"] or result["cleanup_errors"]:
        raise SystemExit(1)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()

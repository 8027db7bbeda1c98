"""The lab's Ceph 16 cluster, spread over the node namespaces like a real one.

One mon per coordinator (id = node name, on the node's underlay address, v2 3300 / v1 6789),
one mgr on the first coordinator, OSDs on every node (bluestore on a sparse 2 GiB file in the
node's dir, so data survives OSD restarts), each OSD under its own CRUSH host bucket, so
replicas really land on different "machines". Bootstrapped by hand (no cephadm, no systemd);
every daemon runs in the foreground in its node's namespace with a pid file in the lab's pid
dir. The settings that are not Ceph defaults were measured on small (2-core) machines; each
says why next to it in ceph.conf.

OSDs that PVC itself adds (its `direct` OSD mode, which lab nodes use) live next to the lab's in
`<node>/ceph/ceph-<id>`, with a launch file written by pvc.adapters.osd; they use the same pid
file naming, so starting, stopping and killing a node (and `down`) handle them like the lab's own.

Everything that talks to the cluster (`ceph`, `rbd`) runs inside a coordinator namespace:
the root namespace cannot reach 10.200.0.x.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvc.lab import proc
from pvc.lab.plan import CEPH_MON_V1, CEPH_MON_V2, SUBNET, LabPlan, NodePlan

POOL = "vms"                # the lab's default RBD pool
POOL_PGS = 16
OSDS_PER_NODE = 1
OSD_BLOCK_BYTES = 2 << 30   # sparse: ~1 MB on disk at first
MGR_MODULES_SRC = Path("/usr/share/ceph/mgr")
# The always-on modules of pacific (+ iostat). Loading only these halves ceph-mgr's RSS
# (307 -> ~160 MB); leaving any always-on one out gives HEALTH_ERR MGR_MODULE_ERROR.
MGR_MODULES = ("mgr_module.py", "mgr_util.py", "balancer", "crash", "devicehealth", "orchestrator",
               "pg_autoscaler", "progress", "rbd_support", "status", "telemetry", "volumes", "iostat",
               "prometheus")   # enabled below: /api/v1/metrics/ceph proxies it (issue 16)
STATS_LAG = 2.0            # mgr stats period + mon digest period (1 s each, see ceph.conf)
SUN_PATH_MAX = 107          # unix socket path limit (admin sockets)
PVC_OSD_LAUNCH = "pvc-osd.json"   # pvc.adapters.osd.LAUNCH_FILE: how PVC runs an OSD it added


@dataclass
class Osd:
    id: int
    node: str
    uuid: str


# ---------------------------------------------------------------------------------------- paths

def _run_dir(plan: LabPlan) -> Path:
    return plan.ceph_dir / "run"


def _log_dir(plan: LabPlan) -> Path:
    return plan.ceph_dir / "log"


def admin_keyring(plan: LabPlan) -> Path:
    return plan.ceph_dir / "ceph.client.admin.keyring"


def _info_file(plan: LabPlan) -> Path:
    return plan.ceph_dir / "cluster.json"


def _data_dir(node: NodePlan, daemon: str) -> Path:
    """Daemon data lives in the node's own dir (its "disk"), e.g. <node>/ceph/osd.0."""
    return node.dir / "ceph" / daemon


def _pidfile(plan: LabPlan, node: NodePlan, daemon: str) -> Path:
    kind = daemon.split(".", 1)[0]
    suffix = f"ceph-{kind}" if kind in ("mon", "mgr") else f"ceph-{daemon}"
    return plan.pid_dir / f"{node.name}-{suffix}.pid"


def mon_addrs(plan: LabPlan) -> list[str]:
    return [f"[v2:{n.address}:{CEPH_MON_V2},v1:{n.address}:{CEPH_MON_V1}]" for n in plan.coordinators]


def _mgr_node(plan: LabPlan) -> NodePlan:
    return plan.coordinators[0]


def osds(plan: LabPlan) -> list[Osd]:
    """The OSDs of a bootstrapped cluster (ids are fixed at bootstrap: node order)."""
    info = _info_file(plan)
    if not info.exists():
        raise proc.LabError(f"no Ceph cluster bootstrapped in {plan.ceph_dir}")
    return [Osd(**o) for o in json.loads(info.read_text())["osds"]]


def _node_osds(plan: LabPlan, node: NodePlan) -> list[Osd]:
    return [o for o in osds(plan) if o.node == node.name]


def pvc_osd_root(node: NodePlan) -> Path:
    """Where PVC keeps the OSDs it adds on a lab node (its storage.osd_data_directory)."""
    return node.dir / "ceph"


def pvc_added_osds(plan: LabPlan, node: NodePlan | None = None) -> list[tuple[Osd, dict[str, Any]]]:
    """OSDs PVC added (direct mode) with their launch info, found by their data dirs."""
    found = []
    for n in [node] if node else plan.nodes:
        for launch in sorted(pvc_osd_root(n).glob(f"ceph-*/{PVC_OSD_LAUNCH}")):
            try:
                info = json.loads(launch.read_text())
                osd = Osd(id=int(info["id"]), node=n.name, uuid=str(info.get("uuid", "")))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if isinstance(info.get("argv"), list) and info["argv"]:
                found.append((osd, info))
    return found


def all_osds(plan: LabPlan) -> list[Osd]:
    """The lab's own OSDs and those PVC added."""
    return osds(plan) + [o for o, _info in pvc_added_osds(plan)]


# ------------------------------------------------------------------------------------- commands

def _cli_netns(plan: LabPlan) -> str:
    """A coordinator namespace whose mon runs (any mon answers, but prefer a live local one)."""
    for node in plan.coordinators:
        if proc.pid_of(_pidfile(plan, node, f"mon.{node.name}")) is not None:
            return node.netns
    return plan.coordinators[0].netns


def _env(plan: LabPlan) -> dict[str, str]:
    return {"CEPH_CONF": str(plan.ceph_conf)}


def ceph(plan: LabPlan, *args: str, json_out: bool = True, netns: str | None = None,
         timeout: float = 60, connect_timeout: int = 10, input: str | None = None,
         check: bool = True) -> Any:
    """Run `ceph ARGS` inside a coordinator namespace; parsed JSON unless json_out=False."""
    cmd = ["ceph", "--conf", str(plan.ceph_conf), "--connect-timeout", str(connect_timeout), *args]
    if json_out:
        cmd += ["--format", "json"]
    result = proc.run(cmd, netns=netns or _cli_netns(plan), timeout=timeout, input=input,
                      env=_env(plan), check=check)
    if not json_out or result.returncode != 0:
        return result.stdout
    return json.loads(result.stdout) if result.stdout.strip() else None


def rbd(plan: LabPlan, *args: str, json_out: bool = False, netns: str | None = None,
        timeout: float = 300) -> Any:
    """Run `rbd ARGS` inside a coordinator namespace; parsed JSON if json_out."""
    cmd = ["rbd", "--conf", str(plan.ceph_conf), *args]
    if json_out:
        cmd += ["--format", "json"]
    result = proc.run(cmd, netns=netns or _cli_netns(plan), timeout=timeout, env=_env(plan))
    return json.loads(result.stdout) if json_out else result.stdout


def mon_command(plan: LabPlan, prefix: str, inbuf: bytes = b"", netns: str | None = None,
                timeout: int = 10, **args: Any) -> Any:
    """One mon command through librados from a thread inside a coordinator namespace.

    ~30 ms instead of ~0.4 s of CPU for a `ceph` CLI process: bootstrap polls the cluster
    many times on a 2-core machine. Returns the parsed JSON answer (None if empty).
    """
    import rados  # Debian's binding (DESIGN D13); only the lab's Ceph side needs it

    def call() -> Any:
        limits = {"client_mount_timeout": str(timeout), "rados_mon_op_timeout": str(timeout)}
        client = rados.Rados(conffile=str(plan.ceph_conf), conf=limits)
        client.connect(timeout=timeout)
        try:
            ret, out, err = client.mon_command(json.dumps({"prefix": prefix, "format": "json", **args}),
                                               inbuf, timeout=timeout)
        finally:
            client.shutdown()
        if ret != 0:
            raise proc.LabError(f"ceph {prefix} failed ({ret}): {err}")
        return json.loads(out) if out.strip() else None

    try:
        return proc.netns_call(netns or _cli_netns(plan), call, timeout=3 * timeout + 5)
    except rados.Error as exc:
        raise proc.LabError(f"ceph {prefix}: {exc}") from exc


def _parallel(calls: list[Any]) -> list[Any]:
    """Run zero-argument callables at once; re-raise the first failure."""
    if not calls:
        return []
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


# ----------------------------------------------------------------------------------- ceph.conf

def _conf(plan: LabPlan, fsid: str, osd_list: list[Osd]) -> str:
    cdir, run, log = plan.ceph_dir, _run_dir(plan), _log_dir(plan)
    size = 3 if len(plan.nodes) >= 3 else len(plan.nodes)
    min_size = 2 if size >= 3 else 1
    mgr = _mgr_node(plan)
    lines = [
        "[global]",
        f"fsid = {fsid}",
        f"mon host = {','.join(mon_addrs(plan))}",
        f"mon initial members = {', '.join(n.name for n in plan.coordinators)}",
        # every namespace has exactly one address in the underlay: daemons bind to it
        f"public network = {SUBNET}.0/24",
        "ms bind ipv6 = false",
        "auth cluster required = cephx",
        "auth service required = cephx",
        "auth client required = cephx",
        # no AUTH_INSECURE_GLOBAL_ID_RECLAIM_ALLOWED warning
        "auth allow insecure global id reclaim = false",
        f"run dir = {run}",
        f"crash dir = {cdir / 'crash'}",
        # lab-sized pools: one replica per node up to 3, few PGs, no autoscaler surprises
        f"osd pool default size = {size}",
        f"osd pool default min size = {min_size}",
        "osd pool default pg num = 8",
        "osd pool default pgp num = 8",
        "osd pool default pg autoscale mode = off",
        "mon allow pool delete = true",
        "mon allow pool size one = true",
        "mon warn on pool no redundancy = false",
        # one OSD per host: a single surviving host may report a peer down, at once
        "mon osd reporter subtree level = host",
        "mon osd min down reporters = 1",
        # the shared disk is fuller than 30%: don't warn about mon free space percentage
        "mon data avail warn = 2",
        "mon data avail crit = 1",
        # not restful/nfs (pacific's defaults): fewer modules, less memory
        "mgr initial modules = iostat prometheus",
        # the mgr's PG view (health, pg states) refreshes every 1 s instead of 5 s, so waits
        # for active+clean end when the cluster is clean, not up to 10 s later
        "mgr stats period = 1",
        "mon mgr digest period = 1",
        "",
        "[mon]",
        # batch Paxos proposals for 50 ms instead of 1 s: pool/snapshot ops ~1 s -> ~50 ms
        "paxos propose interval = 0.05",
        "paxos min wait = 0.01",
        # the underlay answers in microseconds: a 5 s election timeout only delays the first
        # quorum (two 5 s rounds when the mons start a little apart)
        "mon election timeout = 1",
        # a dead mon stalls every osdmap change (the HA blocklist, OSDs down, RBD lock breaks) until
        # the others notice: mon_lease_ack_timeout_factor (2) x mon lease, 10 s by default; 2 s
        # leases make it 4 s, inside the failover budget (docs/architecture.md, "Failover timing")
        "mon lease = 2",
        f"admin socket = {run}/$name.asok",
        f"log file = {log}/$name.log",
        "",
        "[mgr]",
        f"mgr module path = {cdir / 'mgr-modules'}",
        f"admin socket = {run}/$name.asok",
        f"log file = {log}/$name.log",
        "",
        "[osd]",
        "osd objectstore = bluestore",
        f"admin socket = {run}/$name.asok",
        f"log file = {log}/$name.log",
        # bluestore on a sparse file in the OSD dir: no loop device, keeps data across restarts
        "bluestore block create = true",
        f"bluestore block size = {OSD_BLOCK_BYTES}",
        "bluestore fsck on mount = false",
        # memory: the target has a 896 MiB floor; the real cap is a fixed 64 MiB cache
        "osd memory target = 939524096",
        "bluestore cache autotune = false",
        "bluestore cache size = 67108864",
        "osd op num shards = 2",
        "osd op num threads per shard = 1",
        # lab: recover at full speed (defaults sleep 0.1 s per op on "hdd", 1 PG at a time:
        # ~98 s instead of ~12 s back to HEALTH_OK after an OSD restart)
        "osd recovery sleep hdd = 0",
        "osd recovery sleep ssd = 0",
        "osd recovery sleep hybrid = 0",
        "osd max backfills = 16",
        "osd recovery max active = 16",
        "",
        "[client]",
        f"keyring = {admin_keyring(plan)}",
        "",
    ]
    for node in plan.coordinators:
        data = _data_dir(node, f"mon.{node.name}")
        lines += [f"[mon.{node.name}]", f"mon data = {data}", f"keyring = {data}/keyring",
                  f"public addr = {node.address}", ""]
    data = _data_dir(mgr, f"mgr.{mgr.name}")
    lines += [f"[mgr.{mgr.name}]", f"mgr data = {data}", f"keyring = {data}/keyring",
              f"public addr = {mgr.address}", ""]
    for osd in osd_list:
        node = plan.node(osd.node)
        data = _data_dir(node, f"osd.{osd.id}")
        # all namespaces share one UTS hostname: place each OSD under its node's host bucket
        lines += [f"[osd.{osd.id}]", f"osd data = {data}", f"keyring = {data}/keyring",
                  f"public addr = {node.address}", f"cluster addr = {node.address}",
                  f"crush location = root=default host={node.name}", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ keyrings

def _authtool(*args: str) -> str:
    return proc.run(["ceph-authtool", *args]).stdout.strip()


def _new_key() -> str:
    return _authtool("--gen-print-key")


def _keyring(path: Path, entity: str, key: str, caps: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"[{entity}]", f"\tkey = {key}"]
    lines += [f'\tcaps {kind} = "{cap}"' for kind, cap in caps.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def _read_key(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.strip().startswith("key ="):
            return line.split("=", 1)[1].strip()
    raise proc.LabError(f"no key in {path}")


# ------------------------------------------------------------------------------------- daemons

def _spawn(plan: LabPlan, node: NodePlan, daemon: str) -> int:
    kind, ident = daemon.split(".", 1)
    pidfile = _pidfile(plan, node, daemon)
    running = proc.pid_of(pidfile)
    if running is not None:
        return running
    return proc.spawn([f"ceph-{kind}", "-f", "-i", ident, "--conf", str(plan.ceph_conf)],
                      log=_log_dir(plan) / f"{daemon}.out", pidfile=pidfile, netns=node.netns,
                      env=_env(plan))


def _stop_many(pidfiles: list[Path], kill: bool = False, timeout: float = 20) -> None:
    _parallel([lambda p=p: proc.stop(p, timeout=timeout, kill=kill) for p in pidfiles])


def _spawn_pvc_osd(plan: LabPlan, node: NodePlan, osd: Osd, info: dict[str, Any]) -> int:
    """Start an OSD PVC added, exactly as PVC runs it (its launch file's argv, log, pid file name)."""
    pidfile = _pidfile(plan, node, f"osd.{osd.id}")
    running = proc.pid_of(pidfile)
    if running is not None:
        return running
    log = Path(info.get("log") or _log_dir(plan) / f"osd.{osd.id}.out")
    return proc.spawn([str(a) for a in info["argv"]], log=log, pidfile=pidfile, netns=node.netns,
                      env=_env(plan))


def start_osd(plan: LabPlan, node: NodePlan) -> list[int]:
    """Start the node's OSDs, the lab's and PVC-added ones (bluestore keeps their data: they
    rejoin and catch up)."""
    pids = [_spawn(plan, node, f"osd.{o.id}") for o in _node_osds(plan, node)]
    return pids + [_spawn_pvc_osd(plan, node, o, info) for o, info in pvc_added_osds(plan, node)]


def stop_osd(plan: LabPlan, node: NodePlan, kill: bool = False) -> None:
    """Stop the node's OSDs (PVC-added ones too); SIGTERM makes an OSD mark itself down at once."""
    _stop_many(list(plan.pid_dir.glob(f"{node.name}-ceph-osd.*.pid")), kill=kill)


def start_node_daemons(plan: LabPlan, node: NodePlan) -> None:
    """Everything Ceph runs on one node: its mon (coordinators), the mgr (first one), its OSDs."""
    if node.coordinator:
        _spawn(plan, node, f"mon.{node.name}")
    if node.name == _mgr_node(plan).name:
        _spawn(plan, node, f"mgr.{node.name}")
    start_osd(plan, node)


def stop_node_daemons(plan: LabPlan, node: NodePlan, kill: bool = False) -> None:
    """Stop one node's Ceph daemons, OSDs and mgr before the mon (see stop_all)."""
    _stop_many([*plan.pid_dir.glob(f"{node.name}-ceph-osd.*.pid"),
                plan.pid_dir / f"{node.name}-ceph-mgr.pid"], kill=kill)
    _stop_many([plan.pid_dir / f"{node.name}-ceph-mon.pid"], kill=kill)


def start_all(plan: LabPlan) -> None:
    """(Re)start every daemon of a bootstrapped cluster; already running ones are left alone."""
    for node in plan.coordinators:
        _spawn(plan, node, f"mon.{node.name}")
    _spawn(plan, _mgr_node(plan), f"mgr.{_mgr_node(plan).name}")
    for node in plan.nodes:
        start_osd(plan, node)


def stop_all(plan: LabPlan, kill: bool = False) -> None:
    """Stop OSDs and mgr first (a stopping OSD tells the mons), then the mons."""
    pids = plan.pid_dir
    _stop_many([*pids.glob("*-ceph-osd.*.pid"), *pids.glob("*-ceph-mgr.pid")], kill=kill)
    _stop_many(list(pids.glob("*-ceph-mon.pid")), kill=kill)


# ----------------------------------------------------------------------------------- bootstrap

def bootstrap(plan: LabPlan, timeout: float = 240, osds_per_node: int = OSDS_PER_NODE) -> dict[str, Any]:
    """Create and start the cluster, wait for HEALTH_OK, create the `vms` RBD pool.

    Returns {"seconds": {step: elapsed}, **client_info}. On failure everything it started is stopped.
    """
    if _info_file(plan).exists():
        raise proc.LabError(f"a Ceph cluster already exists in {plan.ceph_dir}; use start_all()")
    if not plan.coordinators:
        raise proc.LabError("a lab needs at least one coordinator for the Ceph mons")
    longest = f"{_run_dir(plan)}/osd.{len(plan.nodes) * osds_per_node}.asok"
    if len(longest) > SUN_PATH_MAX:
        raise proc.LabError(f"lab state dir too deep for Ceph admin sockets ({longest})")
    t0 = time.monotonic()
    deadline = t0 + timeout
    marks: dict[str, float] = {}

    def mark(step: str) -> None:
        marks[step] = round(time.monotonic() - t0, 2)

    fsid = str(uuid.uuid4())
    osd_list = [Osd(id=(node.index - 1) * osds_per_node + j, node=node.name, uuid=str(uuid.uuid4()))
                for node in plan.nodes for j in range(osds_per_node)]
    for directory in (plan.ceph_dir, _run_dir(plan), _log_dir(plan), plan.ceph_dir / "crash",
                      plan.pid_dir):
        directory.mkdir(parents=True, exist_ok=True)
    modules = plan.ceph_dir / "mgr-modules"
    modules.mkdir(exist_ok=True)
    for name in MGR_MODULES:
        link = modules / name
        if not link.is_symlink():
            link.symlink_to(MGR_MODULES_SRC / name)
    plan.ceph_conf.write_text(_conf(plan, fsid, osd_list))

    # Keys, all made offline: the mon's initial keyring carries client.admin and the mgr key
    # with their caps, so nothing has to be registered over the network before they run.
    mon_keyring = plan.ceph_dir / "mon.keyring"
    _keyring(mon_keyring, "mon.", _new_key(), {"mon": "allow *"})
    _keyring(admin_keyring(plan), "client.admin", _new_key(),
             {"mds": "allow *", "mgr": "allow *", "mon": "allow *", "osd": "allow *"})
    mgr = _mgr_node(plan)
    mgr_keyring = _data_dir(mgr, f"mgr.{mgr.name}") / "keyring"
    _keyring(mgr_keyring, f"mgr.{mgr.name}", _new_key(),
             {"mds": "allow *", "mon": "allow profile mgr", "osd": "allow *"})
    for extra in (admin_keyring(plan), mgr_keyring):
        _authtool(str(mon_keyring), "--import-keyring", str(extra))
    osd_keys = {o.id: _new_key() for o in osd_list}
    for osd in osd_list:
        # ceph-osd --mkfs --key keeps the key in the store only; the daemon reads this file
        _keyring(_data_dir(plan.node(osd.node), f"osd.{osd.id}") / "keyring", f"osd.{osd.id}",
                 osd_keys[osd.id], {})
    monmap = plan.ceph_dir / "monmap"
    addv: list[str] = []
    for node in plan.coordinators:
        addv += ["--addv", node.name, f"[v2:{node.address}:{CEPH_MON_V2},v1:{node.address}:{CEPH_MON_V1}]"]
    proc.run(["monmaptool", "--create", "--clobber", "--fsid", fsid, *addv, str(monmap)])
    _info_file(plan).write_text(json.dumps({"fsid": fsid, "osds": [o.__dict__ for o in osd_list]},
                                           indent=1))
    mark("keys+monmap")

    conf = str(plan.ceph_conf)
    mkfs: dict[int, subprocess.Popen[bytes]] = {}
    try:
        # bluestore mkfs (~2.5 s each) needs no mon: start it now, alongside the mons.
        for osd in osd_list:
            mkfs[osd.id] = _osd_mkfs(plan, osd, osd_keys[osd.id])
        _parallel([lambda n=n: proc.run(
            ["ceph-mon", "--mkfs", "-i", n.name, "--monmap", str(monmap), "--keyring",
             str(mon_keyring), "--conf", conf], netns=n.netns, env=_env(plan))
            for n in plan.coordinators])
        for node in plan.coordinators:
            _spawn(plan, node, f"mon.{node.name}")
        _wait(plan, deadline, "mon quorum", lambda: _quorum_complete(plan))
        mark("mon quorum")

        # no SMART scraping and no device_health_metrics pool (--force: the mgr has not yet
        # registered its options); set before the mgr starts, which is the slowest (~5 s).
        mon_command(plan, "config set", who="mgr", name="mgr/devicehealth/enable_monitoring",
                    value="false", force=True)
        _spawn(plan, mgr, f"mgr.{mgr.name}")
        # OSDs registered with their fixed ids, uuids and cephx keys
        for osd in osd_list:
            mon_command(plan, "osd new", uuid=osd.uuid, id=osd.id,
                        inbuf=json.dumps({"cephx_secret": osd_keys[osd.id]}).encode())
        mark("mgr started, osds registered")
        for osd_id, job in mkfs.items():
            if job.wait(max(1.0, deadline - time.monotonic())) != 0:
                raise proc.LabError(f"ceph-osd --mkfs for osd.{osd_id} failed; see "
                                    f"{_log_dir(plan)}/osd.{osd_id}.mkfs")
        mark("osd mkfs")
        for node in plan.nodes:
            start_osd(plan, node)
        _wait(plan, deadline, "all OSDs up+in and the mgr available",
              lambda: _all_up(ceph_status(plan), len(osd_list)))
        mark("osds up, mgr available")
        # the pool's PGs peer while the rest settles: one wait for both
        mon_command(plan, "osd pool create", pool=POOL, pg_num=POOL_PGS, pgp_num=POOL_PGS,
                    pool_type="replicated")
        rbd(plan, "pool", "init", POOL)
        mark(f"pool {POOL} created")
        _wait(plan, deadline, f"HEALTH_OK and pool {POOL} active+clean",
              lambda: _healthy(ceph_status(plan), len(osd_list), pgs=POOL_PGS))
        mark("HEALTH_OK")
    except BaseException:
        # Leave nothing half-made except the logs: a second bootstrap starts from scratch.
        stop_all(plan, kill=True)
        for job in mkfs.values():
            if job.poll() is None:
                job.kill()
            job.wait()
        for node in plan.nodes:
            shutil.rmtree(node.dir / "ceph", ignore_errors=True)
        _info_file(plan).unlink(missing_ok=True)
        raise
    info = client_info(plan)
    plan.extra["ceph"] = {k: v for k, v in info.items() if k != "key"}
    return {"seconds": marks, **info}


def _osd_mkfs(plan: LabPlan, osd: Osd, key: str) -> subprocess.Popen[bytes]:
    node = plan.node(osd.node)
    data = _data_dir(node, f"osd.{osd.id}")
    data.mkdir(parents=True, exist_ok=True)
    log = open(_log_dir(plan) / f"osd.{osd.id}.mkfs", "ab")  # noqa: SIM115 - owned by the child
    try:
        return subprocess.Popen(
            proc.in_netns(node.netns, ["ceph-osd", "--conf", str(plan.ceph_conf), "-i", str(osd.id),
                                       "--mkfs", "--key", key, "--osd-uuid", osd.uuid,
                                       "--no-mon-config"]),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **_env(plan)})
    finally:
        log.close()


def _wait(plan: LabPlan, deadline: float, what: str, check: Any, settle: float = 0) -> Any:
    """Poll check() until it returns True (anything else is "not yet", kept for the error);
    with `settle`, it must stay True that long (to outlast a stale view)."""
    last: Any = None
    since: float | None = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (proc.LabError, subprocess.TimeoutExpired, ValueError, OSError) as exc:
            last = exc
        if last is True:
            since = since if since is not None else time.monotonic()
            if time.monotonic() - since >= settle:
                return last
        else:
            since = None
        _check_daemons(plan)
        time.sleep(0.3)
    raise proc.LabError(f"Ceph: timed out waiting for {what}; last: {last}; logs in {_log_dir(plan)}")


def _check_daemons(plan: LabPlan) -> None:
    """Fail fast when a daemon we started has died instead of waiting for the deadline."""
    for pidfile in plan.pid_dir.glob("*-ceph-*.pid"):
        if proc.pid_of(pidfile) is None:
            raise proc.LabError(f"Ceph daemon of {pidfile.name} exited; logs in {_log_dir(plan)}")


def _quorum_complete(plan: LabPlan) -> bool:
    status = mon_command(plan, "quorum_status", timeout=3)
    return sorted(status.get("quorum_names", [])) == sorted(n.name for n in plan.coordinators)


def ceph_status(plan: LabPlan, timeout: int = 10) -> dict[str, Any]:
    """`ceph status` as a dict."""
    return mon_command(plan, "status", timeout=timeout)


def _all_up(status: dict[str, Any], n_osds: int) -> bool | str:
    osdmap = status.get("osdmap", {})
    if not (osdmap.get("num_osds") == osdmap.get("num_up_osds") == osdmap.get("num_in_osds") == n_osds):
        return f"osds up/in: {osdmap.get('num_up_osds')}/{osdmap.get('num_in_osds')} of {n_osds}"
    return True if status.get("mgrmap", {}).get("available") else "mgr not available"


def _healthy(status: dict[str, Any], n_osds: int, pgs: int | None = None) -> bool | str:
    """HEALTH_OK, every OSD up+in, and every PG active+clean (the mgr's view lags a little)."""
    up = _all_up(status, n_osds)
    if up is not True:
        return up
    health = status.get("health", {})
    if health.get("status") != "HEALTH_OK":
        return f"{health.get('status')}: {sorted(health.get('checks', {}))}"
    pgmap = status.get("pgmap", {})
    clean = sum(s["count"] for s in pgmap.get("pgs_by_state", []) if s["state_name"] == "active+clean")
    total = pgmap.get("num_pgs", 0)
    if clean != total or (pgs is not None and total < pgs):
        return f"pgs active+clean {clean}/{total}"
    return True


def wait_healthy(plan: LabPlan, timeout: float = 120, settle: float = STATS_LAG) -> float:
    """Wait for HEALTH_OK with every OSD up+in and every PG active+clean; returns seconds waited.

    PG states come from the mgr, refreshed every STATS_LAG at worst: right after an OSD comes
    back, its view may still predate the outage, so the answer must hold for `settle` seconds.
    """
    t0 = time.monotonic()
    n_osds = len(all_osds(plan))
    _wait(plan, t0 + timeout, "HEALTH_OK", lambda: _healthy(ceph_status(plan), n_osds), settle=settle)
    return time.monotonic() - t0


def status(plan: LabPlan) -> dict[str, Any]:
    """Health, checks and per-daemon state: {"health", "checks", "mons", "mgr", "osds", "pgs"}."""
    daemons: dict[str, Any] = {
        "mons": {n.name: {"running": proc.pid_of(_pidfile(plan, n, f"mon.{n.name}")) is not None,
                          "in_quorum": False} for n in plan.coordinators},
        "mgr": {},
        "osds": {},
    }
    mgr = _mgr_node(plan)
    daemons["mgr"][mgr.name] = {"running": proc.pid_of(_pidfile(plan, mgr, f"mgr.{mgr.name}")) is not None,
                                "available": False}
    try:
        known = all_osds(plan)
    except proc.LabError:
        known = []
    for osd in known:
        pidfile = _pidfile(plan, plan.node(osd.node), f"osd.{osd.id}")
        daemons["osds"][str(osd.id)] = {"node": osd.node, "running": proc.pid_of(pidfile) is not None,
                                        "up": False, "in": False}
    if not any(d["running"] for d in daemons["mons"].values()):
        return {"health": "DOWN", "checks": [], **daemons, "pgs": {}}
    try:
        st = ceph_status(plan, timeout=5)
        dump = mon_command(plan, "osd dump", timeout=5)
    except (proc.LabError, ValueError, OSError) as exc:
        return {"health": "UNREACHABLE", "checks": [str(exc)[-300:]], **daemons, "pgs": {}}
    for name in st.get("quorum_names", []):
        if name in daemons["mons"]:
            daemons["mons"][name]["in_quorum"] = True
    active = st.get("mgrmap", {})
    if mgr.name in daemons["mgr"]:
        daemons["mgr"][mgr.name]["available"] = bool(active.get("available"))
    for entry in dump.get("osds", []):
        osd = daemons["osds"].setdefault(str(entry["osd"]), {"node": None, "running": False})
        osd["up"], osd["in"] = bool(entry["up"]), bool(entry["in"])
    health = st.get("health", {})
    pgs = {s["state_name"]: s["count"] for s in st.get("pgmap", {}).get("pgs_by_state", [])}
    return {"health": health.get("status", "UNKNOWN"),
            "checks": sorted(health.get("checks", {})), **daemons, "pgs": pgs}


# ------------------------------------------------------------------------------------- clients

def client_info(plan: LabPlan) -> dict[str, Any]:
    """What libvirt/QEMU and other clients need: fsid, mon addresses, the client.admin key."""
    info = json.loads(_info_file(plan).read_text())
    return {
        "fsid": info["fsid"],
        "mon_hosts": [{"name": n.name, "address": n.address, "v2": CEPH_MON_V2, "v1": CEPH_MON_V1}
                      for n in plan.coordinators],
        "mon_host": ",".join(mon_addrs(plan)),
        "client": "admin",
        "key": _read_key(admin_keyring(plan)),
        "conf": str(plan.ceph_conf),
        "keyring": str(admin_keyring(plan)),
        "pool": POOL,
    }


def import_image(plan: LabPlan, path: Path | str, pool: str = POOL,
                 name: str | None = None) -> dict[str, Any]:
    """`rbd import` a raw file (e.g. the lab's guest disk) as a new volume; returns `rbd info`."""
    source = Path(path)
    if not source.is_file():
        raise proc.LabError(f"no such image file: {source}")
    image = f"{pool}/{name or source.stem}"
    rbd(plan, "import", "--no-progress", str(source), image)
    return rbd(plan, "info", image, json_out=True)


def daemon_pids(plan: LabPlan) -> dict[str, int]:
    """name -> pid of every running Ceph daemon of the lab (for status and RSS reports)."""
    found = {}
    for pidfile in sorted(plan.pid_dir.glob("*-ceph-*.pid")):
        pid = proc.pid_of(pidfile)
        if pid is not None:
            found[pidfile.name.removesuffix(".pid")] = pid
    return found


def tools_missing() -> list[str]:
    return [t for t in ("ceph", "rbd", "ceph-mon", "ceph-mgr", "ceph-osd", "ceph-authtool", "monmaptool")
            if shutil.which(t) is None]

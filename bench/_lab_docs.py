"""What the lab benches create on a running lab, named so it never meets anything already there.

The lab that `./scripts/lab` brings up already holds the demo's documents (script `clone`, templates
and profile `demo`, network 100, VM demo1), and a bench stopped half-way may have left its own.
So every run names what it makes after a fresh tag (`bench_tag()`), takes a network VNI and subnet
that nothing uses (`pick_network()`), and registers how to undo each thing the moment it exists
(`Cleanup`), which undoes all of it, newest first, however the run ends.

Pure logic here is unit-tested (tests/unit/test_cli_compat.py); the API calls run on the lab only.
"""

from __future__ import annotations

import ipaddress
import secrets
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "src" / "pvc" / "worker" / "provisioner" / "examples"
BENCH_SUBNETS = ipaddress.ip_network("10.212.0.0/16")  # the lab's own: 10.200-10.201, tests 10.210
BENCH_VNIS = range(3100, 3999)
BASE_POOL = "vms"
BASE_IMAGE = "pvc-lab-guest"


def bench_tag(prefix: str = "b") -> str:
    """A short, fresh name stem for one run: a letter then 6 hex digits (a valid PVC name start,
    and no digit at the end of a stem, so a VM's number stays the numeric suffix of its name)."""
    return f"{prefix}{secrets.token_hex(3)}x"


def vm_names(tag: str, count: int) -> list[str]:
    return [f"{tag}{index}" for index in range(count)]


def pick_network(networks: Iterable[dict[str, Any]], vnis: Sequence[int] = BENCH_VNIS,
                 pool: ipaddress.IPv4Network = BENCH_SUBNETS) -> tuple[int, ipaddress.IPv4Network]:
    """A VNI and a /24 no existing network (GET /network items) uses or overlaps."""
    used_vnis = {int(n["vni"]) for n in networks if str(n.get("vni", "")).isdigit()}
    taken = []
    for network in networks:
        for key in ("ip4_network", "ip6_network"):
            value = network.get(key)
            if value:
                try:
                    taken.append(ipaddress.ip_network(str(value), strict=False))
                except ValueError:
                    continue
    vni = next((v for v in vnis if v not in used_vnis), None)
    subnet = next((s for s in pool.subnets(new_prefix=24)
                   if not any(s.version == t.version and s.overlaps(t) for t in taken)), None)
    if vni is None or subnet is None:
        raise SystemExit(f"no free bench VNI in {vnis} or /24 in {pool} on this lab")
    return vni, subnet


class Cleanup:
    """Undo steps registered as things are made; on exit they all run, newest first.

    A failing step is reported and the rest still run; the bench's own error (if any) is the one
    that propagates.
    """

    def __init__(self, report: Callable[[str], None] | None = None) -> None:
        self.steps: list[tuple[str, Callable[[], Any]]] = []
        self.failed: list[str] = []
        self.report = report or (lambda line: print(line, file=sys.stderr))

    def add(self, label: str, step: Callable[[], Any]) -> None:
        self.steps.append((label, step))

    def run(self) -> None:
        while self.steps:
            label, step = self.steps.pop()
            try:
                step()
            except Exception as exc:  # one failed undo must not leave the others undone
                self.failed.append(label)
                self.report(f"clean-up: {label} failed: {type(exc).__name__}: {exc}")

    def __enter__(self) -> Cleanup:
        return self

    def __exit__(self, _type: type[BaseException] | None, _exc: BaseException | None,
                 _tb: TracebackType | None) -> None:
        self.run()


def networks(api: httpx.Client) -> list[dict[str, Any]]:
    """The cluster's networks (PVC answers an empty list with 404)."""
    response = api.get("/network")
    if response.status_code == 404:
        return []
    response.raise_for_status()
    return [n for n in response.json() if isinstance(n, dict)]


def delete(api: httpx.Client, path: str, **params: Any) -> None:
    """DELETE that must leave the thing gone: 404 (already gone) is fine, any other refusal is not."""
    from tests.system.helpers import call

    if api.get(path).status_code == 404:
        return
    call(api, "DELETE", path, params=params or None)


def remove_vm(api: httpx.Client, name: str) -> None:
    """Stop the VM if it exists, wait for the stop, then remove it with its disks."""
    from tests.system.helpers import call, vm_exists, wait

    if not vm_exists(api, name):
        return
    api.post(f"/vm/{name}/state", params={"state": "stop"})
    wait(f"{name} stopped", lambda: call(api, "GET", f"/vm/{name}")[0]["state"] in ("stop", "fail"), 60)
    call(api, "DELETE", f"/vm/{name}", params={"delete_disks": "true"})


def cancel_job(api: httpx.Client, task_id: str) -> None:
    """Cancel a provisioning job that has not finished (a run stopped half-way leaves none running)."""
    status = api.get(f"/tasks/{task_id}")
    if status.status_code == 200 and status.json().get("state") in ("PENDING", "RUNNING"):
        api.delete(f"/provisioner/status/{task_id}")


class ProvisionDocs:
    """A managed network, system/network/storage templates (a clone of the lab's guest disk),
    userdata, the shipped clone script and a profile, all named after `tag`."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.system = self.network_template = self.storage = f"{tag}t"
        self.userdata = f"{tag}ud"
        self.script = f"{tag}clone"
        self.profile = f"{tag}p"
        self.vni: int | None = None

    def paths(self) -> list[str]:
        """Everything set_up makes, in the order it is made (clean-up is the reverse)."""
        return [f"/network/{self.vni}", f"/provisioner/template/system/{self.system}",
                f"/provisioner/template/network/{self.network_template}",
                f"/provisioner/template/storage/{self.storage}", f"/provisioner/userdata/{self.userdata}",
                f"/provisioner/script/{self.script}", f"/provisioner/profile/{self.profile}"]

    def set_up(self, plan: Any, api: httpx.Client, cleanup: Cleanup) -> str:
        """Make everything (each undo registered as soon as it exists); the profile's name."""
        from tests.system.helpers import call

        files = plan.extra["guest_files"]
        self.vni, subnet = pick_network(networks(api))
        hosts = list(subnet.hosts())
        steps: list[tuple[str, dict[str, Any], str]] = [
            ("/network", {"vni": self.vni, "description": f"{self.tag}net", "nettype": "managed",
                          "domain": f"{self.tag}.bench", "ip4_network": str(subnet),
                          "ip4_gateway": str(hosts[0]), "dhcp4": True, "dhcp4_start": str(hosts[99]),
                          "dhcp4_end": str(hosts[198])},
             f"/network/{self.vni}"),
            ("/provisioner/template/system", {"name": self.system, "vcpus": 1, "vram": 128, "serial": True,
                                              "vnc": False}, f"/provisioner/template/system/{self.system}"),
            ("/provisioner/template/network", {"name": self.network_template},
             f"/provisioner/template/network/{self.network_template}"),
            (f"/provisioner/template/network/{self.network_template}/net", {"vni": self.vni}, ""),
            ("/provisioner/template/storage", {"name": self.storage},
             f"/provisioner/template/storage/{self.storage}"),
            (f"/provisioner/template/storage/{self.storage}/disk",
             {"disk_id": "vda", "pool": BASE_POOL, "source_volume": BASE_IMAGE}, ""),
            ("/provisioner/userdata", {"name": self.userdata}, f"/provisioner/userdata/{self.userdata}"),
            ("/provisioner/script", {"name": self.script}, f"/provisioner/script/{self.script}"),
            ("/provisioner/profile", {"name": self.profile, "profile_type": "provisioner",
                                      "system_template": self.system,
                                      "network_template": self.network_template,
                                      "storage_template": self.storage, "userdata": self.userdata,
                                      "script": self.script,
                                      "arg": [f"kernel={files['kernel']}", f"initrd={files['initrd']}"]},
             f"/provisioner/profile/{self.profile}"),
        ]
        documents = {"/provisioner/userdata": "#!/bin/sh\necho PVC-BENCH $(hostname)\n",
                     "/provisioner/script": (EXAMPLES / "2-clone.py").read_text()}
        for path, params, undo in steps:
            # documents go as the form field `data` (a script is too long for a query string)
            form = {"data": documents[path]} if path in documents else None
            call(api, "POST", path, params=params, data=form)
            if undo:
                cleanup.add(f"DELETE {undo}", lambda undo=undo: delete(api, undo))
        return self.profile

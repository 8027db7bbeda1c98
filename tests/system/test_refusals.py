"""Pool refusals against the lab's real Ceph (issue #17, item 5).

Measured before: `pvc storage pool add p1 7 --replcfg copies=9,mincopies=1` was accepted with three
OSD hosts, and Ceph went to HEALTH_WARN (degraded PGs that could never heal, a PG count that is
not a power of two). Now the API and the CLI refuse it with the reason and the limit, and Ceph is
left as it was.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from pvc.lab import ceph
from pvc.lab.plan import LabPlan

pytestmark = pytest.mark.system


def cli(lab: LabPlan, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pvc.cli", "-c", f"lab-{lab.name}", "-q", *args],
                          capture_output=True, text=True, timeout=120)


def osd_hosts(lab: LabPlan) -> list[str]:
    """The CRUSH hosts holding an OSD that is in, as Ceph itself reports them."""
    nodes = ceph.ceph(lab, "osd", "tree")["nodes"]
    by_id = {n["id"]: n for n in nodes}
    return sorted(n["name"] for n in nodes if n["type"] == "host"
                  and any(by_id[c].get("reweight", 0) > 0 for c in n.get("children", []) if c in by_id))


def pools(lab: LabPlan) -> list[str]:
    return sorted(ceph.ceph(lab, "osd", "pool", "ls"))


def test_pool_refusals_on_real_ceph(lab: LabPlan, api: httpx.Client) -> None:
    hosts = osd_hosts(lab)
    assert len(hosts) >= 1
    before = pools(lab)
    try:
        copies = len(hosts) + 6
        answer = api.post("/storage/ceph/pool", params={"pool": "p1", "pgs": 8,
                                                        "replcfg": f"copies={copies},mincopies=1"})
        assert answer.status_code == 400, answer.text
        message = answer.json()["message"]
        for word in (f"replcfg: copies={copies} needs {copies} separate hosts",
                     f"only {len(hosts)} host", f"({', '.join(hosts)})", f"at most copies={len(hosts)}"):
            assert word in message, message
        # the CLI exactly as the user typed it: PGs 7 are refused first (the request's own error)
        typed = cli(lab, "storage", "pool", "add", "p1", "7", "--replcfg", "copies=9,mincopies=1")
        assert typed.returncode != 0 and "pgs: 7 is not a power of two" in typed.stderr + typed.stdout
        with_pgs = cli(lab, "storage", "pool", "add", "p1", "8", "--replcfg", f"copies={copies},mincopies=1")
        assert with_pgs.returncode != 0
        assert " ".join(message.split()) in " ".join((with_pgs.stderr + with_pgs.stdout).split())
        mincopies = api.post("/storage/ceph/pool", params={"pool": "p1", "pgs": 8,
                                                           "replcfg": "copies=1,mincopies=2"})
        assert mincopies.status_code == 400 and "mincopies=2" in mincopies.json()["message"]
        assert pools(lab) == before                                   # Ceph left as it was
        assert api.get("/storage/ceph/pool/p1").status_code == 404

        # what the hosts can hold is accepted, and its PG count cannot be set to a non-power of two
        fits = cli(lab, "storage", "pool", "add", "p1", "8", "--replcfg",
                   f"copies={len(hosts)},mincopies=1")
        assert fits.returncode == 0, fits.stderr
        assert "p1" in pools(lab)
        odd = api.put("/storage/ceph/pool/p1", params={"pgs": 12})
        assert odd.status_code == 400 and "pgs: 12 is not a power of two" in odd.json()["message"]
        assert ceph.ceph(lab, "osd", "pool", "get", "p1", "pg_num")["pg_num"] == 8
    finally:
        if api.get("/storage/ceph/pool/p1").status_code == 200:
            api.delete("/storage/ceph/pool/p1", params={"yes-i-really-mean-it": "yes"})

"""The chaos faults' pure rules: which targets are valid (quorum, min_size, one node out at a time),
what counts as unhealthy, the chaos plan flag, and the systemd-like kill of a daemon's unit."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pvc.lab import proc
from pvc.lab.chaos import faults, space
from pvc.lab.chaos.faults import LabView, NodeView, OsdView
from pvc.lab.plan import CHAOS_ENV, make_plan

DAEMONS = {"pvcnoded": True, "pvcworkerd": True, "libvirtd": True}


def node(name: str, coordinator: bool = True, mode: str = "follower", **kw: object) -> NodeView:
    running = {**DAEMONS, **({"zookeeper": True, "mon": True} if coordinator else {})}
    base: dict = {"running": running, "pvcapid": False, "zk_mode": mode if coordinator else None,
                  "daemon_state": "run", "domain_state": "ready", "keepalive_age": 1.0}
    base.update(kw)
    return NodeView(name, coordinator, **base)


def healthy_view(nodes: int = 3, coordinators: int = 3) -> LabView:
    names = [f"hv{i}" for i in range(1, nodes + 1)]
    view = {n: node(n, i < coordinators, mode="leader" if i == 0 else "follower")
            for i, n in enumerate(names)}
    if coordinators == 1:
        view["hv1"].zk_mode = "standalone"
    view["hv1"].pvcapid = True
    view["hv1"].state_mount = True
    osds = [OsdView(i, n, True, True) for i, n in enumerate(names)]
    return LabView(view, primary="hv1", osds=osds, min_size=2,
                   mons_in_quorum=[n for i, n in enumerate(names) if i < coordinators])


def test_majority_and_quorum_guard() -> None:
    assert [faults.majority(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    members = ["hv1", "hv2", "hv3"]
    assert faults.quorum_allows(members, members, {"hv2"})
    assert not faults.quorum_allows(members, ["hv1", "hv2"], {"hv2"})
    assert not faults.quorum_allows(["hv1"], ["hv1"], {"hv1"})
    # a serving name that is not a member does not count
    assert not faults.quorum_allows(members, ["hv1", "hvX"], set())


def test_every_kind_has_targets_in_a_healthy_lab() -> None:
    view = healthy_view()
    got = {kind: faults.choose_targets(kind, view) for kind in faults.KINDS}
    assert got["kill_pvcnoded"] == got["kill_pvcworkerd"] == got["links_cut"] == got["node_freeze"] == \
        ["hv1", "hv2", "hv3"]
    assert got["kill_pvcapid"] == ["hv1"]
    assert got["zk_member_restart"] == ["zk:hv2", "zk:hv3"]     # followers; the leader is its own kind
    assert got["zk_leader_restart"] == ["zk:hv1"]
    assert got["osd_kill"] == ["osd.0", "osd.1", "osd.2"]
    assert got["state_dir_full"] == ["hv1"]                     # the primary only


def test_unknown_kind_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown fault kind 'disk_melt'"):
        faults.choose_targets("disk_melt", healthy_view())


def test_one_node_out_at_a_time() -> None:
    view = healthy_view(nodes=4)
    view.nodes["hv4"].stopped = 12           # frozen
    for kind in ("links_cut", "node_freeze", "kill_pvcnoded"):
        assert faults.choose_targets(kind, view) == []
        assert "hv4 is already out (12 process(es) stopped): one node out at a time" in \
            faults.refusal(kind, view, "hv2")
        assert "hv4 is not in service" in faults.refusal(kind, view, "hv4")
        # the runner may ask for more, explicitly
        assert faults.choose_targets(kind, view, allow_quorum_loss=True) == ["hv1", "hv2", "hv3"]


def test_a_coordinator_is_never_taken_below_a_zookeeper_quorum() -> None:
    view = healthy_view(nodes=4)
    view.nodes["hv3"].zk_mode = "down"
    view.nodes["hv3"].running["zookeeper"] = False
    # hv3's member is down (the node itself is still in service): hv1 and hv2 hold the quorum
    assert faults.choose_targets("node_freeze", view) == ["hv3", "hv4"]
    reason = faults.refusal("links_cut", view, "hv2")
    assert reason == "taking hv2 would leave ZooKeeper without a quorum (1 of 3 serving, 2 needed)"
    assert faults.choose_targets("zk_member_restart", view) == []
    assert faults.choose_targets("zk_leader_restart", view) == []
    assert "without a quorum" in faults.refusal("zk_leader_restart", view, "zk:hv1")
    assert faults.choose_targets("zk_leader_restart", view, allow_quorum_loss=True) == ["zk:hv1"]


def test_mon_quorum_guards_coordinators_too() -> None:
    view = healthy_view()
    view.mons_in_quorum = ["hv1", "hv2"]
    assert faults.refusal("node_freeze", view, "hv1") == \
        "taking hv1 would leave the Ceph mons without a quorum (1 of 3 serving, 2 needed)"
    assert faults.choose_targets("node_freeze", view) == ["hv3"]


def test_a_single_coordinator_is_never_restarted_by_default() -> None:
    view = healthy_view(nodes=2, coordinators=1)
    assert faults.choose_targets("zk_member_restart", view) == []
    assert faults.choose_targets("zk_leader_restart", view) == []   # standalone is neither
    assert faults.refusal("zk_leader_restart", view, "zk:hv1") == \
        "zk:hv1 is not a leader (it is standalone)"


def test_osds_never_below_min_size() -> None:
    view = healthy_view()
    view.osds[0].up = False
    assert faults.choose_targets("osd_kill", view) == []
    assert faults.refusal("osd_kill", view, "osd.1") == \
        "taking osd.1 would leave 1 OSD(s) up, below the pools' min_size 2"
    assert faults.refusal("osd_kill", view, "osd.0") == "osd.0 is not up"
    assert faults.refusal("osd_kill", view, "osd.9") == "osd_kill: no OSD osd.9 in the lab"
    assert faults.refusal("osd_kill", view, "hv1") == "osd_kill targets an OSD named osd.<id>, not 'hv1'"
    view.min_size = 1
    assert faults.choose_targets("osd_kill", view) == ["osd.1", "osd.2"]


def test_taking_a_node_counts_its_osds() -> None:
    view = healthy_view()
    view.min_size = 3
    assert faults.refusal("links_cut", view, "hv3") == \
        "taking osd.2 would leave 2 OSD(s) up, below the pools' min_size 3"


def test_target_names_are_checked() -> None:
    view = healthy_view()
    assert faults.refusal("zk_member_restart", view, "hv2") == \
        "zk_member_restart targets a ZooKeeper member named zk:<node>, not 'hv2'"
    assert faults.refusal("kill_pvcnoded", view, "hv9") == "kill_pvcnoded: no node 'hv9' in the lab"
    assert faults.refusal("zk_member_restart", healthy_view(nodes=4), "zk:hv4") == \
        "hv4 runs no ZooKeeper member"


def test_daemon_and_state_dir_rules() -> None:
    view = healthy_view()
    view.nodes["hv2"].running["pvcworkerd"] = False
    assert faults.refusal("kill_pvcworkerd", view, "hv2") == "pvcworkerd is not running on hv2"
    assert faults.refusal("kill_pvcapid", view, "hv2") == "pvcapid is not running on hv2"
    assert faults.refusal("state_dir_full", view, "hv2") == "hv2 is not the primary (hv1 is)"
    view.nodes["hv1"].mount_problem = "state directory /x holds the chaos fill file"
    assert faults.choose_targets("state_dir_full", view) == []
    view.nodes["hv1"].state_mount = False
    assert "bring the lab up with PVC_LAB_CHAOS=1" in faults.refusal("state_dir_full", view, "hv1")
    view.nodes["hv3"].stopped = 3
    assert faults.refusal("kill_pvcworkerd", view, "hv3") == "hv3's processes are stopped"


def test_problems_of_a_healthy_view_are_none() -> None:
    assert faults.problems(healthy_view()) == []


def test_problems_name_what_is_not_back() -> None:
    view = healthy_view()
    view.nodes["hv2"].running["pvcnoded"] = False
    view.nodes["hv2"].links_down = ["eth0", "sw:hv2"]
    view.nodes["hv3"].stopped = 4
    view.nodes["hv3"].zk_mode = "starting"
    view.nodes["hv3"].daemon_state = "fenced"
    view.nodes["hv3"].domain_state = "flushed"
    view.nodes["hv1"].pvcapid = False
    view.nodes["hv1"].mount_problem = "state directory /s is full (64 of 64 MiB)"
    view.osds[2].up = False
    view.mons_in_quorum = ["hv1", "hv2"]
    found = faults.problems(view)
    assert found == [
        "hv1: state directory /s is full (64 of 64 MiB)",
        "hv2: pvcnoded not running",
        "hv2: links down (eth0, sw:hv2)",
        "hv3: 4 process(es) stopped",
        "hv3: daemon_state fenced",
        "hv3: domain_state flushed",
        "zk:hv3: not serving (starting)",
        "hv1: pvcapid not running on the primary",
        "mon.hv3: not in quorum",
        "osd.2 (hv3): down",
    ]
    view.primary = None
    assert "no primary coordinator" in faults.problems(view)


def test_mount_state_problems() -> None:
    full = space.MountState("/s", True, used=64 << 20, size=64 << 20, filler=False)
    assert full.full and full.problem() == "state directory /s is full (64 of 64 MiB)"
    assert space.MountState("/s", True, 1 << 20, 64 << 20, True).problem() == \
        "state directory /s holds the chaos fill file"
    assert space.MountState("/s", False, 0, 0, False).problem() == "state directory /s is not mounted"
    assert space.MountState("/s", True, 1 << 20, 64 << 20, False).problem() is None


def test_chaos_flag_of_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CHAOS_ENV, raising=False)
    assert not make_plan("t1").chaos
    assert make_plan("t1", chaos=True).chaos
    monkeypatch.setenv(CHAOS_ENV, "1")
    assert make_plan("t1").chaos
    assert not make_plan("t1", chaos=False).chaos
    assert space.mount_state_dirs(make_plan("t1", chaos=False)) == []


def test_kill_unit_stops_what_the_daemon_started_but_spares_others() -> None:
    """SIGKILL of the main process, then its children (as systemd with the rest of the unit)."""
    sleeper = "[sys.executable, '-c', 'import time; time.sleep(60)']"
    script = ("import subprocess, sys, time\n"
              f"a = subprocess.Popen({sleeper})\n"
              f"b = subprocess.Popen({sleeper}, start_new_session=True)\n"
              "print(a.pid, b.pid, flush=True)\n"
              "time.sleep(60)\n")
    main = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    started: list[int] = []
    try:
        assert main.stdout is not None
        child, spared = (int(x) for x in main.stdout.readline().split())
        started += [child, spared]
        assert set(proc.descendants(main.pid)) == {child, spared}
        signalled = proc.kill_unit(main.pid, spare=lambda pid: pid == spared, timeout=5)
        main.wait(5)
        assert signalled == [main.pid, child]
        deadline = time.monotonic() + 5
        while proc.alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not proc.alive(child)
        assert proc.alive(spared)
    finally:
        main.kill()
        for pid in started:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass

"""The HA scenarios: who dies, how, when, and what must become of every VM.

Times are seconds of virtual time. The policy is the product's config defaults
(tests/sim/world.Params reads them from pvc.core.config): session timeout 4 s, margin 1 s,
keepalive every 5 s, 6 intervals for a hung daemon, agent timeout 30 s, successful fence ->
migrate, failed fence -> none, selector mem; a scenario's times that depend on them say so. A
node answers once a second, so one cut off at 10 self-fences at 13 (4 s after its last answer at
9), its session expires at 15 and it is declared dead at 16. hv1-hv3 are coordinators with a ZooKeeper
member each (hv3, the highest id, leads at first), hv1 is primary at first; hv4/hv5 are
hypervisors. Fence agents: ok (power off after 1 s), fail (failure after 1 s), hang (never
answers), slow (power off after 20 s). The brake (more than 50 % of the nodes within 10 s) and the
quorum guard (hv1-hv3 run the ZooKeeper members) are on with their defaults. Verbs besides the
obvious: hang/unhang (the whole daemon but its ZooKeeper client), hang_ha/unhang_ha (its HA loop
only), start (a killed daemon), ack (an operator acknowledges a fault).
"""

from __future__ import annotations

from .world import VM, Scenario

# A typical 3-node load: two VMs on hv3 (the node that dies), one on each other node.
LOAD = (VM("vm1", "hv3", 2048), VM("vm2", "hv3"), VM("vm3", "hv1"), VM("vm4", "hv2"))
LOAD_RECOVERED = {"vm1": "runs", "vm2": "runs", "vm3": "runs@hv1", "vm4": "runs@hv2"}
LOAD_IN_PLACE = {"vm1": "runs@hv3", "vm2": "runs@hv3", "vm3": "runs@hv1", "vm4": "runs@hv2"}
LOAD_STRANDED = {"vm1": "stranded@hv3", "vm2": "stranded@hv3", "vm3": "runs@hv1", "vm4": "runs@hv2"}

# Five nodes, one VM each plus one more on hv5.
LOAD5 = (VM("vm1", "hv1"), VM("vm2", "hv2"), VM("vm3", "hv3"), VM("vm4", "hv4"), VM("vm5", "hv5"),
         VM("vm6", "hv5", 2048))
ALL5 = {f"vm{i}": "runs" for i in range(1, 7)}

MIGRATE_FAILED = {"failed_fence": "migrate"}

SCENARIOS: list[Scenario] = [
    # -- a node dies --------------------------------------------------------------------------
    Scenario("kill_with_vms",
             "hv3's daemon is killed (its VMs keep running): session expires at 14, dead at 15, "
             "fenced (powered off), VMs restarted on hv1/hv2",
             vms=LOAD, expect=LOAD_RECOVERED, actions=((10, "kill", "hv3"),), until=40),
    Scenario("power_loss_with_vms",
             "hv3 loses power: its VMs are gone at once; fence (already off), blocklist, recovery",
             vms=LOAD, expect=LOAD_RECOVERED, actions=((10, "power_off", "hv3"),), until=40),
    Scenario("dies_without_vms",
             "hv3 loses power and runs nothing: it is fenced all the same, nothing to recover",
             vms=(VM("vm1", "hv1"), VM("vm2", "hv2")), expect={"vm1": "runs@hv1", "vm2": "runs@hv2"},
             actions=((10, "power_off", "hv3"),), until=40),
    Scenario("stopped_vm_not_started",
             "hv3 dies with a running VM and a stopped one: only the running one is restarted",
             vms=(VM("vm1", "hv3", state="stop"), VM("vm2", "hv3")), expect={"vm1": "off", "vm2": "runs"},
             actions=((10, "power_off", "hv3"),), until=40),
    Scenario("primary_dies",
             "the primary hv1 is killed: hv2 takes the lock at once, and fences hv1 once its session "
             "expired plus the margin",
             vms=(VM("vm1", "hv1"), VM("vm2", "hv1"), VM("vm3", "hv2"), VM("vm4", "hv3")),
             expect={"vm1": "runs", "vm2": "runs", "vm3": "runs@hv2", "vm4": "runs@hv3"},
             actions=((10, "kill", "hv1"),), until=40),
    Scenario("two_nodes_die_5",
             "hv4 and hv5 lose power together in a 5-node cluster: fenced one at a time (hv4 first), "
             "every VM recovered",
             nodes=5, vms=LOAD5, expect=ALL5,
             actions=((10, "power_off", "hv4"), (10, "power_off", "hv5")), until=50),
    Scenario("dies_twice",
             "hv3 dies, is recovered, comes back, is readied (its VMs return), then dies again: the "
             "second chain keeps the first in its history",
             vms=(VM("vm1", "hv3"), VM("vm2", "hv1")), expect={"vm1": "runs", "vm2": "runs@hv1"},
             actions=((10, "power_off", "hv3"), (30, "power_on", "hv3"), (35, "ready", "hv3"),
                      (50, "power_off", "hv3")), until=80),
    Scenario("daemon_restart",
             "the primary's daemon restarts (new session while the old one lingers): hv2 takes the "
             "lock, the old session expires, nobody is fenced, nothing moves",
             vms=LOAD, expect=LOAD_IN_PLACE, no_fence=True,
             actions=((10, "restart", "hv1"), (12, "restart", "hv3")), until=40),

    # -- network -----------------------------------------------------------------------------------
    Scenario("link_flap",
             "hv3's links are down for 3 s: it reconnects with its session, no self-fence, no fence",
             vms=LOAD, expect=LOAD_IN_PLACE, no_fence=True,
             actions=((10, "link_down", "hv3"), (13, "link_up", "hv3")), until=40),
    Scenario("link_down_within_margin",
             "hv3 is cut off 5.5 s: it self-fences at 13, its session expires at 15, its link is back at "
             "15.5 and it has a new session at 16, as the margin ends and before the primary looks: no "
             "fence, its VMs restart on hv3",
             vms=LOAD, expect=LOAD_IN_PLACE, no_fence=True,
             actions=((10, "link_down", "hv3"), (15.5, "link_up", "hv3")), until=40),
    Scenario("partition_one_node",
             "hv3 is cut off for good (its BMC still answers): self-fence, dead, powered off, recovery",
             vms=LOAD, expect=LOAD_RECOVERED, actions=((10, "link_down", "hv3"),), until=40),
    Scenario("partition_link_returns_mid_fence",
             "hv3 is cut off; a slow agent is fencing it when its link returns: hv3 gets a new session "
             "but is dead, so it starts nothing; the agent powers it off, then the VMs move",
             vms=LOAD, expect=LOAD_RECOVERED, agent="slow",
             actions=((10, "link_down", "hv3"), (25, "link_up", "hv3")), until=60),
    Scenario("partition_halves_5",
             "5 nodes split into {hv1,hv2,hv4} and {hv3,hv5}: the minority has no quorum and "
             "self-fences; the majority fences hv3 then hv5 and recovers everything",
             nodes=5, vms=LOAD5, expect=ALL5,
             actions=((10, "partition", "hv1,hv2,hv4", "hv3,hv5"),), until=50),
    Scenario("partition_primary_in_minority",
             "5 nodes split into {hv1,hv4} and {hv2,hv3,hv5}: the primary hv1 is in the minority and "
             "can do nothing; hv2 takes over when hv1's session expires and fences hv1 then hv4",
             nodes=5, vms=LOAD5, expect=ALL5,
             actions=((10, "partition", "hv1,hv4", "hv2,hv3,hv5"),), until=50),

    # -- fence agents ------------------------------------------------------------------------------
    Scenario("primary_dies_during_fence",
             "5 nodes: hv1 is fencing hv4 with a slow agent when hv1 loses power: hv2 resumes the chain "
             "from its record (the agent runs again), then fences hv1",
             nodes=5,
             vms=(VM("vm1", "hv4"), VM("vm2", "hv1"), VM("vm3", "hv2", 4096), VM("vm4", "hv5", 4096)),
             expect={"vm1": "runs@hv3", "vm2": "runs@hv3", "vm3": "runs@hv2", "vm4": "runs@hv5"},
             agents={"hv4": "slow"}, actions=((10, "kill", "hv4"), (25, "power_off", "hv1")), until=80),
    Scenario("fence_fails_none",
             "hv3 loses power and its BMC with it: the fence fails, failed_fence none leaves the VMs "
             "on hv3 with faults",
             vms=LOAD, expect=LOAD_STRANDED, agent="fail", actions=((10, "power_off", "hv3"),), until=40),
    Scenario("fence_fails_none_link_returns",
             "hv3 is cut off from everything (its BMC too): fence fails, VMs stay with faults; when the "
             "link returns hv3 is dead and starts nothing",
             vms=LOAD, expect=LOAD_STRANDED, agent="fail",
             actions=((10, "link_down", "hv3"), (40, "link_up", "hv3")), until=60),
    Scenario("fence_fails_migrate",
             "hv3 is cut off and its BMC too: the fence fails, but failed_fence migrate and a working "
             "blocklist recover the VMs; when the link returns nothing runs twice",
             vms=LOAD, expect=LOAD_RECOVERED, agent="fail", config=MIGRATE_FAILED,
             actions=((10, "link_down", "hv3"), (40, "link_up", "hv3")), until=60),
    Scenario("blocklist_fails_fence_fails",
             "hv3 is cut off, the fence fails and Ceph cannot blocklist it: no recovery even with "
             "failed_fence migrate, faults instead",
             vms=LOAD, expect=LOAD_STRANDED, agent="fail", config=MIGRATE_FAILED,
             actions=((5, "blocklist_fails", "on"), (10, "link_down", "hv3")), until=40),
    Scenario("agent_hangs",
             "hv3's daemon is killed (VMs keep running) and its agent hangs: cancelled after 30 s, "
             "counted as failed; failed_fence none leaves the VMs running on hv3",
             vms=LOAD, expect=LOAD_STRANDED, agent="hang", actions=((10, "kill", "hv3"),), until=60),
    Scenario("agent_hangs_migrate_daemon_dead",
             "as agent_hangs with failed_fence migrate: hv3 is blocklisted and its VMs restart "
             "elsewhere; the copies still on hv3 can no longer write",
             vms=LOAD, expect=LOAD_RECOVERED, agent="hang", config=MIGRATE_FAILED,
             hung_node=True, actions=((10, "kill", "hv3"),), until=60),
    Scenario("agent_slow",
             "hv3 loses power and the agent needs 20 s (within the 30 s limit): fenced, recovered",
             vms=LOAD, expect=LOAD_RECOVERED, agent="slow", actions=((10, "power_off", "hv3"),), until=60),

    # -- ZooKeeper ---------------------------------------------------------------------------------
    Scenario("quorum_lost",
             "hv1 and hv2 lose power: hv3's member has no quorum, nobody fences, hv3 self-fences; hv1 "
             "returns at 25: the new leader restarts the session timers, hv3 restarts its VMs, hv2's "
             "session expires at 30, it is fenced and its VM moves",
             vms=(VM("vm1", "hv1"), VM("vm2", "hv2"), VM("vm3", "hv3")),
             expect={"vm1": "runs@hv1", "vm2": "runs", "vm3": "runs@hv3"},
             actions=((10, "power_off", "hv1"), (10, "power_off", "hv2"), (25, "power_on", "hv1")), until=60),
    Scenario("quorum_lost_long",
             "as quorum_lost, but hv1 returns only at 45: hv2 (off, but its session timer restarted by "
             "the new leader) must be declared dead by its session expiry, not as a hung daemon",
             vms=(VM("vm1", "hv1"), VM("vm2", "hv2"), VM("vm3", "hv3")),
             expect={"vm1": "runs@hv1", "vm2": "runs", "vm3": "runs@hv3"}, forbid=("daemon hung",),
             actions=((10, "power_off", "hv1"), (10, "power_off", "hv2"), (45, "power_on", "hv1")), until=80),
    Scenario("zk_outage_beyond_hung_after",
             "ZooKeeper has no leader for 37 s with every node up: all self-fence, then restart their "
             "VMs in place; nobody may be fenced",
             vms=LOAD, expect=LOAD_IN_PLACE, no_fence=True, actions=((10, "zk_election", 37),), until=80),
    Scenario("zk_member_lost",
             "the ZooKeeper member on hv1 (the primary) stops, later the leader's on hv3: clients move "
             "to another member within 1 s with their sessions; nothing is fenced",
             vms=LOAD, expect=LOAD_IN_PLACE, no_fence=True,
             actions=((10, "zk_stop", "hv1"), (20, "zk_start", "hv1"), (30, "zk_stop", "hv3"),
                      (40, "zk_start", "hv3")), until=60),
    Scenario("zk_blip_short",
             "ZooKeeper has no leader for 2 s (a short election): every client is disconnected, nobody "
             "self-fences (no answer for 3 s < 4 s), nobody is fenced",
             vms=LOAD, expect=LOAD_IN_PLACE, no_fence=True, actions=((10, "zk_election", 2),), until=40),
    Scenario("zk_leaderless_5s",
             "ZooKeeper has no leader for 5 s, longer than the 4 s session allows (the trade-off of the "
             "short session, docs/architecture.md 'Failover timing'): every node self-fences at 13; "
             "the leader is back at 15 with every session kept, nobody is fenced, every node restarts "
             "its own VMs",
             vms=LOAD, expect=LOAD_IN_PLACE, no_fence=True, actions=((10, "zk_election", 5),), until=40),
    Scenario("zk_outage_long",
             "ZooKeeper has no leader for 12 s: every node self-fences; the new leader restarts the "
             "session timers, nobody is fenced, every node restarts its own VMs",
             vms=LOAD, expect=LOAD_IN_PLACE, no_fence=True, actions=((10, "zk_election", 12),), until=50),

    # -- hung daemon -------------------------------------------------------------------------------
    Scenario("hung_daemon",
             "hv3's daemon hangs (its session lives, keepalive stops at 10): dead at 40 "
             "(6 x 5 s), powered off by the agent, VMs recovered",
             vms=LOAD, expect=LOAD_RECOVERED, hung_node=True, actions=((12, "hang", "hv3"),), until=60),
    Scenario("hung_daemon_fence_fails_migrate",
             "hv3's daemon hangs and its agent fails; failed_fence migrate: blocklisted, VMs restart "
             "elsewhere while the hung node's copies can no longer write",
             vms=LOAD, expect=LOAD_RECOVERED, hung_node=True, agent="fail", config=MIGRATE_FAILED,
             actions=((12, "hang", "hv3"),), until=60),

    Scenario("hung_daemon_recovers",
             "hv3's daemon hangs for 18 s (less than 6 x 5 s) and resumes: nobody is fenced",
             vms=LOAD, expect=LOAD_IN_PLACE, no_fence=True, hung_node=True,
             actions=((12, "hang", "hv3"), (30, "unhang", "hv3")), until=60),
    Scenario("hung_daemon_resumes_after_recovery",
             "hv3 hangs, its agent fails, failed_fence migrate moves its VMs; at 50 the daemon resumes: "
             "it is dead and blocklisted, terminates its stale copies and starts nothing",
             vms=LOAD, expect=LOAD_RECOVERED, hung_node=True, agent="fail", config=MIGRATE_FAILED,
             actions=((12, "hang", "hv3"), (50, "unhang", "hv3")), until=70),
    # -- a hung primary (the primary lease) -----------------------------------------------------------
    Scenario("primary_hung",
             "5 nodes: the primary hv1's daemon hangs at 10 (its session lives, so it keeps the lock), "
             "hv4 loses power at 20: at 35 hv2 deposes hv1 (keepalive 30 s old), takes the lock and the "
             "lease (generation 2) and fences hv1, then hv4; every VM runs again",
             nodes=5,
             vms=(VM("vm1", "hv4"), VM("vm2", "hv4"), VM("vm3", "hv1"), VM("vm4", "hv2"), VM("vm5", "hv5")),
             expect={"vm1": "runs", "vm2": "runs", "vm3": "runs", "vm4": "runs@hv2", "vm5": "runs@hv5"},
             actions=((10, "hang", "hv1"), (20, "power_off", "hv4")), until=70),
    Scenario("primary_ha_loop_hung",
             "only the primary hv1's HA loop hangs at 10 (keepalive, VMs and session go on): its lease "
             "is not renewed, hv2 deposes it at 40, takes over and fences hv1; hv1's VM moves",
             vms=LOAD, expect={**LOAD_IN_PLACE, "vm3": "runs"},
             actions=((10, "hang_ha", "hv1"),), until=70),
    Scenario("primary_hung_wakes",
             "maintenance is on; the primary hv1 hangs at 10 and is deposed at 35; it wakes at 45.5 "
             "still believing it is primary: its lease write fails, it refuses to act, steps down at 46 "
             "and clears its deposed mark; maintenance off at 55: nobody is fenced",
             vms=LOAD, expect=LOAD_IN_PLACE, no_fence=True,
             actions=((5, "maintenance", "on"), (10, "hang", "hv1"), (45.5, "unhang", "hv1"),
                      (55, "maintenance", "off")), until=70),
    Scenario("primary_hung_quorum",
             "hv3 loses power at 8, the primary hv1 hangs at 10; hv2 deposes hv1 at 35: fencing hv1 would "
             "leave hv2's ZooKeeper member alone (FENCING_QUORUM_HV1, hv1 held), hv3 (member down) is "
             "fenced and its VMs go to hv2, never to the hung hv1; hv3 is back at 50: hv1 is fenced",
             vms=LOAD, expect={"vm1": "runs", "vm2": "runs", "vm3": "runs", "vm4": "runs@hv2"},
             actions=((8, "power_off", "hv3"), (10, "hang", "hv1"), (50, "power_on", "hv3"),
                      (60, "ready", "hv3")), until=80),

    # -- the quorum guard and the brake ------------------------------------------------------------------
    Scenario("fence_would_lose_quorum",
             "hv3 loses power and is fenced; hv2's daemon hangs at 20 (its ZooKeeper member serves): "
             "fencing hv2 would leave hv1's member alone, so it is held with FENCING_QUORUM_HV2 and its "
             "VMs stay (vm4, and vm2, which hv3's recovery started there at 17); hv3 is powered on at "
             "55: the quorum holds without hv2, hv2 is fenced, its VMs move",
             vms=LOAD, expect={"vm1": "runs", "vm2": "runs", "vm3": "runs@hv1", "vm4": "runs@hv1"},
             actions=((10, "power_off", "hv3"), (20, "hang", "hv2"), (55, "power_on", "hv3"),
                      (65, "ready", "hv3")), until=80),
    Scenario("brake_two_of_three",
             "the daemons of hv2 and hv3 are killed at 10 (their VMs run on): both sessions expire at 14, "
             "2 of 3 nodes within 10 s: the brake holds (FENCING_BRAKE), nobody is fenced; the daemons "
             "start again at 25: the brake releases, the fault clears, nothing moved",
             vms=LOAD, expect=LOAD_IN_PLACE, no_fence=True,
             actions=((10, "kill", "hv2"), (10, "kill", "hv3"), (25, "start", "hv2"), (25, "start", "hv3")),
             until=40),
    Scenario("brake_released_by_operator",
             "5 nodes: hv3, hv4 and hv5 lose power together (3 of 5): the brake holds; an operator "
             "acknowledges FENCING_BRAKE at 30: they are fenced one at a time, every VM runs again",
             nodes=5, vms=LOAD5, expect=ALL5,
             actions=((10, "power_off", "hv3"), (10, "power_off", "hv4"), (10, "power_off", "hv5"),
                      (30, "ack", "FENCING_BRAKE")), until=60),

    # -- maintenance -------------------------------------------------------------------------------
    Scenario("maintenance_before_death",
             "maintenance mode is on when hv3 dies: no fence; turned off at 40, hv3 is fenced and its "
             "VMs recovered",
             vms=LOAD, expect=LOAD_RECOVERED,
             actions=((5, "maintenance", "on"), (10, "kill", "hv3"), (40, "maintenance", "off")), until=60),
    Scenario("maintenance_during_fence",
             "5 nodes: hv4 is being fenced (slow agent) when maintenance goes on: its chain completes; "
             "hv5 dies meanwhile and waits until maintenance is off",
             nodes=5, vms=LOAD5, expect=ALL5, agents={"hv4": "slow"},
             actions=((10, "power_off", "hv4"), (25, "maintenance", "on"), (30, "power_off", "hv5"),
                      (60, "maintenance", "off")), until=80),

    Scenario("successful_fence_none",
             "successful_fence none: hv3 is fenced but its VMs stay, with faults",
             vms=LOAD, expect=LOAD_STRANDED, config={"successful_fence": "none"},
             actions=((10, "power_off", "hv3"),), until=40),
    Scenario("stranded_node_readied",
             "hv3 is cut off and cannot be fenced (failed_fence none): its VMs stay; the link returns "
             "and an administrator readies hv3: blocklist lifted, hv3 starts its own VMs again",
             vms=LOAD, expect=LOAD_IN_PLACE, agent="fail",
             actions=((10, "link_down", "hv3"), (30, "link_up", "hv3"), (40, "ready", "hv3")), until=60),
    Scenario("link_returns_at_margin",
             "hv3 is cut off and its link returns at 16.2, just after it was declared dead at 16.0 "
             "(session gone at 15 + the 1 s margin): the declaration stands, the agent powers hv3 off "
             "at 17 before it can reconnect, and its VMs move (partition_link_returns_mid_fence has "
             "a dead node that does reconnect)",
             vms=LOAD, expect=LOAD_RECOVERED,
             actions=((10, "link_down", "hv3"), (16.2, "link_up", "hv3")), until=40),

    # -- placement ---------------------------------------------------------------------------------
    Scenario("no_capacity",
             "hv3 (64 GiB) dies with a 20 GiB VM no survivor (16 GiB) can ever hold: stopped with "
             "autostart and a fault; the small VM moves",
             vms=(VM("vm1", "hv3", 20480), VM("vm2", "hv3")), memory={"hv3": 65536},
             expect={"vm1": "stopped", "vm2": "runs"}, actions=((10, "power_off", "hv3"),), until=40),
    Scenario("node_limit",
             "hv3 dies: vm1 is limited to hv3 (stopped, fault); vm2 to hv2/hv3 goes to hv2 although hv1 "
             "has more free memory",
             vms=(VM("vm1", "hv3", limit=("hv3",)), VM("vm2", "hv3", limit=("hv2", "hv3")),
                  VM("vm3", "hv2", 4096)),
             expect={"vm1": "stopped", "vm2": "runs@hv2", "vm3": "runs@hv2"},
             actions=((10, "power_off", "hv3"),), until=40),
    Scenario("selector_vms_spread",
             "cluster selector vms: hv3's four VMs are spread over hv1 (2 VMs) and hv2 (1 VM) by count",
             vms=(VM("vm1", "hv3"), VM("vm2", "hv3"), VM("vm3", "hv3"), VM("vm4", "hv3"),
                  VM("vm5", "hv1", 512), VM("vm6", "hv1", 512), VM("vm7", "hv2", 8192)),
             expect={"vm1": "runs@hv2", "vm2": "runs@hv1", "vm3": "runs@hv2", "vm4": "runs@hv1",
                     "vm5": "runs@hv1", "vm6": "runs@hv1", "vm7": "runs@hv2"},
             config={"default_selector": "vms"}, actions=((10, "power_off", "hv3"),), until=40),
    Scenario("selector_mem_spread",
             "selector mem: hv3's VMs go where most memory is free, each placement counted before the "
             "next",
             vms=(VM("vm1", "hv3", 4096), VM("vm2", "hv3", 2048), VM("vm3", "hv3", 2048),
                  VM("vm4", "hv1", 4096)),
             expect={"vm1": "runs@hv2", "vm2": "runs@hv1", "vm3": "runs@hv2", "vm4": "runs@hv1"},
             actions=((10, "power_off", "hv3"),), until=40),

    Scenario("two_nodes_die_placement",
             "5 nodes: hv4 and the big hv5 lose power together; hv4's VM must not be placed on hv5, "
             "which is dead too (its session is gone) but not declared yet",
             nodes=5, vms=LOAD5, expect=ALL5, memory={"hv5": 65536},
             actions=((10, "power_off", "hv4"), (10, "power_off", "hv5")), until=50),
    Scenario("two_nodes_die_placement_fence_fails",
             "as two_nodes_die_placement, but hv5 cannot be fenced (failed_fence none): hv4 was fenced, "
             "so its VM must run again; it must not end up stranded on hv5, where it never ran",
             nodes=5, vms=LOAD5, memory={"hv5": 65536}, agents={"hv5": "fail"},
             expect={**ALL5, "vm5": "stranded@hv5", "vm6": "stranded@hv5"},
             actions=((10, "power_off", "hv4"), (10, "power_off", "hv5")), until=50),

    Scenario("placement_fresh_figures",
             "5 nodes: hv4 and hv5 lose power together; hv4's 10 GiB VM goes to the big hv2 at 16; hv5's "
             "8 GiB VM is placed at 17, before hv2's keepalive shows the first one: it is counted anyway, "
             "so hv5's VM goes to hv1, not onto hv2 again",
             nodes=5, memory={"hv2": 24576},
             vms=(VM("vm1", "hv1"), VM("vm2", "hv2"), VM("vm3", "hv3"), VM("vm4", "hv4", 10240),
                  VM("vm5", "hv5", 8192)),
             expect={"vm1": "runs@hv1", "vm2": "runs@hv2", "vm3": "runs@hv3", "vm4": "runs@hv2",
                     "vm5": "runs@hv1"},
             actions=((10, "power_off", "hv4"), (10, "power_off", "hv5")), until=40),

    # -- around the chain --------------------------------------------------------------------------
    Scenario("dead_node_returns_readied",
             "hv3 is fenced and recovered; it boots at 30 and stays out (fenced, runs nothing); readied "
             "at 45: blocklist lifted, daemon state run, its VMs come back",
             vms=LOAD, expect=LOAD_IN_PLACE,
             actions=((10, "power_off", "hv3"), (30, "power_on", "hv3"), (45, "ready", "hv3")), until=70),
    Scenario("cold_start",
             "hv3 is still off when the cluster starts (never seen alive): it is not fenced; it boots "
             "at 40 and starts its VM",
             vms=(VM("vm1", "hv3"), VM("vm2", "hv1")), expect={"vm1": "runs@hv3", "vm2": "runs@hv1"},
             off=("hv3",), no_fence=True, actions=((40, "power_on", "hv3"),), until=60),
    Scenario("death_during_flush",
             "hv2 is being flushed when hv3 (a flush target) loses power at 7: the migration to hv3 "
             "started at 11 fails at 13.5, after hv3's session is gone (12) and it was declared dead "
             "(13), so the retry goes to hv1; hv3's VM goes to hv1, never to the flushing hv2",
             vms=(VM("vm1", "hv2"), VM("vm2", "hv2"), VM("vm3", "hv2"), VM("vm4", "hv3"), VM("vm5", "hv1")),
             expect={"vm1": "runs@hv1", "vm2": "runs@hv1", "vm3": "runs@hv1", "vm4": "runs@hv1",
                     "vm5": "runs@hv1"},
             actions=((5, "flush", "hv2"), (7, "power_off", "hv3")), until=50),
    Scenario("sender_dies_mid_migration",
             "hv3 is being flushed and loses power while sending vm1: the receiver waits (hv3 still "
             "claims vm1) until the chain releases hv3's claims, then starts it",
             vms=(VM("vm1", "hv3"), VM("vm2", "hv3"), VM("vm3", "hv1")),
             expect={"vm1": "runs", "vm2": "runs", "vm3": "runs@hv1"},
             actions=((5, "flush", "hv3"), (6.5, "power_off", "hv3")), until=40),
    Scenario("sender_dies_mid_migration_fence_fails",
             "as sender_dies_mid_migration, but the fence fails (failed_fence none): vm1 must not start "
             "(hv3 may still run it), and like vm2 it needs a VM_NOT_RECOVERED fault",
             vms=(VM("vm1", "hv3"), VM("vm2", "hv3"), VM("vm3", "hv1")),
             expect={"vm1": "stranded@hv3", "vm2": "stranded@hv3", "vm3": "runs@hv1"}, agent="fail",
             actions=((5, "flush", "hv3"), (6.5, "power_off", "hv3")), until=40),
    Scenario("not_recovered_fault_resolved",
             "hv3 dies: vm1 is limited to hv3 (stopped, autostart, VM_NOT_RECOVERED_VM1); hv3 boots at 30 "
             "and is readied at 35: vm1 starts again on hv3 and its fault is resolved",
             vms=(VM("vm1", "hv3", limit=("hv3",)), VM("vm2", "hv3"), VM("vm3", "hv1")),
             expect={"vm1": "runs@hv3", "vm2": "runs", "vm3": "runs@hv1"},
             forbid=("end fault VM_NOT_RECOVERED",),
             actions=((10, "power_off", "hv3"), (30, "power_on", "hv3"), (35, "ready", "hv3")), until=50),
]

BY_NAME = {sc.name: sc for sc in SCENARIOS}
assert len(BY_NAME) == len(SCENARIOS), "scenario names must be unique"

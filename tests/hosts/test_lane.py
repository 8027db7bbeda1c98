"""The real-host lane, end to end (issue #18): three booted Debian 12 containers installed by the
Ansible playbook from the built packages, then what an administrator does with the cluster.

One test, because every step needs the one before it (pvc.lab.hosts.scenario): the packages
built twice (the previous and a newer build), the lane up, site.yml run twice (the second changes
nothing), one primary among running nodes, a managed network handing the VM its address by
DHCP, a VM on RBD defined, booted and live-migrated, its node flushed and readied, a rolling
upgrade to the newer build with the VM running throughout, and site.yml changing nothing
afterwards. Machine-heavy (minutes, root, nspawn): run it under the lab lock. The lane is always
torn down; its logs are kept in /var/cache/pvc-hosts/last-run-logs.
"""

from __future__ import annotations

import os
import shutil

import pytest

pytestmark = [pytest.mark.system, pytest.mark.slow]


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the lane needs root (namespaces, mounts, loop devices)"
    if os.environ.get("PVC_TEST_SKIP_HOSTS"):
        return "PVC_TEST_SKIP_HOSTS is set"
    missing = [t for t in ("systemd-nspawn", "debootstrap", "ansible-playbook", "dpkg-buildpackage")
               if shutil.which(t) is None]
    return f"missing {', '.join(missing)} (scripts/install)" if missing else None


@pytest.mark.timeout(5400)
def test_playbook_installs_three_hosts_and_upgrades_them_with_a_vm_running() -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from pvc.lab.hosts import scenario

    report = scenario.run(scenario.Report())
    facts = report.facts
    assert facts["first_run"]["rc"] == 0
    assert facts["second_run"]["changed"] == 0
    assert len([n for n in facts["cli_node_list"] if n["daemon_state"] == "run"]) == 3
    assert facts["vm_ip"].startswith(scenario.SUBNET)
    assert set(facts["versions_after"].values()) == {facts["new_version"]}
    assert facts["after_upgrade_run"]["changed"] == 0

"""PVC's own daemons in the lab: one config file per node, pvcnoded and pvcworkerd per node.

pvcapid is not started here: pvcnoded runs it on whichever coordinator is primary.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

import yaml

from pvc.lab import labtls, proc
from pvc.lab.plan import API_PORT, CACHE_DIR, UPSTREAM_SUBNET, ZK_CLIENT_PORT, LabPlan, NodePlan

PLUGIN_DIRECTORY = Path(__file__).resolve().parents[1] / "node" / "health" / "plugins"

# the primary's address on the upstream segment (eth1): the cluster DNS view answers there
FLOATING_ADDRESS = f"{UPSTREAM_SUBNET}.254"

DAEMONS = ("pvcnoded", "pvcworkerd")
MODULES = {"pvcnoded": "pvc.node.daemon", "pvcworkerd": "pvc.worker.daemon"}


def api_token(plan: LabPlan) -> str:
    token = plan.extra.get("api_token")
    if not token:
        token = secrets.token_hex(16)
        plan.extra["api_token"] = token
        plan.save()
    return str(token)


ZK_ROOT = "/pvc"


def zk_auth(plan: LabPlan) -> dict[str, str]:
    """The lab's ZooKeeper digest credentials, made once per lab (ACLs on, as on a real cluster)."""
    auth = plan.extra.get("zk_auth")
    if not isinstance(auth, dict):
        auth = {"username": "pvc", "password": secrets.token_urlsafe(24)}
        plan.extra["zk_auth"] = auth
        plan.save()
    return {"username": str(auth["username"]), "password": str(auth["password"])}


def cluster_key_file(plan: LabPlan) -> Path:
    """The lab's cluster key (pvc.core.secrets): one root-only file every node's config names."""
    from pvc.core import secrets as cluster_secrets

    path = plan.state_dir / "cluster.key"
    if not path.exists():
        cluster_secrets.write_key_file(path)
    return path


def lab_zk(plan: LabPlan) -> Any:
    """A started, authenticated `pvc.core.zk.ZK` session on the lab's cluster root, through the
    loopback relay: what every lab tool and test uses to read or write the lab's ZooKeeper."""
    from pvc.core.zk import ZK

    auth = zk_auth(plan)
    return ZK([f"127.0.0.1:{plan.zk_port}"], ZK_ROOT, auth=(auth["username"], auth["password"])).start()


def _state_root(plan: LabPlan, node: NodePlan) -> Path:
    """Where the node's dynamic and log directories live: its dir, or in a chaos lab its
    size-limited state mount (pvc.lab.chaos.space)."""
    return node.dir / "state" if plan.chaos else node.dir


def node_config(plan: LabPlan, node: NodePlan) -> dict[str, Any]:
    token = api_token(plan)
    state = _state_root(plan, node)
    return {
        "cluster": {
            "name": plan.name,
            "coordinator_nodes": [n.name for n in plan.coordinators],
            "all_nodes": [n.name for n in plan.nodes],
            "key_file": str(cluster_key_file(plan)),
        },
        "zookeeper": {
            "hosts": [f"{n.address}:{ZK_CLIENT_PORT}" for n in plan.coordinators],
            "root": ZK_ROOT,
            "session_timeout": 4,
            "auth": zk_auth(plan),
        },
        "node": {"name": node.name},
        # the lab's guests answer ACPI within seconds once booted; one asked to shut down while
        # it boots (TCG) never does, and 180 s of waiting then holds up tests and chaos runs
        "timer": {"keepalive_interval": 5, "vm_shutdown_timeout": 30},
        "logging": {"level": "info", "stdout": True},
        "api": {
            "listen": {"address": node.address, "port": API_PORT},
            "authentication": {"enabled": True},
            "token": [{"description": "lab", "token": token}],
            # HTTPS with the lab CA's certificate for every node, the floating address and the
            # root namespace's relay (127.0.0.1), as the installer makes on a real cluster
            "ssl": labtls.api_ssl(plan, [FLOATING_ADDRESS]),
        },
        # migrations over TLS, presenting the lab's client certificate (pvc.lab.labtls)
        "hypervisor": {"libvirt_uri": node.libvirt_uri, "migration_address": node.address,
                       "migration_uri_template": labtls.migration_uri_template(plan),
                       # the lab guest boots its kernel and initramfs from the lab's cache: the
                       # one host directory the domain XML policy lets lab VMs name
                       "domain_policy": {"kernel_directories": [str(CACHE_DIR / "guest")]}},
        "storage": {
            "ceph_config_file": str(plan.ceph_conf),
            "ceph_keyring_file": str(plan.ceph_dir / "ceph.client.admin.keyring"),
            # no systemd in a namespace: PVC runs the OSDs it adds itself, file-backed, next to
            # the lab's own (pvc.lab.ceph starts them again on `pvc-lab node start`)
            "osd_service": "direct",
            "osd_data_directory": str(node.dir / "ceph"),
            "osd_pid_directory": str(plan.pid_dir),
            # lab-sized benchmark: 8 tests x 2 s on a 256 MiB volume
            "benchmark_size": "256M",
            "benchmark_runtime": 2,
        },
        "networking": {
            "cluster_device": "eth0",
            "cluster_address": node.address,
            # guests' NAT leaves through the upstream segment, never the cluster network
            "upstream_device": "eth1",
            "floating_address": f"{FLOATING_ADDRESS}/24",
            "bridge_device": "eth0",
            # no 802.1Q in these kernels: bridged networks get a veth stand-in into the switch
            "vlan_backend": "lab-switch",
            "lab_switch_netns": plan.switch_netns,
        },
        # The lab's fence agent (pvc-lab fence) stands in for each node's BMC.
        "fencing": {"agent": "lab", "lab_name": plan.name, "margin": 1, "agent_timeout": 30},
        # Autobackup onto a loop-mounted ext4 image in the state dir, mounted and unmounted by the
        # worker's mount commands as a real cluster's NFS or disk target (no schedule: runs are
        # started by tests or `pvc vm autobackup`); pvc-lab down unmounts it and detaches the loop.
        "autobackup": autobackup_config(plan),
        "path": {
            "dynamic_directory": str(state / "run"),
            "system_log_directory": str(state / "log"),
            "console_log_directory": str(node.dir / "console"),
            "ceph_directory": str(plan.ceph_dir),
            # the repo's shipped health plugins, as /usr/share/pvc/plugins on a real node
            "plugin_directory": str(PLUGIN_DIRECTORY),
        },
        # The lab's nodes share one development host: its load, package state and clock are
        # not theirs to answer for, so those checks are told so; the rest run as on hardware.
        "health": {"plugin_config": {
            "load_factor": 50, "dpkg_ignore_upgradable": True, "clock_source": "none",
            "fs_paths": ["/", str(node.dir), "/var/log", *([str(state)] if plan.chaos else [])],
        }},
    }


AUTOBACKUP_IMAGE_SIZE = "2G"      # sparse: only what backups write takes space


def autobackup_target(plan: LabPlan) -> tuple[Path, Path]:
    """The lab's autobackup target: (ext4 image file, mount point), both in the state dir."""
    return plan.state_dir / "autobackup.img", plan.state_dir / "autobackup"


def autobackup_config(plan: LabPlan) -> dict[str, Any]:
    image, mount_point = autobackup_target(plan)
    return {
        "backup_root_path": str(mount_point),
        "backup_root_suffix": f"/{plan.name}",
        "backup_tags": ["autobackup"],
        "backup_schedule": {"full_interval": 3, "full_retention": 2},
        "auto_mount": {"enabled": True,
                       "mount_cmds": [f"mount -o loop '{image}' {{backup_root_path}}"],
                       "unmount_cmds": ["umount {backup_root_path}"]},
        "min_free_bytes": 32 * 1024 * 1024,
    }


def make_autobackup_target(plan: LabPlan) -> None:
    """Create the target's image and mount point once (kept across `pvc-lab up` of a running lab)."""
    image, mount_point = autobackup_target(plan)
    mount_point.mkdir(parents=True, exist_ok=True)
    if not image.exists():
        proc.run(["truncate", "-s", AUTOBACKUP_IMAGE_SIZE, str(image)])
        proc.run(["mkfs.ext4", "-q", "-F", "-L", "pvcautobackup", str(image)])


def write_configs(plan: LabPlan) -> None:
    from pvc.lab.chaos import space  # late: the chaos package imports this module

    make_autobackup_target(plan)
    space.mount_state_dirs(plan)
    for node in plan.nodes:
        node.dir.mkdir(parents=True, exist_ok=True)
        node.pvc_conf.write_text(yaml.safe_dump(node_config(plan, node), sort_keys=False))


def pidfile(plan: LabPlan, node: NodePlan, daemon: str) -> Path:
    return plan.pid_dir / f"{node.name}-{daemon}.pid"


# Daemons the lab restarts after a crash, as systemd's Restart=on-failure does on a real host:
# pvcworkerd only, under pvc.lab.supervise (a SIGKILL or SIGTERM of it is still final, as the chaos
# runner's kill_pvcworkerd expects). Not pvcnoded: the HA tests kill it on purpose and expect it
# to stay dead (its node is fenced), and restore_node / restart_daemon start it again.
SUPERVISED = ("pvcworkerd",)


def daemon_command(daemon: str) -> list[str]:
    """The daemon's command line; the pid spawn() records is the supervisor's for SUPERVISED ones."""
    command = [sys.executable, "-m", MODULES[daemon]]
    if daemon in SUPERVISED:
        return [sys.executable, "-m", "pvc.lab.supervise", "--name", daemon, "--", *command]
    return command


def start_daemon(plan: LabPlan, node: NodePlan, daemon: str) -> int:
    return proc.spawn(daemon_command(daemon), plan.log_dir / f"{node.name}-{daemon}.log",
                      pidfile(plan, node, daemon), netns=node.netns,
                      env={"PVC_CONFIG_FILE": str(node.pvc_conf), "PYTHONUNBUFFERED": "1"})


def restart_daemon(plan: LabPlan, node: NodePlan, daemon: str) -> int:
    """Start a daemon that died, as systemd's Restart=on-failure does: what is left of its process
    group goes first (its main pid was the group's id), then a fresh start. A running one stays."""
    path = pidfile(plan, node, daemon)
    running = proc.pid_of(path)
    if running is not None:
        return running
    try:
        old = int(path.read_text().strip())
    except (OSError, ValueError):
        old = 0
    if old > 0:
        inside = netns_pid_set(node.netns)
        for pid, (state, _parent, group) in proc.process_table().items():
            if group == old and state != "Z" and pid in inside:
                proc.kill_unit(pid, timeout=2)
    return start_daemon(plan, node, daemon)


def netns_pid_set(netns: str) -> set[int]:
    """Pids of the processes in a namespace (`ip netns pids`)."""
    result = proc.run(["ip", "netns", "pids", netns], check=False)
    return {int(p) for p in result.stdout.split() if p.isdigit()}


def start_node(plan: LabPlan, node: NodePlan) -> None:
    for daemon in DAEMONS:
        if proc.pid_of(pidfile(plan, node, daemon)) is None:
            start_daemon(plan, node, daemon)


def stop_node(plan: LabPlan, node: NodePlan, kill: bool = False) -> None:
    for daemon in reversed(DAEMONS):
        proc.stop(pidfile(plan, node, daemon), timeout=40, kill=kill)

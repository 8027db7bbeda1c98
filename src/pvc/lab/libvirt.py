"""One libvirtd per lab node, inside the node's network namespace.

Each node is a separate "host" to libvirt: its own config dir, sockets, state and host UUID
(libvirt refuses to migrate to a host with the same UUID). The daemon runs in a private mount
namespace where the node's own directories are bind-mounted over /etc/libvirt, /run/libvirt,
/var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt; its unix socket sits in a path that is
visible from the root namespace, and it listens on TLS only on the node's underlay address (for
peer-to-peer migrations between nodes), with a server certificate of the lab's CA, and admits only
peers presenting the lab's migration client certificate (pvc.lab.labtls). `tini -s` is the
subreaper: libvirt double-forks qemu, and PID 1 on these machines reaps orphans only every ~2 s,
which would make every destroy take 2 s.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import threading
import uuid
from pathlib import Path

import libvirt

from pvc.lab import labtls, proc
from pvc.lab.netns import netns_pids
from pvc.lab.plan import LabPlan, NodePlan

SOCKET_PATH_MAX = 107            # sun_path is 108 bytes including the terminating NUL
PRIVATE_DIRS = {                 # node subdirectory -> system path it replaces
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}
# Bind-mount "$1/<sub>" over each system path, then exec the rest of the arguments. The script is a
# constant; the paths arrive as positional arguments, so nothing is interpolated into shell code.
_MOUNT_AND_EXEC = (
    'set -e; d=$1; shift; '
    'for pair in etc:/etc/libvirt run:/run/libvirt lib:/var/lib/libvirt '
    'log:/var/log/libvirt cache:/var/cache/libvirt; do '
    'mount --bind "$d/${pair%%:*}" "${pair#*:}"; done; exec "$@"'
)


def pidfile(plan: LabPlan, node: NodePlan) -> Path:
    return plan.pid_dir / f"{node.name}-libvirtd.pid"


def log_path(plan: LabPlan, node: NodePlan) -> Path:
    return plan.log_dir / f"{node.name}-libvirtd.log"


def socket_dir(node: NodePlan) -> Path:
    return node.libvirt_dir / "sock"


def host_uuid(node: NodePlan) -> str:
    """The node's libvirt host UUID: made once per node, kept across daemon restarts."""
    path = node.libvirt_dir / "host_uuid"
    if path.exists():
        return path.read_text().strip()
    value = str(uuid.uuid4())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    return value


def libvirtd_conf(plan: LabPlan, node: NodePlan) -> str:
    """TLS only on the network (no plain TCP): the client certificate is the authentication, and
    only the lab's migration client (signed by the lab CA) is admitted."""
    pki_dir = labtls.libvirt_server(plan, node)
    labtls.libvirt_client(plan)
    return "\n".join([
        "listen_tls = 1",
        "listen_tcp = 0",
        f'listen_addr = "{node.address}"',
        f'tls_port = "{labtls.LIBVIRT_TLS_PORT}"',
        'auth_tls = "none"',
        f'key_file = "{pki_dir / "serverkey.pem"}"',
        f'cert_file = "{pki_dir / "servercert.pem"}"',
        f'ca_file = "{pki_dir / "cacert.pem"}"',
        "tls_no_verify_certificate = 0",
        f'tls_allowed_dn_list = ["CN={labtls.MIGRATION_CLIENT_CN}"]',
        'auth_unix_rw = "none"',
        'auth_unix_ro = "none"',
        'unix_sock_group = "root"',
        'unix_sock_rw_perms = "0770"',
        f'unix_sock_dir = "{socket_dir(node)}"',
        f'host_uuid = "{host_uuid(node)}"',
        f'log_outputs = "3:file:{log_path(plan, node)}"',
        "",
    ])


def qemu_conf(node: NodePlan, tls_dir: Path | None = None) -> str:
    """`tls_dir`: QEMU's x509 files, so a migration asked for with VIR_MIGRATE_TLS encrypts the
    guest's memory stream too (qemu+tls protects only libvirt's own connection)."""
    tls = [f'migrate_tls_x509_cert_dir = "{tls_dir}"', "migrate_tls_x509_verify = 1"] if tls_dir else []
    return "\n".join([
        *tls,
        'user = "root"',
        'group = "root"',
        "dynamic_ownership = 0",
        "remember_owner = 0",
        'security_driver = "none"',
        "cgroup_controllers = [ ]",     # `ip netns exec` remounts /sys: no cgroupfs in there
        'stdio_handler = "file"',       # no virtlogd
        "namespaces = [ ]",
        f'migration_address = "{node.address}"',
        f'migration_host = "{node.address}"',   # every node has the same UTS hostname
        "",
    ])


def prepare(plan: LabPlan, node: NodePlan) -> None:
    """Write the node's private libvirt tree (config copied from the host's /etc/libvirt)."""
    base = node.libvirt_dir
    longest = socket_dir(node) / "libvirt-admin-sock"
    if len(str(longest).encode()) > SOCKET_PATH_MAX:
        raise proc.LabError(f"libvirt socket path too long ({len(str(longest))} > {SOCKET_PATH_MAX} "
                            f"bytes): {longest}; use a shorter lab state directory")
    for sub in (*PRIVATE_DIRS, "sock"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    etc = base / "etc"
    shutil.rmtree(etc)
    shutil.copytree("/etc/libvirt", etc, symlinks=True)
    shutil.rmtree(etc / "qemu" / "networks" / "autostart", ignore_errors=True)
    (etc / "libvirtd.conf").write_text(libvirtd_conf(plan, node))
    (etc / "qemu.conf").write_text(qemu_conf(node, labtls.qemu_tls(plan, node)))
    for path in PRIVATE_DIRS.values():    # the mount points must exist on the host
        Path(path).mkdir(parents=True, exist_ok=True)
    plan.log_dir.mkdir(parents=True, exist_ok=True)


def start_libvirtd(plan: LabPlan, node: NodePlan) -> int:
    """Start the node's libvirtd in its namespace; return the pid (tini's).

    Needs the node's namespace (the TCP listener binds to the node address even before that
    address exists there). Idempotent: a running daemon is left alone. Call wait_libvirtd before using it.
    """
    running = proc.pid_of(pidfile(plan, node))
    if running is not None:
        return running
    prepare(plan, node)
    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", _MOUNT_AND_EXEC, "sh",
           str(node.libvirt_dir), "tini", "-s", "--", "libvirtd", "--listen",
           "--config", str(node.libvirt_dir / "etc" / "libvirtd.conf"),
           "--pid-file", str(node.libvirt_dir / "libvirtd.pid")]
    return proc.spawn(cmd, plan.log_dir / f"{node.name}-libvirtd.out", pidfile(plan, node),
                      netns=node.netns)


def _log_tail(plan: LabPlan, node: NodePlan) -> str:
    parts = []
    for path in (plan.log_dir / f"{node.name}-libvirtd.out", log_path(plan, node)):
        if path.exists():
            parts.append(path.read_text(errors="replace")[-1000:])
    return "\n".join(parts)


def wait_libvirtd(plan: LabPlan, node: NodePlan, timeout: float = 30) -> None:
    """Wait until the node's libvirtd answers on its unix socket."""
    pid_file = pidfile(plan, node)

    def ready() -> bool:
        if proc.pid_of(pid_file) is None:
            raise proc.LabError(f"libvirtd of {node.name} exited:\n{_log_tail(plan, node)}")
        if not (socket_dir(node) / "libvirt-sock").exists():
            return False
        try:
            conn = libvirt.open(node.libvirt_uri)
        except libvirt.libvirtError:
            return False
        try:
            return conn.getLibVersion() > 0
        finally:
            conn.close()

    proc.wait_until(ready, timeout, f"libvirtd of {node.name}", interval=0.05)


def _qemu_processes(node: NodePlan) -> dict[int, str]:
    """qemu processes running in the node's namespace: pid -> domain name."""
    found = {}
    for pid in netns_pids(node.netns):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not comm.startswith("qemu-system"):
            continue
        name = "?"
        for flag, value in itertools.pairwise(args):
            if flag == b"-name":
                name = value.decode(errors="replace").split(",")[0].removeprefix("guest=")
        found[pid] = name
    return found


def _destroy_through_libvirt(node: NodePlan, destroyed: list[str]) -> None:
    conn = libvirt.open(node.libvirt_uri)
    try:
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                dom.destroy()
                destroyed.append(dom.name())
            except libvirt.libvirtError:
                if dom.isActive():
                    raise
    finally:
        conn.close()


def kill_domains(plan: LabPlan, node: NodePlan, timeout: float = 15) -> list[str]:
    """Destroy every running domain of the node; return their names.

    Used by the lab fence agent, so it must work when the node's libvirtd is dead or hung: libvirt
    is asked first (in a thread, bounded by `timeout`), then any qemu left in the node's namespace
    is SIGKILLed.
    """
    destroyed: list[str] = []
    if proc.pid_of(pidfile(plan, node)) is not None and (socket_dir(node) / "libvirt-sock").exists():
        worker = threading.Thread(target=_destroy_through_libvirt, args=(node, destroyed), daemon=True)
        worker.start()
        worker.join(timeout)
    leftovers = _qemu_processes(node)
    for pid, name in leftovers.items():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        if name not in destroyed:
            destroyed.append(name)
    if leftovers:
        proc.wait_until(lambda: not any(proc.alive(p) for p in leftovers), 10,
                        f"qemu of {node.name} to die")
    return destroyed


def stop_libvirtd(plan: LabPlan, node: NodePlan, timeout: float = 15) -> None:
    """Destroy the node's domains, then stop its libvirtd (stopping libvirtd leaves qemu running)."""
    kill_domains(plan, node)
    proc.stop(pidfile(plan, node), timeout=timeout)

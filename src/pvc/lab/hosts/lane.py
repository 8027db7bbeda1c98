"""The real-host lane: Debian 12 containers booted with systemd as PID 1, cabled like servers.

Layout (everything in network namespaces; no address is ever added to the root namespace):

    pvch-sw   the "switch room": bridges br-cluster (10.210.0.0/24), br-storage (10.212.0.0/24)
              and br-upstream (10.211.0.0/24). It also plays the administrator's workstation
              (10.210.0.254 on the cluster network: Ansible and `pvc` run here) and the upstream
              router (10.211.0.254); the apt proxy listens on 10.210.0.254:3142.
    pvch-hvN  host N's own namespace: eth0 cluster 10.210.0.N, eth1 storage 10.212.0.N,
              eth2 upstream 10.211.0.N (default route via the router), veths into the bridges.

Each host is `systemd-nspawn --register=no --keep-unit -b` on an overlay of the cached cluster
image (pvc.lab.hosts.image), inside its namespace, with all capabilities, /dev/net/tun and its OSD
"disks" (loop devices over sparse files) bound in. A small supervisor restarts nspawn when the
container reboots (exit status 133), as systemd-nspawn@.service does on a systemd host; the host
here has no systemd. The controller reaches the hosts over SSH with a key made per lane.

State: PVC_HOSTS_DIR (/var/lib/pvc-hosts): ssh/, hosts/<name>/{upper,work,root}, disks/, pids/,
logs/, inventory/. `down` removes all of it and every namespace, loop device and mount.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pvc.lab import proc
from pvc.lab.hosts import image
from pvc.lab.proc import LabError

STATE_DIR = Path(os.environ.get("PVC_HOSTS_DIR", "/var/lib/pvc-hosts"))
PREFIX = "pvch"
SWITCH = f"{PREFIX}-sw"
NETWORKS = {  # name: (bridge, subnet, host interface, switch-side address, mtu)
    "cluster": ("br-cluster", "10.210.0", "eth0", 254, 1550),
    "storage": ("br-storage", "10.212.0", "eth1", 254, 1500),
    "upstream": ("br-upstream", "10.211.0", "eth2", 254, 1500),
}
CONTROLLER = "10.210.0.254"
ROUTER = "10.211.0.254"
APT_PROXY_PORT = 3142
OSD_DISK_BYTES = 6 << 30  # sparse
OSDS_PER_HOST = 1
REBOOT_EXIT = 133  # systemd-nspawn's status when the container asked to reboot
REPO = Path(__file__).resolve().parents[4]
ANSIBLE_DIR = REPO / "deploy" / "ansible"


@dataclass(frozen=True)
class Host:
    name: str
    index: int

    @property
    def netns(self) -> str:
        return f"{PREFIX}-{self.name}"

    def address(self, network: str = "cluster") -> str:
        return f"{NETWORKS[network][1]}.{self.index}"

    @property
    def dir(self) -> Path:
        return STATE_DIR / "hosts" / self.name

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def pidfile(self) -> Path:
        return STATE_DIR / "pids" / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return STATE_DIR / "logs" / f"{self.name}.console.log"


def host(name: str) -> Host:
    if not name.startswith("hv") or not name[2:].isdigit() or not 1 <= int(name[2:]) <= 9:
        raise LabError(f"lane host names are hv1 .. hv9, not {name!r}")
    return Host(name, int(name[2:]))


def hosts(count: int) -> list[Host]:
    return [host(f"hv{i}") for i in range(1, count + 1)]


def _run(cmd: list[str], netns: str | None = None, check: bool = True, timeout: float = 120) -> str:
    return proc.run(cmd, netns=netns, check=check, timeout=timeout).stdout


def _netns_exists(name: str) -> bool:
    return (proc.NETNS_DIR / name).exists()


def _links(netns: str) -> set[str]:
    return {link["ifname"] for link in json.loads(_run(["ip", "-n", netns, "-j", "link", "show"]) or "[]")}


# -- network ------------------------------------------------------------------------------------


def _switch() -> None:
    if not _netns_exists(SWITCH):
        _run(["ip", "netns", "add", SWITCH])
    _run(["ip", "-n", SWITCH, "link", "set", "lo", "up"])
    have = _links(SWITCH)
    for bridge, subnet, _iface, mine, mtu in NETWORKS.values():
        if bridge not in have:
            _run(
                [
                    "ip",
                    "-n",
                    SWITCH,
                    "link",
                    "add",
                    bridge,
                    "mtu",
                    str(mtu),
                    "type",
                    "bridge",
                    "stp_state",
                    "0",
                    "forward_delay",
                    "0",
                ]
            )
        _run(["ip", "-n", SWITCH, "addr", "replace", f"{subnet}.{mine}/24", "dev", bridge])
        _run(["ip", "-n", SWITCH, "link", "set", bridge, "up"])


def _cable(h: Host) -> None:
    if not _netns_exists(h.netns):
        _run(["ip", "netns", "add", h.netns])
    _run(["ip", "-n", h.netns, "link", "set", "lo", "up"])
    for network, (bridge, _subnet, iface, _mine, mtu) in NETWORKS.items():
        port = f"{h.name}-{network[0]}"
        if port not in _links(SWITCH):
            _run(
                [
                    "ip",
                    "-n",
                    SWITCH,
                    "link",
                    "add",
                    port,
                    "mtu",
                    str(mtu),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    iface,
                    "mtu",
                    str(mtu),
                    "netns",
                    h.netns,
                ]
            )
        _run(["ip", "-n", SWITCH, "link", "set", port, "master", bridge, "up"])
        _run(["ip", "-n", h.netns, "addr", "replace", f"{h.address(network)}/24", "dev", iface])
        _run(["ip", "-n", h.netns, "link", "set", iface, "up"])
    _run(["ip", "-n", h.netns, "route", "replace", "default", "via", ROUTER])


# -- disks and root file systems ------------------------------------------------------------------


def _disk_files(h: Host) -> list[Path]:
    return [STATE_DIR / "disks" / f"{h.name}-osd{i}.img" for i in range(OSDS_PER_HOST)]


def _loop_of(path: Path) -> str | None:
    out = _run(["losetup", "-j", str(path), "-O", "NAME", "-n"], check=False).strip()
    return out.splitlines()[0].strip() if out else None


def _attach_disks(h: Host) -> list[str]:
    devices = []
    for path in _disk_files(h):
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            with open(path, "wb") as f:
                f.truncate(OSD_DISK_BYTES)
        devices.append(_loop_of(path) or _run(["losetup", "--find", "--show", str(path)]).strip())
    return devices


def _mount_root(h: Host, lower: Path) -> None:
    for sub in ("upper", "work", "root"):
        (h.dir / sub).mkdir(parents=True, exist_ok=True)
    if os.path.ismount(h.root):
        return
    _run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={lower},upperdir={h.dir / 'upper'},workdir={h.dir / 'work'}",
            str(h.root),
        ]
    )


def _personalise(h: Host, public_key: str, all_hosts: list[Host]) -> None:
    """What the installer of a real server leaves: hostname, machine id, root's SSH key, the
    site's apt proxy. Addresses are set from outside, on the namespace's interfaces."""
    root = h.root
    (root / "etc/hostname").write_text(f"{h.name}\n")
    machine_id = root / "etc/machine-id"
    if not machine_id.read_text().strip():
        machine_id.write_text(uuid.uuid4().hex + "\n")
    hosts_lines = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        *(f"{o.address()}\t{o.name}" for o in all_hosts),
    ]
    (root / "etc/hosts").write_text("\n".join(hosts_lines) + "\n")
    ssh = root / "root/.ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh / "authorized_keys").write_text(public_key)
    (ssh / "authorized_keys").chmod(0o600)
    (root / "etc/apt/apt.conf.d/01pvc-lane-proxy").write_text(
        f'Acquire::http::Proxy "http://{CONTROLLER}:{APT_PROXY_PORT}";\n'
    )
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink():
        resolv.unlink()
    resolv.write_text("# the lane has no DNS: names are in /etc/hosts, apt goes through the proxy\n")


def _ssh_key() -> tuple[Path, str]:
    key = STATE_DIR / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pvc-lane", "-f", str(key)])
    return key, key.with_suffix(".pub").read_text()


# -- containers -----------------------------------------------------------------------------------


def nspawn_argv(h: Host, devices: list[str]) -> list[str]:
    argv = [
        "systemd-nspawn",
        "--register=no",
        "--keep-unit",
        "--boot",
        "--quiet",
        "-D",
        str(h.root),
        f"--machine={h.name}",
        f"--network-namespace-path={proc.NETNS_DIR / h.netns}",
        # all a server's root has, but the machine's clock and kernel modules: they are
        # the development machine's, not the container's
        "--capability=all",
        "--drop-capability=CAP_SYS_TIME,CAP_SYS_MODULE",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "--console=read-only",
        "--bind=/dev/net/tun",
        "--bind=/dev/loop-control",
    ]
    argv += [f"--bind={d}" for d in devices]
    return argv


CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "pvc-lane"
V1_MOUNTS = {"name=systemd": "systemd"}


def _cgroup_dirs(name: str) -> list[Path]:
    """Where this host's cgroups go: `pvc-lane/<name>` below this process's own cgroup in every
    hierarchy (never above it: whatever placed this process keeps accounting for it)."""
    found = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        if controllers == "":
            mount = CGROUP_ROOT if (CGROUP_ROOT / "cgroup.procs").exists() else CGROUP_ROOT / "unified"
        else:
            mount = CGROUP_ROOT / V1_MOUNTS.get(controllers, controllers)
        if (mount / "cgroup.procs").exists():
            found.append(mount / path.lstrip("/") / CGROUP_PARENT / name)
    return found


def _cgroup_record(name: str) -> Path:
    return STATE_DIR / "pids" / f"{name}.cgroups"


def enter_own_cgroup(name: str) -> None:
    """Move this process into its own cgroup in every hierarchy.

    With no systemd on the machine, nspawn --keep-unit runs the container in whatever cgroup it
    was started in: without this, three containers' systemds would share (and clean up) one
    cgroup tree, each able to kill the others' services."""
    directories = _cgroup_dirs(name)
    _cgroup_record(name).write_text("\n".join(map(str, directories)) + "\n")
    for directory in directories:
        for level in (directory.parent, directory):
            level.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):  # an empty cpuset admits no task
                if (level / knob).exists() and not (level / knob).read_text().strip():
                    (level / knob).write_text((level.parent / knob).read_text())
        (directory / "cgroup.procs").write_text(f"{os.getpid()}\n")


def remove_cgroups(name: str) -> None:
    """Remove a stopped host's cgroups, deepest first (nspawn and systemd leave sub-groups)."""
    record = _cgroup_record(name)
    if not record.exists():
        return
    for directory in map(Path, record.read_text().split()):
        if directory.is_dir():
            for sub in sorted((p for p in directory.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            directory.parent.rmdir()
    record.unlink()


def supervise(name: str, argv: list[str]) -> int:
    """Run nspawn in the host's own cgroups; start it again whenever the container rebooted;
    return its last status."""
    child: subprocess.Popen[bytes] | None = None
    enter_own_cgroup(name)

    def forward(signum: int, _frame: Any) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, forward)
    while True:
        print(f"== {time.strftime('%H:%M:%S')} booting {name}", flush=True)
        child = subprocess.Popen(argv)
        status = child.wait()
        print(f"== {time.strftime('%H:%M:%S')} {name} exited with {status}", flush=True)
        if status != REBOOT_EXIT:
            return status


def _start(h: Host, devices: list[str]) -> None:
    if proc.pid_of(h.pidfile) is not None:
        return
    argv = nspawn_argv(h, devices)
    # /proc/sys/net writable (the host's own namespace: forwarding, bridge and VXLAN settings),
    # the rest of /proc/sys and /sys stay read-only: they are the development machine's kernel
    env = {"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
    proc.spawn([sys.executable, "-m", "pvc.lab.hosts", "supervise", h.name, "--", *argv], h.log, h.pidfile,
               env=env)


def _stop(h: Host, timeout: float = 60) -> None:
    """Power the container off (SIGTERM to nspawn asks its systemd to halt), then kill."""
    pid = proc.pid_of(h.pidfile)
    if pid is None:
        return
    nspawn = [int(p) for p in _run(["pgrep", "-P", str(pid)], check=False).split()]
    for target in nspawn or [pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(proc.alive(p) for p in [pid, *nspawn]):
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # the supervisor's session: nspawn and its container
    h.pidfile.unlink(missing_ok=True)


def _reachable(h: Host) -> bool:
    def probe() -> bool:
        try:
            with socket.create_connection((h.address(), 22), timeout=1) as sock:
                return sock.recv(4).startswith(b"SSH")
        except OSError:
            return False

    return bool(proc.netns_call(SWITCH, probe, timeout=10))


def ssh_argv(h: Host | str, *command: str) -> list[str]:
    """ssh to a lane host as root, from the switch namespace (the administrator's seat)."""
    target = host(h) if isinstance(h, str) else h
    key, _pub = _ssh_key()
    return [
        "ip",
        "netns",
        "exec",
        SWITCH,
        "ssh",
        "-i",
        str(key),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "BatchMode=yes",
        f"root@{target.address()}",
        *command,
    ]


def ssh(h: Host | str, *command: str, check: bool = True, timeout: float = 120) -> str:
    """`command` runs on the host as this argv: ssh hands the remote shell one joined line, so each
    word is quoted for it (a "${Version}" reaches dpkg-query as written)."""
    quoted = [shlex.quote(word) for word in command]
    result = subprocess.run(ssh_argv(h, *quoted), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise LabError(
            f"ssh {h if isinstance(h, str) else h.name} {' '.join(command)} failed "
            f"({result.returncode}): {(result.stderr or result.stdout).strip()[-800:]}"
        )
    return result.stdout


def _wait_booted(h: Host, timeout: float = 180) -> None:
    proc.wait_until(lambda: _reachable(h), timeout, f"{h.name}: SSH")
    proc.wait_until(
        lambda: ssh(h, "systemctl", "is-system-running", check=False).strip() in ("running", "degraded"),
        timeout,
        f"{h.name}: systemd reaching multi-user",
    )


def _start_proxy() -> None:
    pidfile = STATE_DIR / "pids" / "aptproxy.pid"
    if proc.pid_of(pidfile) is None:
        proc.spawn(
            [
                sys.executable,
                "-m",
                "pvc.lab.hosts.aptproxy",
                "--netns",
                SWITCH,
                "--listen",
                f"{CONTROLLER}:{APT_PROXY_PORT}",
                "--cache",
                str(image.CACHE_DIR / "apt"),
            ],
            STATE_DIR / "logs" / "aptproxy.log",
            pidfile,
        )


# -- the lane -------------------------------------------------------------------------------------


def _state() -> dict[str, Any]:
    path = STATE_DIR / "lane.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(state: dict[str, Any]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    (STATE_DIR / "lane.json").write_text(json.dumps(state, indent=1))


def lane_hosts() -> list[Host]:
    return [host(n) for n in _state().get("hosts", [])]


def boot_host(h: Host, lower: Path, all_hosts: list[Host]) -> None:
    """Cable, disk, root file system and boot one host (used by `up` and to add a node)."""
    _, public_key = _ssh_key()
    _cable(h)
    devices = _attach_disks(h)
    _mount_root(h, lower)
    if proc.pid_of(h.pidfile) is None:  # a running host keeps what it has
        _personalise(h, public_key, all_hosts)
    _start(h, devices)
    state = _state()
    state.setdefault("disks", {})[h.name] = devices
    state["hosts"] = sorted({*state.get("hosts", []), h.name}, key=lambda n: int(n[2:]))
    _save_state(state)


def up(count: int = 3, extra_packages: list[str] | None = None) -> dict[str, float]:
    """Bring the lane up (idempotent); returns seconds per phase."""
    if os.geteuid() != 0:
        raise LabError("the lane needs root (namespaces, mounts, loop devices)")
    marks: dict[str, float] = {}
    t = time.monotonic()
    lower = image.cluster_image(extra_packages or [])
    marks["image"] = time.monotonic() - t
    state = _state()
    state.update({"image": str(lower), "planned": count})
    _save_state(state)
    t = time.monotonic()
    _switch()
    _start_proxy()
    all_hosts = hosts(count)
    for h in all_hosts:
        boot_host(h, lower, all_hosts)
    for h in all_hosts:
        _wait_booted(h)
    marks["boot"] = time.monotonic() - t
    return marks


def add_host(name: str) -> Host:
    """Boot one more host on the running lane (the add-node playbook then installs it)."""
    state = _state()
    if not state.get("image"):
        raise LabError("the lane is not up")
    new = host(name)
    all_hosts = [*lane_hosts(), new]
    for h in lane_hosts():  # every host learns the newcomer's name
        hosts_file = h.root / "etc/hosts"
        hosts_file.write_text(hosts_file.read_text() + f"{new.address()}\t{new.name}\n")
    boot_host(new, Path(state["image"]), all_hosts)
    _wait_booted(new)
    return new


def _kill_netns_processes(netns: str) -> int:
    """SIGKILL every process in the network namespace; how many there were."""
    if not _netns_exists(netns):
        return 0
    killed = 0
    for pid in _run(["ip", "netns", "pids", netns], check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
            killed += 1
    return killed


def power_off(h: Host) -> None:
    """Pull the plug: the container and everything in it die at once. nspawn dying does not take
    the container with it (its init and services run on, orphaned, in the host's namespace: a
    reinstalled host's sshd could not bind and the old one answered for it), so every process
    in the host's network namespace is killed too."""
    pid = proc.pid_of(h.pidfile)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        proc.wait_until(lambda: not proc.alive(pid), 30, f"{h.name} powered off")
    proc.wait_until(lambda: _kill_netns_processes(h.netns) == 0, 30, f"{h.name}'s processes gone")
    h.pidfile.unlink(missing_ok=True)


def reinstall_host(h: Host) -> None:
    """A lost host's replacement: same name, addresses and cabling, an empty root file system
    (a fresh Debian 12 install from the image) and a new, empty OSD disk."""
    power_off(h)
    remove_cgroups(h.name)
    if os.path.ismount(h.root):
        _run(["umount", str(h.root)])
    for sub in ("upper", "work"):
        shutil.rmtree(h.dir / sub, ignore_errors=True)
    for path in _disk_files(h):
        while (loop := _loop_of(path)) is not None:
            _run(["losetup", "-d", loop], check=False)
            if _loop_of(path) == loop:
                break
        path.unlink(missing_ok=True)
    boot_host(h, Path(_state()["image"]), lane_hosts())
    _wait_booted(h)


def remove_host(name: str) -> None:
    """Power one host off and remove its traces (after the remove-node playbook)."""
    h = host(name)
    _stop(h)
    _teardown_host(h)
    state = _state()
    state["hosts"] = [n for n in state.get("hosts", []) if n != name]
    state.get("disks", {}).pop(name, None)
    _save_state(state)


def _teardown_host(h: Host) -> None:
    remove_cgroups(h.name)
    if os.path.ismount(h.root):
        _run(["umount", "-l", str(h.root)], check=False)
    for path in _disk_files(h):
        while (loop := _loop_of(path)) is not None:
            _run(["losetup", "-d", loop], check=False)
            if _loop_of(path) == loop:
                break
        path.unlink(missing_ok=True)
    if _netns_exists(h.netns):
        _kill_netns_processes(h.netns)
        _run(["ip", "netns", "delete", h.netns], check=False)
    for port in ("c", "s", "u"):
        _run(["ip", "-n", SWITCH, "link", "delete", f"{h.name}-{port}"], check=False)
    shutil.rmtree(h.dir, ignore_errors=True)


def down() -> list[str]:
    """Remove every trace of the lane; returns what was removed."""
    removed = []
    names = {h.name for h in lane_hosts()}
    if (STATE_DIR / "hosts").is_dir():
        names |= {p.name for p in (STATE_DIR / "hosts").iterdir()}
    names |= {n.name[len(PREFIX) + 1 :] for n in proc.NETNS_DIR.glob(f"{PREFIX}-hv*")}
    found = []
    for name in sorted(names):
        with contextlib.suppress(LabError):
            found.append(host(name))

    def halt(h: Host) -> None:
        with contextlib.suppress(LabError):
            _stop(h, timeout=30)

    # all halt at once: one by one, each could take its full 30 s
    with ThreadPoolExecutor(max_workers=max(1, len(found))) as pool:
        list(pool.map(halt, found))
    for h in found:
        with contextlib.suppress(LabError):
            _teardown_host(h)
            removed.append(h.name)
    proc.stop(STATE_DIR / "pids" / "aptproxy.pid", timeout=5, kill=True)
    if _netns_exists(SWITCH):
        for pid in _run(["ip", "netns", "pids", SWITCH], check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _run(["ip", "netns", "delete", SWITCH], check=False)
        removed.append(SWITCH)
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    return removed


def status() -> dict[str, Any]:
    out: dict[str, Any] = {"state_dir": str(STATE_DIR), "image": _state().get("image"), "hosts": {}}
    for h in lane_hosts():
        running = proc.pid_of(h.pidfile) is not None
        info: dict[str, Any] = {
            "address": h.address(),
            "running": running,
            "disks": _state().get("disks", {}).get(h.name, []),
        }
        if running and _reachable(h):
            info["systemd"] = ssh(h, "systemctl", "is-system-running", check=False).strip()
        out["hosts"][h.name] = info
    return out


# -- Ansible --------------------------------------------------------------------------------------


def inventory(deb_dir: Path | None = None, names: list[str] | None = None) -> Path:
    """The lane's inventory: the example inventory's layout with the lane's addresses, disks and
    the settings a container needs (each says why in deploy/ansible/inventory/lane)."""
    key, _pub = _ssh_key()
    state = _state()
    members = [host(n) for n in (names or state.get("hosts", []))]
    coordinators = [h.name for h in members][:3]
    host_vars = {}
    for h in members:
        host_vars[h.name] = {
            "ansible_host": h.address(),
            "pvc_cluster_address": h.address("cluster"),
            "pvc_storage_address": h.address("storage"),
            "pvc_upstream_address": h.address("upstream"),
            "pvc_osd_devices": state.get("disks", {}).get(h.name, []),
        }
    inv = {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(key),
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                "-o LogLevel=ERROR",
            },
            "children": {
                "pvc": {
                    "children": {
                        "pvc_coordinators": {"hosts": {n: host_vars[n] for n in coordinators}},
                        "pvc_hypervisors": {
                            "hosts": {
                                h.name: host_vars[h.name] for h in members if h.name not in coordinators
                            }
                        },
                    }
                },
            },
        }
    }
    directory = STATE_DIR / "inventory"
    (directory / "group_vars").mkdir(parents=True, exist_ok=True)
    (directory / "hosts.yml").write_text(yaml.safe_dump(inv, sort_keys=False))
    lane_vars = yaml.safe_load((ANSIBLE_DIR / "inventory" / "lane" / "group_vars" / "all.yml").read_text())
    lane_vars["pvc_secrets_dir"] = str(directory / "secrets")
    lane_vars["pvc_admin_client_dir"] = str(directory / "client")
    if deb_dir is not None:
        lane_vars["pvc_deb_dir"] = str(deb_dir)
    (directory / "group_vars" / "all.yml").write_text(yaml.safe_dump(lane_vars, sort_keys=False))
    return directory / "hosts.yml"


@dataclass
class PlaybookRun:
    playbook: str
    returncode: int
    seconds: float
    recap: dict[str, dict[str, int]]
    log: Path

    @property
    def changed(self) -> int:
        return sum(r.get("changed", 0) for r in self.recap.values())

    @property
    def failed(self) -> int:
        return sum(r.get("failed", 0) + r.get("unreachable", 0) for r in self.recap.values())


def parse_recap(text: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines: `hv1 : ok=12 changed=0 unreachable=0 failed=0 ...` per host."""
    recap: dict[str, dict[str, int]] = {}
    started = False
    for line in text.splitlines():
        if line.startswith("PLAY RECAP"):
            started, recap = True, {}
            continue
        if started and " : " in line:
            name, _, counts = line.partition(" : ")
            recap[name.strip()] = {
                k: int(v) for k, v in (item.split("=", 1) for item in counts.split() if "=" in item)
            }
    return recap


def playbook(
    name: str,
    inventory_file: Path,
    extra_vars: dict[str, Any] | None = None,
    limit: str | None = None,
    timeout: float = 3600,
) -> PlaybookRun:
    """Run deploy/ansible/<name> from the administrator's seat; the log is kept per run."""
    logs = STATE_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"ansible-{time.strftime('%H%M%S')}-{Path(name).stem}.log"
    argv = [
        "ip",
        "netns",
        "exec",
        SWITCH,
        "ansible-playbook",
        "-i",
        str(inventory_file),
        str(ANSIBLE_DIR / name),
    ]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    if limit:
        argv += ["--limit", limit]
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
    }
    started = time.monotonic()
    with open(log, "w") as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    text = log.read_text()
    return PlaybookRun(name, result.returncode, time.monotonic() - started, parse_recap(text), log)

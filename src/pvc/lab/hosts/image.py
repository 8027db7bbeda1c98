"""The lane's Debian 12 root file systems, built once and cached.

Two layers, each a plain directory under the cache (`PVC_HOSTS_CACHE`, /var/cache/pvc-hosts):

- `bookworm-base`: `debootstrap --variant=minbase bookworm` plus what makes it a bootable,
  reachable host (systemd as PID 1, dbus, OpenSSH, Python for Ansible). Other lanes may reuse it.
- `bookworm-cluster-<key>`: the base plus the Debian packages a PVC node runs (ZooKeeper, Ceph,
  FRR, libvirt/QEMU, ...) and the dependencies of the built PVC packages. The playbook installs
  the same packages on a bare server; here they are already present, so a lane run spends its
  minutes on configuring a cluster, not unpacking QEMU three times. `<key>` is a digest of the
  package list: a new dependency makes a new layer.

Hosts boot from an overlay of the cluster layer (pvc.lab.hosts.lane), so the layers stay pristine.
Packages are installed with `systemd-nspawn` in its non-booting mode (the host's network, /proc
and /dev set up for maintainer scripts); nothing is started inside.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from pvc.lab.proc import LabError

CACHE_DIR = Path(os.environ.get("PVC_HOSTS_CACHE", "/var/cache/pvc-hosts"))
MIRROR = os.environ.get("PVC_HOSTS_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"

# What a booted, reachable host needs (debootstrap --include).
BASE_PACKAGES = ("systemd-sysv", "dbus", "openssh-server", "python3", "python3-apt", "iproute2",
                 "iputils-ping", "procps", "less", "ca-certificates", "sudo", "kmod", "udev")

# What a PVC node runs besides PVC itself; the playbook's roles name the same packages.
CLUSTER_PACKAGES = (
    "zookeeper", "zookeeperd", "default-jre-headless",
    "ceph-mon", "ceph-mgr", "ceph-osd", "ceph-common", "python3-rados", "python3-rbd",
    "frr",
    "libvirt-daemon-system", "libvirt-clients", "libvirt-daemon-driver-qemu", "python3-libvirt",
    "qemu-system-x86", "qemu-utils", "qemu-block-extra",
    "dnsmasq-base", "nftables", "bridge-utils", "chrony", "ipmitool", "lvm2", "gdisk", "parted",
    "fio", "psmisc", "e2fsprogs", "openssl", "python3-yaml",
)

SOURCES = f"""deb {MIRROR} {SUITE} main
deb {MIRROR} {SUITE}-updates main
deb {MIRROR.rsplit('/', 1)[0]}/debian-security {SUITE}-security main
"""


def _run(cmd: list[str], what: str, timeout: float = 1800) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-25:]
        raise LabError(f"{what} failed ({result.returncode}):\n" + "\n".join(tail))


def nspawn_run(root: Path, script: str, what: str, timeout: float = 1800) -> None:
    """Run a shell script inside `root` (not booted; the host's network) as root."""
    _run(["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "-D", str(root),
          "--setenv=DEBIAN_FRONTEND=noninteractive", "/bin/sh", "-ec", script], what, timeout)


def _copy_tree(source: Path, target: Path) -> None:
    _run(["cp", "-a", "--reflink=auto", str(source), str(target)], f"copy {source} to {target}")


def _key(packages: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(set(packages))).encode()).hexdigest()[:12]


class _Lock:
    """One builder per cache at a time (another lane or H7's package test may build too)."""

    def __init__(self, name: str) -> None:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        self.path = CACHE_DIR / f".{name}.lock"

    def __enter__(self) -> _Lock:
        self.handle = open(self.path, "w")  # held until __exit__
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def _finish_base(root: Path) -> None:
    """What every lane host shares: sources, no first-boot surprises, key-only root SSH."""
    (root / "etc/apt/sources.list").write_text(SOURCES)
    (root / "etc/machine-id").write_text("")            # each host gets its own (lane.py)
    dropin = root / "etc/ssh/sshd_config.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "pvc-lane.conf").write_text("PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                                          "UseDNS no\n")
    for unit in ("systemd-networkd-wait-online.service", "systemd-timesyncd.service",
                 "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer"):
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


def base_image() -> Path:
    """`bookworm-base`, debootstrapped on first use (~30 s plus the packages)."""
    target = CACHE_DIR / f"{SUITE}-base"
    stamp = target / ".pvc-image"
    want = _key(BASE_PACKAGES)
    with _Lock("base"):
        if stamp.exists() and stamp.read_text().strip() == want:
            return target
        work = CACHE_DIR / f".{SUITE}-base.tmp"
        shutil.rmtree(work, ignore_errors=True)
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE,
              str(work), MIRROR], "debootstrap")
        _finish_base(work)
        nspawn_run(work, "apt-get update -qq && apt-get clean", "apt-get update in the base image")
        (work / ".pvc-image").write_text(want + "\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(work, target)
        return target


def cluster_image(extra_packages: Iterable[str] = ()) -> Path:
    """The base plus CLUSTER_PACKAGES and `extra_packages` (the PVC packages' dependencies)."""
    packages = sorted(set(CLUSTER_PACKAGES) | set(extra_packages))
    key = _key(packages)
    target = CACHE_DIR / f"{SUITE}-cluster-{key}"
    base = base_image()
    with _Lock("cluster"):
        if (target / ".pvc-image").exists():
            return target
        work = CACHE_DIR / f".{SUITE}-cluster-{key}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        _copy_tree(base, work)
        started = time.monotonic()
        nspawn_run(work, "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d; "
                         "chmod +x /usr/sbin/policy-rc.d; apt-get update -qq; "
                         f"apt-get install -y -qq --no-install-recommends {' '.join(packages)}; "
                         "apt-get clean; rm -f /usr/sbin/policy-rc.d",
                   "installing the cluster packages into the image")
        took = f"{time.monotonic() - started:.0f}s"
        (work / ".pvc-image").write_text(f"{key} {took}\n" + "\n".join(packages) + "\n")
        os.replace(work, target)
        for old in CACHE_DIR.glob(f"{SUITE}-cluster-*"):     # keep the cache to one such layer
            if old != target and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        return target


def deb_dependencies(debs: Iterable[Path]) -> list[str]:
    """The Debian packages the built PVC packages depend on (first alternative of each, without
    versions, PVC's own packages and virtual ${...} leftovers removed)."""
    names: set[str] = set()
    own: set[str] = set()
    for deb in debs:
        fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Depends", "Pre-Depends"],
                                capture_output=True, text=True, check=True).stdout
        for line in fields.splitlines():
            key, _, value = line.partition(":")
            if key == "Package":
                own.add(value.strip())
                continue
            for item in value.split(","):
                first = item.split("|")[0].strip().split(" ")[0].split(":")[0]
                if first and not first.startswith("$"):
                    names.add(first)
    return sorted(names - own)

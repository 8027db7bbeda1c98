"""Test doubles: a synthetic sysfs tree laid out as the kernel does, and a recording netlink."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RecordingNetlink:
    """Netlink seam that records each `set_vf(pf, spec)` and fails when told to."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail: str | None = None

    def set_vf(self, pf: str, spec: dict[str, Any]) -> None:
        if self.fail:
            from pvc.adapters.sriov.base import SriovError
            raise SriovError(f"PF {pf} VF {spec.get('vf')}: {self.fail}")
        self.calls.append((pf, dict(spec)))


def build_sysfs(root: str | Path, pfs: dict[str, dict[str, Any]], vfio: tuple[str, ...] = ()) -> Path:
    """A sysfs tree under root: pfs maps a PF name to {bus, totalvfs, numvfs, mtu, mac}.

    As the kernel: class/net/<dev> is a symlink into devices/, the PF's `device` a symlink to its
    PCI function, virtfn<N> symlinks to the VFs' functions (bus:02.0 onwards), each with net/<pf>v<N>
    unless its name is in vfio (bound to vfio-pci: no netdev). Returns the root.
    """
    root = Path(root)
    (root / "class" / "net").mkdir(parents=True, exist_ok=True)
    for number, (phy, spec) in enumerate(sorted(pfs.items())):
        bus = spec.get("bus", f"{0x3b + number:02x}")
        pci = root / "devices" / "pci0000:00" / f"0000:{bus}:00.0"
        (pci / "net" / phy).mkdir(parents=True, exist_ok=True)
        (pci / "sriov_totalvfs").write_text(f"{spec.get('totalvfs', 8)}\n")
        numvfs = int(spec.get("numvfs", 0))
        (pci / "sriov_numvfs").write_text(f"{numvfs}\n")
        mtu = int(spec.get("mtu", 1500))
        _netdev(pci / "net" / phy, mtu, spec.get("mac", f"52:54:00:00:{number:02x}:ff"))
        (pci / "net" / phy / "device").symlink_to(f"../../../0000:{bus}:00.0")
        (root / "class" / "net" / phy).symlink_to(f"../../devices/pci0000:00/0000:{bus}:00.0/net/{phy}")
        add_vfs(root, phy, numvfs, vfio)
    return root


def add_vfs(root: str | Path, phy: str, count: int, vfio: tuple[str, ...] = ()) -> None:
    """Make the tree show `count` VFs of phy, as writing sriov_numvfs does on a real host."""
    root = Path(root)
    device = (root / "class" / "net" / phy / "device").resolve()
    bus = device.name.split(":")[1]
    for link in device.glob("virtfn*"):
        link.unlink()
    for index in range(count):
        name = f"{phy}v{index}"
        vf = device.parent / f"0000:{bus}:{2 + index // 8:02x}.{index % 8}"
        vf.mkdir(exist_ok=True)
        (device / f"virtfn{index}").symlink_to(f"../{vf.name}")
        if name not in vfio and not (vf / "net" / name).exists():
            (vf / "net" / name).mkdir(parents=True)
            _netdev(vf / "net" / name, int((device / "net" / phy / "mtu").read_text()),
                    f"52:54:00:{int(bus, 16):02x}:02:{index:02x}")
            link = root / "class" / "net" / name
            if not link.exists():
                link.symlink_to(f"../../devices/pci0000:00/{vf.name}/net/{name}")
    (device / "sriov_numvfs").write_text(f"{count}\n")


def _netdev(path: Path, mtu: int, mac: str) -> None:
    (path / "mtu").write_text(f"{mtu}\n")
    (path / "address").write_text(f"{mac}\n")

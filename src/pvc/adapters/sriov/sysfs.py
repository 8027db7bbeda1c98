"""`SysfsSriov`: SR-IOV over sysfs (discovery, VF count, MTU) and netlink (VF settings).

The kernel's layout, which the synthetic trees of the tests copy:

    <root>/class/net/<pf>/device/sriov_totalvfs, sriov_numvfs   (the PF's PCI device)
    <root>/class/net/<pf>/device/virtfn<N> -> ../<vf pci address>
    <root>/class/net/<pf>/device/virtfn<N>/net/<vf netdev>/      (absent when bound to vfio-pci)
    <root>/class/net/<dev>/mtu, address
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Protocol

from pvc.adapters.sriov.base import (
    LINK_STATES,
    PciAddress,
    PhysicalFunction,
    SriovError,
    SriovHost,
    VFConfig,
    VirtualFunction,
)

_VIRTFN = re.compile(r"^virtfn(\d+)$")
_LINK_STATE_CODES = {"auto": 0, "enable": 1, "disable": 2}   # IFLA_VF_LINK_STATE_*


class Netlink(Protocol):
    """The seam for netlink: one `ip link set <pf> vf ...` message (pyroute2's vf spec)."""

    def set_vf(self, pf: str, spec: dict[str, Any]) -> None: ...


class PyrouteNetlink:
    """The real seam: pyroute2's IPRoute.link('set', index=<pf>, vf={...})."""

    def set_vf(self, pf: str, spec: dict[str, Any]) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=pf)
            if not found:
                raise SriovError(f"PF {pf}: no such network device")
            try:
                ipr.link("set", index=found[0], vf=dict(spec))
            except NetlinkError as exc:
                raise SriovError(f"PF {pf} VF {spec.get('vf')}: netlink refused {sorted(spec)}: "
                                 f"{exc}") from exc


def vf_spec(index: int, config: VFConfig, mac: str | None = None) -> dict[str, Any]:
    """pyroute2's vf={...} for a VF's settings: one IFLA_VF_INFO with every attribute."""
    if config.link_state not in LINK_STATES:
        raise SriovError(f"VF {index}: link_state '{config.link_state}' is not one of "
                         f"{', '.join(LINK_STATES)}")
    spec: dict[str, Any] = {
        "vf": index,
        "vlan": {"vlan": config.vlan_id, "qos": config.vlan_qos},
        "rate": {"min_tx_rate": config.tx_rate_min, "max_tx_rate": config.tx_rate_max},
        "spoofchk": int(config.spoof_check),
        "link_state": _LINK_STATE_CODES[config.link_state],
        "trust": int(config.trust),
        "rss_query_en": int(config.query_rss),
    }
    if mac:
        spec["mac"] = mac.lower()
    return spec


class SysfsSriov(SriovHost):
    def __init__(self, root: str | Path = "/sys", netlink: Netlink | None = None) -> None:
        self.root = Path(root)
        self.netlink: Netlink = netlink if netlink is not None else PyrouteNetlink()

    # -- reading -------------------------------------------------------------------------------

    def _net(self, dev: str) -> Path:
        if not dev or "/" in dev or dev in (".", ".."):
            raise SriovError(f"'{dev}' is not a network device name")
        return self.root / "class" / "net" / dev

    def _device(self, phy: str) -> Path:
        device = self._net(phy) / "device"
        if not (device / "sriov_totalvfs").is_file():
            if not self._net(phy).exists():
                raise SriovError(f"PF {phy}: no such network device")
            raise SriovError(f"PF {phy}: not SR-IOV capable (no sriov_totalvfs)")
        return device

    @staticmethod
    def _read(path: Path, what: str) -> str:
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise SriovError(f"{what}: cannot read {path}: {exc.strerror}") from exc

    def _int(self, path: Path, what: str) -> int:
        text = self._read(path, what)
        try:
            return int(text)
        except ValueError:
            raise SriovError(f"{what}: {path} holds '{text}', not a number") from None

    def pfs(self) -> list[PhysicalFunction]:
        base = self.root / "class" / "net"
        names = sorted(p.name for p in base.iterdir()) if base.is_dir() else []
        return [self.pf(n) for n in names if (base / n / "device" / "sriov_totalvfs").is_file()]

    def pf(self, phy: str) -> PhysicalFunction:
        device = self._device(phy)
        return PhysicalFunction(
            phy=phy, mtu=self._int(self._net(phy) / "mtu", f"PF {phy} mtu"),
            vfcount=self._int(device / "sriov_numvfs", f"PF {phy} sriov_numvfs"),
            totalvfs=self._int(device / "sriov_totalvfs", f"PF {phy} sriov_totalvfs"),
            vfs=tuple(vf.phy for vf in self.vfs(phy)))

    def _virtfns(self, device: Path) -> list[tuple[int, Path]]:
        found = [(int(m.group(1)), p) for p in device.iterdir() if (m := _VIRTFN.match(p.name))]
        return sorted(found)

    def vfs(self, phy: str) -> list[VirtualFunction]:
        device = self._device(phy)
        pf_mtu = self._int(self._net(phy) / "mtu", f"PF {phy} mtu")
        out = []
        for index, link in self._virtfns(device):
            pci = PciAddress.parse(link.resolve().name)
            nets = sorted(p.name for p in (link / "net").iterdir()) if (link / "net").is_dir() else []
            if nets:
                name = nets[0]
                mtu = self._int(link / "net" / name / "mtu", f"VF {name} mtu")
                mac = self._read(link / "net" / name / "address", f"VF {name} address").lower()
            else:
                name, mtu, mac = f"{phy}v{index}", pf_mtu, ""
            out.append(VirtualFunction(phy=name, pf=phy, index=index, mtu=mtu, mac=mac, pci=pci))
        return out

    # -- writing -------------------------------------------------------------------------------

    def _write(self, path: Path, value: str, what: str) -> None:
        try:
            path.write_text(value)
        except OSError as exc:
            raise SriovError(f"{what}: writing {value} to {path} failed: {exc.strerror}") from exc

    def set_vfcount(self, phy: str, count: int) -> None:
        current = self.pf(phy)
        if count < 0 or count > current.totalvfs:
            raise SriovError(f"PF {phy}: vfcount {count} is outside 0..{current.totalvfs} "
                             f"(sriov_totalvfs)")
        if count == current.vfcount:
            return
        path = self._device(phy) / "sriov_numvfs"
        if current.vfcount and count:   # the kernel refuses (EBUSY) to change a non-zero count
            self._write(path, "0", f"PF {phy} sriov_numvfs")
        self._write(path, str(count), f"PF {phy} sriov_numvfs")

    def set_mtu(self, dev: str, mtu: int) -> None:
        if not 68 <= mtu <= 65535:
            raise SriovError(f"{dev}: MTU {mtu} is outside 68..65535")
        path = self._net(dev) / "mtu"
        if not path.exists():
            raise SriovError(f"{dev}: no such network device")
        with contextlib.suppress(SriovError):
            if self._int(path, f"{dev} mtu") == mtu:
                return
        self._write(path, str(mtu), f"{dev} mtu")

    def configure_vf(self, pf: str, index: int, config: VFConfig, mac: str | None = None) -> None:
        if index not in [i for i, _ in self._virtfns(self._device(pf))]:
            raise SriovError(f"PF {pf}: no VF with index {index}")
        self.netlink.set_vf(pf, vf_spec(index, config, mac))

"""What the node's SR-IOV service needs of a host: its PFs and VFs, and the means to set them."""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass

LINK_STATES = ("auto", "enable", "disable")
_PCI_RE = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")


class SriovError(Exception):
    """An SR-IOV operation failed; the message names the operation, the device and the cause."""


@dataclass(frozen=True)
class PciAddress:
    """A PCI function address as sysfs names it (`0000:3b:02.1`), fields in lowercase hex."""

    domain: str
    bus: str
    slot: str
    function: str

    @classmethod
    def parse(cls, text: str) -> PciAddress:
        match = _PCI_RE.match(text.strip())
        if match is None:
            raise SriovError(f"'{text}' is not a PCI address (dddd:bb:ss.f)")
        domain, bus, slot, function = (g.lower() for g in match.groups())
        return cls(domain, bus, slot, function)

    def __str__(self) -> str:
        return f"{self.domain}:{self.bus}:{self.slot}.{self.function}"


@dataclass(frozen=True)
class PhysicalFunction:
    phy: str                  # the PF's netdev name
    mtu: int
    vfcount: int              # sriov_numvfs: VFs enabled now
    totalvfs: int             # sriov_totalvfs: the most the device offers
    vfs: tuple[str, ...]      # the VFs' names, in VF index order


@dataclass(frozen=True)
class VirtualFunction:
    phy: str                  # the VF's netdev name (`<pf>v<N>` when it has none, e.g. bound to vfio)
    pf: str
    index: int                # N of the PF's virtfn<N>
    mtu: int
    mac: str                  # lowercase, colon separated; "" when the VF has no netdev
    pci: PciAddress


@dataclass(frozen=True)
class VFConfig:
    """A VF's settings the PF holds (`ip link set <pf> vf <N> ...`); rates in Mbit/s, 0 = off."""

    vlan_id: int = 0
    vlan_qos: int = 0
    tx_rate_min: int = 0
    tx_rate_max: int = 0
    link_state: str = "auto"
    spoof_check: bool = True
    trust: bool = False
    query_rss: bool = False


class SriovHost(abc.ABC):
    @abc.abstractmethod
    def pfs(self) -> list[PhysicalFunction]:
        """Every SR-IOV capable netdev (one with sriov_totalvfs), by name order."""

    @abc.abstractmethod
    def pf(self, phy: str) -> PhysicalFunction:
        """One PF; SriovError when `phy` is missing or not SR-IOV capable."""

    @abc.abstractmethod
    def vfs(self, phy: str) -> list[VirtualFunction]:
        """The PF's enabled VFs in index order."""

    @abc.abstractmethod
    def set_vfcount(self, phy: str, count: int) -> None:
        """Enable `count` VFs (0 disables them); a change goes through 0, as the kernel requires."""

    @abc.abstractmethod
    def set_mtu(self, dev: str, mtu: int) -> None:
        """The MTU of a PF or VF netdev."""

    @abc.abstractmethod
    def configure_vf(self, pf: str, index: int, config: VFConfig, mac: str | None = None) -> None:
        """Apply a VF's settings through the PF (and its MAC when given)."""

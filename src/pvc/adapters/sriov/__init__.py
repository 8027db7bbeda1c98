"""The SR-IOV host driver: a node's physical functions (PFs) and virtual functions (VFs).

`SriovHost` (base.py) reads PFs and VFs as the kernel lays them out in sysfs and configures them:
the VF count and MTU through sysfs, a VF's MAC, VLAN, rates, link state and flags through netlink.
`SysfsSriov` (sysfs.py) takes the sysfs root as a parameter and sends netlink messages through a
small seam (`Netlink`), so tests run it on a synthetic tree (fake.py builds one) with a recording
netlink. Nothing here has run on SR-IOV hardware yet.
"""

from pvc.adapters.sriov.base import (
    PciAddress,
    PhysicalFunction,
    SriovError,
    SriovHost,
    VFConfig,
    VirtualFunction,
)
from pvc.adapters.sriov.sysfs import Netlink, PyrouteNetlink, SysfsSriov

__all__ = ["Netlink", "PciAddress", "PhysicalFunction", "PyrouteNetlink", "SriovError", "SriovHost",
           "SysfsSriov", "VFConfig", "VirtualFunction"]

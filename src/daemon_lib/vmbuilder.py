"""Newer upstream scripts import the builder from daemon_lib.vmbuilder; same names as pvcapid.vmbuilder."""

from pvcapid.vmbuilder import ProvisioningError, VMBuilder, chroot, open_zk

__all__ = ["ProvisioningError", "VMBuilder", "chroot", "open_zk"]

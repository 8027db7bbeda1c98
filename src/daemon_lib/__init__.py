"""Compatibility names for provisioner scripts written for upstream PVC (`daemon_lib.*`):
daemon_lib.common.run_os_command, daemon_lib.ceph volume helpers, daemon_lib.vmbuilder.
Thin wrappers over pvc.cluster and pvc.adapters."""

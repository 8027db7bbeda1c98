"""Compatibility names for provisioner scripts written for upstream PVC (`pvcapid.*`).

Not PVC's API daemon (that is pvc.api; its command is still called pvcapid): only what scripts
import — pvcapid.vmbuilder, pvcapid.libvirt_schema and pvcapid.Daemon.config — as thin wrappers
over pvc.worker.provisioner and pvc.cluster.
"""

"""The provisioner's job side (issue #7): `provisioner.create` runs a profile's script in a sandbox.

- vmbuilder: the VMBuilder base class scripts extend, ProvisioningError, script loading.
- macs: MAC address templates and random MACs.
- vmdata: the `vm_data` dict scripts receive, from the documents pvc.cluster.provisioner.load_profile
  reads.
- sandbox: a child process in its own mount namespace that runs the script's stages.
- runner: the `provisioner.create` task kind (stages, undo on failure or cancel).
- examples/: shipped example scripts.

Scripts written for upstream PVC import `pvcapid.vmbuilder`, `pvcapid.libvirt_schema`,
`daemon_lib.common` and `daemon_lib.ceph`; those top-level packages (src/pvcapid, src/daemon_lib)
are thin wrappers over this package and pvc.cluster, so such scripts run unchanged.
"""

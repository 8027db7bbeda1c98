"""The provisioner's job side (issue #7): `provisioner.create` runs a profile's script in a sandbox.

- vmbuilder: the VMBuilder base class scripts extend, ProvisioningError, script loading.
- macs: MAC address templates and random MACs.
- vmdata: the `vm_data` dict scripts receive, from the documents pvc.cluster.provisioner.load_profile
  reads.
- sandbox: a child process that runs the script's stages in a sandbox that is a boundary (#13):
  confine (namespaces, pivot_root into a curated read-only root, capabilities, no_new_privs),
  seccompfilter (the seccomp filter), broker (the worker's side: this VM's volume requests and
  the script's mounts, checked and carried out for it), scriptapi (the script's side: the
  upstream-compatible helpers routed through the broker; scripts get no settings).
- runner: the `provisioner.create` task kind (stages, undo on failure or cancel).
- examples/: shipped example scripts.

Scripts written for upstream PVC import `pvcapid.vmbuilder`, `pvcapid.libvirt_schema`,
`daemon_lib.common` and `daemon_lib.ceph`; those top-level packages (src/pvcapid, src/daemon_lib)
are thin wrappers over this package and pvc.cluster, so such scripts run unchanged.
"""

#!/usr/bin/env python3
# 2-clone.py: a PVC provisioner script that clones its disks from existing volumes and boots.
#
# Storage template: disks with a source volume are cloned to <vm>_<disk_id> (and grown to the
# disk's size if one is given); disks without one are created empty at their size. Nothing is
# formatted or mounted. Example (the lab's tiny guest, root filesystem in vms/pvc-lab-guest):
#
#   pvc provisioner template storage disk add lab-clone vda --pool vms --source-volume pvc-lab-guest
#   pvc provisioner profile add lab-clone ... --script clone \
#       --script-arg kernel=/var/cache/pvc-lab/guest/<build>/vmlinuz \
#       --script-arg initrd=/var/cache/pvc-lab/guest/<build>/initrd.gz
#
# Script arguments: kernel, initrd (boot these directly; the lab guest needs both), cmdline
# (default "console=ttyS0 panic=-1 quiet vmname=<vm> vmroot=/dev/vda").

from pvcapid.vmbuilder import ProvisioningError, VMBuilder


class VMBuilderScript(VMBuilder):
    def setup(self):
        if not self.vm_data["volumes"]:
            raise ProvisioningError("This script needs a storage template with at least one disk.")

    def create(self):
        from pvc.worker.provisioner.helpers import domain_xml

        args = self.vm_data["script_arguments"]
        cmdline = args.get("cmdline") or f"console=ttyS0 panic=-1 quiet vmname={self.vm_name} vmroot=/dev/vda"
        return domain_xml(self, kernel=args.get("kernel"), initrd=args.get("initrd"), cmdline=cmdline)

    def prepare(self):
        import daemon_lib.ceph as pvc_ceph
        from pvcapid.Daemon import config
        from pvcapid.vmbuilder import open_zk

        with open_zk(config) as zkhandler:
            for volume in self.vm_data["volumes"]:
                name = f"{self.vm_name}_{volume['disk_id']}"
                if volume.get("source_volume"):
                    source = volume["source_volume"]
                    ok, message = pvc_ceph.clone_volume(zkhandler, volume["pool"], source, name)
                    self.log_info(message)
                    if not ok:
                        raise ProvisioningError(f"Failed to clone volume {source} to {name}.")
                    if volume.get("disk_size_gb"):
                        ok, message = pvc_ceph.resize_volume(zkhandler, volume["pool"], name,
                                                             f"{volume['disk_size_gb']}G")
                        self.log_info(message)
                else:
                    ok, message = pvc_ceph.add_volume(zkhandler, volume["pool"], name,
                                                      f"{volume['disk_size_gb']}G")
                    self.log_info(message)
                    if not ok:
                        raise ProvisioningError(f"Failed to create volume {name}.")

    def install(self):
        pass

    def cleanup(self):
        pass

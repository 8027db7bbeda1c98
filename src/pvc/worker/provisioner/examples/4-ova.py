#!/usr/bin/env python3
# 4-ova.py: the PVC provisioner script for OVA profiles (store it as script "ova" or
# "default_ova" before uploading an OVA).
#
# The OVA's disks were stored at upload as volumes ova_<name>_<disk_id> holding the VMDK bytes;
# each is converted to raw into a new volume <vm>_<disk_id> of the disk's size. As upstream's OVA
# example does, both volumes are mapped (the OVA's read-only) and qemu-img converts from one
# device to the other, inside the provisioner sandbox: the script never holds a Ceph key, and
# an image can only ever refer to files of the sandbox. Storage template disks (if the profile
# has one) are created empty after them. Script arguments: kernel, initrd, cmdline as in
# 2-clone.py.

import subprocess

from pvcapid.vmbuilder import ProvisioningError, VMBuilder


class VMBuilderScript(VMBuilder):
    def setup(self):
        if not self.vm_data.get("ova_details"):
            raise ProvisioningError("This script is for OVA profiles only.")
        self.mapped = []

    def create(self):
        from pvc.worker.provisioner.helpers import domain_xml

        args = self.vm_data["script_arguments"]
        ova = self.vm_data["ova_details"].get("name")
        return domain_xml(self, kernel=args.get("kernel"), initrd=args.get("initrd"),
                          cmdline=args.get("cmdline"), description=f"PVC provisioner, OVA '{ova}'")

    def _map(self, pvc_ceph, zkhandler, pool, name):
        ok, device = pvc_ceph.map_volume(zkhandler, pool, name)
        if not ok:
            raise ProvisioningError(f"Failed to map volume {pool}/{name}: {device}")
        self.mapped.append((pool, name))
        return device

    def _unmap(self, pvc_ceph, zkhandler):
        while self.mapped:
            pool, name = self.mapped.pop()
            ok, message = pvc_ceph.unmap_volume(zkhandler, pool, name)
            if not ok:
                self.log_warn(message)

    def prepare(self):
        import daemon_lib.ceph as pvc_ceph
        from pvcapid.Daemon import config
        from pvcapid.vmbuilder import open_zk

        with open_zk(config) as zkhandler:
            for volume in self.vm_data["volumes"]:
                name = f"{self.vm_name}_{volume['disk_id']}"
                size = f"{volume['disk_size_gb']}G"
                ok, message = pvc_ceph.add_volume(zkhandler, volume["pool"], name, size)
                self.log_info(message)
                if not ok:
                    raise ProvisioningError(f"Failed to create volume {name}: {message}")
                if not volume.get("volume_name"):
                    continue
                source = self._map(pvc_ceph, zkhandler, volume["pool"], volume["volume_name"])
                target = self._map(pvc_ceph, zkhandler, volume["pool"], name)
                cmd = ["qemu-img", "convert", "-f", volume.get("volume_format") or "vmdk", "-O", "raw", "-n",
                       source, target]
                done = subprocess.run(cmd, capture_output=True, text=True)
                self._unmap(pvc_ceph, zkhandler)
                if done.returncode != 0:
                    raise ProvisioningError(f"Converting {volume['volume_name']} to {name} failed: "
                                            f"{done.stderr.strip()}")
                self.log_info(f"Converted {volume['volume_name']} to raw {name}")

    def install(self):
        pass

    def cleanup(self):
        import daemon_lib.ceph as pvc_ceph
        from pvcapid.Daemon import config
        from pvcapid.vmbuilder import open_zk

        if getattr(self, "mapped", None):
            with open_zk(config) as zkhandler:
                self._unmap(pvc_ceph, zkhandler)

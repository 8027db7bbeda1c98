#!/usr/bin/env python3
# 4-ova.py: the PVC provisioner script for OVA profiles (store it as script "ova" or
# "default_ova" before uploading an OVA).
#
# The OVA's disks were stored at upload as volumes ova_<name>_<disk_id> holding the VMDK bytes;
# each is converted to raw into a new volume <vm>_<disk_id> of the disk's size (qemu-img,
# reading and writing RBD directly). Storage template disks (if the profile has one) are created
# empty after them. Script arguments: kernel, initrd, cmdline as in 2-clone.py.

import os
import subprocess

from pvcapid.vmbuilder import ProvisioningError, VMBuilder


def _escape(value):
    # qemu's rbd: filename separates options with ':'; escape them (and '\\') in values
    return str(value).replace("\\", "\\\\").replace(":", "\\:")


def _rbd(pool, name, cfg):
    """qemu's rbd: filename for pool/name with the node's Ceph user, config and keyring (a file
    path, so no secret appears on the command line; left out if missing, as Ceph finds its own)."""
    parts = ["rbd", f"{_escape(pool)}/{_escape(name)}", f"id={_escape(cfg.client_user)}",
             f"conf={_escape(cfg.ceph_config_file)}"]
    if cfg.ceph_keyring_file and os.path.exists(cfg.ceph_keyring_file):
        parts.append(f"keyring={_escape(cfg.ceph_keyring_file)}")
    return ":".join(parts)


class VMBuilderScript(VMBuilder):
    def setup(self):
        if not self.vm_data.get("ova_details"):
            raise ProvisioningError("This script is for OVA profiles only.")

    def create(self):
        from pvc.worker.provisioner.helpers import domain_xml

        args = self.vm_data["script_arguments"]
        ova = self.vm_data["ova_details"].get("name")
        return domain_xml(self, kernel=args.get("kernel"), initrd=args.get("initrd"),
                          cmdline=args.get("cmdline"), description=f"PVC provisioner, OVA '{ova}'")

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
                cmd = ["qemu-img", "convert", "-f", volume.get("volume_format") or "vmdk", "-O", "raw", "-n",
                       _rbd(volume["pool"], volume["volume_name"], config.storage),
                       _rbd(volume["pool"], name, config.storage)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise ProvisioningError(f"Converting {volume['volume_name']} to {name} failed: "
                                            f"{done.stderr.strip()}")
                self.log_info(f"Converted {volume['volume_name']} to raw {name}")

    def install(self):
        pass

    def cleanup(self):
        pass

#!/usr/bin/env python3
# 3-install.py: a PVC provisioner script that formats the template's volumes, mounts them under
# /tmp/target and installs a small root filesystem into them.
#
# Storage template: disks with a filesystem (ext4 here) and a mountpoint, one of them "/". Where
# RBD volumes can be mapped (kernel rbd, rbd-nbd, rbd-fuse+loop), each is mapped, formatted and
# mounted at /tmp/target/<mountpoint>; elsewhere the tree is built in /tmp/target and each
# filesystem is made as an image with `mkfs.ext4 -d` and imported into its volume. The script runs
# in the provisioner sandbox: the worker creates, maps and imports its volumes on its behalf, and
# carries out its mounts (of its own mapped volumes, under /tmp/target).
#
# Script arguments: rootfs = lab-guest (default: the lab's tiny-guest root tree: busybox and an
# /init the lab's initramfs switches to) or busybox (busybox with its applet links only);
# kernel, initrd, cmdline as in 2-clone.py.

import os
import shutil
import subprocess

from pvcapid.vmbuilder import ProvisioningError, VMBuilder

TARGET = "/tmp/target"
IMAGES = "/tmp/images"


def _run(*cmd):
    done = subprocess.run(list(cmd), capture_output=True, text=True)
    if done.returncode != 0:
        raise ProvisioningError(f"{' '.join(cmd)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout.strip()


class VMBuilderScript(VMBuilder):
    def setup(self):
        self.filesystems = [v for v in self.vm_data["volumes"] if v.get("filesystem") and v.get("mountpoint")]
        if not any(v["mountpoint"] == "/" for v in self.filesystems):
            raise ProvisioningError("The storage template needs a disk with a filesystem mounted at /.")
        for tool in ("busybox", "mkfs.ext4"):
            if shutil.which(tool) is None:
                raise ProvisioningError(f"{tool} is not installed on this hypervisor.")
        self.mapped = []
        self.mounted = []
        self.image_mode = False

    def create(self):
        from pvc.worker.provisioner.helpers import domain_xml

        args = self.vm_data["script_arguments"]
        root = next(v for v in self.filesystems if v["mountpoint"] == "/")
        cmdline = args.get("cmdline") or (f"console=ttyS0 panic=-1 quiet vmname={self.vm_name} "
                                          f"vmroot=/dev/{root['disk_id']}")
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
                else:
                    ok, message = pvc_ceph.add_volume(zkhandler, volume["pool"], name,
                                                      f"{volume['disk_size_gb']}G")
                self.log_info(message)
                if not ok:
                    raise ProvisioningError(f"Failed to create volume {name}: {message}")
            os.makedirs(TARGET, exist_ok=True)
            for volume in sorted(self.filesystems, key=lambda v: v["mountpoint"].count("/")):
                name = f"{self.vm_name}_{volume['disk_id']}"
                path = TARGET + volume["mountpoint"].rstrip("/")
                if not self.image_mode:
                    ok, device = pvc_ceph.map_volume(zkhandler, volume["pool"], name)
                    if not ok:
                        self.log_warn(f"{device}; building filesystem images instead")
                        self.image_mode = True
                if self.image_mode:
                    os.makedirs(path, exist_ok=True)
                    continue
                self.mapped.append((volume["pool"], name))
                _run(f"mkfs.{volume['filesystem']}", *volume["filesystem_args"].split(), device)
                os.makedirs(path, exist_ok=True)
                _run("mount", device, path)
                self.mounted.append(path)

    def install(self):
        rootfs = self.vm_data["script_arguments"].get("rootfs", "lab-guest")
        if rootfs == "lab-guest":
            from pvc.worker.provisioner.helpers import lab_guest_root

            lab_guest_root(TARGET)
        else:
            for d in ("bin", "sbin", "etc", "dev", "proc", "sys", "tmp", "run", "root"):
                os.makedirs(f"{TARGET}/{d}", exist_ok=True)
            shutil.copy2(shutil.which("busybox"), f"{TARGET}/bin/busybox")
            os.symlink("busybox", f"{TARGET}/bin/sh")
        with open(f"{TARGET}/etc/hostname", "w") as f:
            f.write(f"{self.vm_name}\n")
        if self.image_mode:
            self._import_images()

    def _import_images(self):
        from pvc.worker.provisioner.helpers import import_volume

        os.makedirs(IMAGES, exist_ok=True)
        # deepest mountpoints first: each filesystem gets its own subtree only
        for volume in sorted(self.filesystems, key=lambda v: -v["mountpoint"].count("/")):
            if volume["filesystem"] not in ("ext2", "ext3", "ext4"):
                raise ProvisioningError(f"Cannot build a {volume['filesystem']} image without mapping "
                                        f"the volume.")
            tree = f"{IMAGES}/{volume['disk_id']}.tree"
            source = TARGET + volume["mountpoint"].rstrip("/")
            if volume["mountpoint"] == "/":
                os.rename(TARGET, tree)
            else:
                shutil.move(source, tree)
                os.makedirs(source, exist_ok=True)
            image = f"{IMAGES}/{volume['disk_id']}.img"
            _run(f"mkfs.{volume['filesystem']}", "-q", "-F", *volume["filesystem_args"].split(), "-d", tree,
                 image, f"{volume['disk_size_gb']}G")
            name = f"{self.vm_name}_{volume['disk_id']}"
            import_volume(volume["pool"], name, image)     # the worker copies it in (raw)
            os.unlink(image)
            self.log_info(f"imported the {volume['mountpoint']} filesystem into {name}")

    def cleanup(self):
        import daemon_lib.ceph as pvc_ceph
        from pvcapid.Daemon import config
        from pvcapid.vmbuilder import open_zk

        for path in reversed(getattr(self, "mounted", [])):
            subprocess.run(["umount", path], check=False)
        if getattr(self, "mapped", None):
            with open_zk(config) as zkhandler:
                for pool, name in self.mapped:
                    pvc_ceph.unmap_volume(zkhandler, pool, name)

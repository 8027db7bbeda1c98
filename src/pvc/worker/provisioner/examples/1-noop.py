#!/usr/bin/env python3
# 1-noop.py: a PVC provisioner script that only builds the VM's libvirt XML.
#
# It creates no volumes and installs nothing: use it for VMs whose disks already exist (named
# <vm>_<disk_id>), or to see which XML a profile gives. It uses upstream's libvirt_schema
# fragments, exactly as upstream PVC's noop example does (less the vhostmd device, which needs
# vhostmd on the hypervisors).

from pvcapid.vmbuilder import VMBuilder


class VMBuilderScript(VMBuilder):
    def setup(self):
        pass

    def create(self):
        import datetime
        import random

        import pvcapid.libvirt_schema as libvirt_schema

        schema = ""
        description = f"PVC provisioner @ {datetime.datetime.now()}, profile '{self.vm_profile}'"
        schema += libvirt_schema.libvirt_header.format(
            vm_name=self.vm_name,
            vm_uuid=self.vm_uuid,
            vm_description=description,
            vm_memory=self.vm_data["system_details"]["vram_mb"],
            vm_vcpus=self.vm_data["system_details"]["vcpu_count"],
            vm_architecture=self.vm_data["system_architecture"],
        )

        monitor_list = self.vm_data["ceph_monitor_list"]
        monitor_port = self.vm_data["ceph_monitor_port"]
        monitor_secret = self.vm_data["ceph_monitor_secret"]
        for volume in self.vm_data["volumes"]:
            schema += libvirt_schema.devices_disk_header.format(
                ceph_storage_secret=monitor_secret,
                disk_pool=volume["pool"],
                vm_name=self.vm_name,
                disk_id=volume["disk_id"],
            )
            for monitor in monitor_list:
                schema += libvirt_schema.devices_disk_coordinator.format(
                    coordinator_name=monitor,
                    coordinator_ceph_mon_port=monitor_port,
                )
            schema += libvirt_schema.devices_disk_footer

        for network_id, network in enumerate(self.vm_data["networks"]):
            vm_id_hex = f"{int(self.vm_id % 16):x}"
            net_id_hex = f"{int(network_id % 16):x}"
            if self.vm_data.get("mac_template") is not None:
                eth_macaddr = self.vm_data["mac_template"].format(
                    prefix="52:54:01", vmid=vm_id_hex, netid=net_id_hex
                )
            else:
                octets = [random.randint(16, 238) for _ in range(3)]
                eth_macaddr = "52:54:00:" + ":".join(f"{o:02x}" for o in octets)
            schema += libvirt_schema.devices_net_interface.format(
                eth_macaddr=eth_macaddr,
                eth_bridge=network["eth_bridge"],
            )

        schema += libvirt_schema.devices_default
        if self.vm_data["system_details"]["serial"]:
            schema += libvirt_schema.devices_serial.format(vm_name=self.vm_name)
        if self.vm_data["system_details"]["vnc"]:
            schema += libvirt_schema.devices_vnc.format(
                vm_vncport=5900,
                vm_vnc_autoport="yes",
                vm_vnc_bind=self.vm_data["system_details"]["vnc_bind"] or "127.0.0.1",
            )
        schema += libvirt_schema.devices_scsi_controller
        schema += libvirt_schema.libvirt_footer
        return schema

    def prepare(self):
        pass

    def install(self):
        pass

    def cleanup(self):
        pass

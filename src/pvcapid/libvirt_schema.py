"""Libvirt XML fragments provisioner scripts assemble a domain from (upstream's libvirt_schema).

Each is a str.format template; the variables are named in the comment above it. The RBD disk
fragments name the monitors and the Ceph secret as upstream does; PVC's nodes also fill these in
when a disk names only pool/volume.
"""

# Variables: vm_name, vm_uuid, vm_description, vm_memory (MiB), vm_vcpus, vm_architecture
libvirt_header = """<domain type='kvm'>
  <name>{vm_name}</name>
  <uuid>{vm_uuid}</uuid>
  <description>{vm_description}</description>
  <memory unit='MiB'>{vm_memory}</memory>
  <vcpu>{vm_vcpus}</vcpu>
  <cpu>
    <topology sockets='1' cores='{vm_vcpus}' threads='1'/>
  </cpu>
  <os>
    <type arch='{vm_architecture}' machine='pc-i440fx-2.7'>hvm</type>
    <bootmenu enable='yes'/>
    <boot dev='cdrom'/>
    <boot dev='hd'/>
    <bios useserial='yes' rebootTimeout='5'/>
  </os>
  <features>
    <acpi/>
    <apic/>
    <pae/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>restart</on_crash>
  <devices>
"""

libvirt_footer = """  </devices>
</domain>"""

devices_default = """    <emulator>/usr/bin/kvm</emulator>
    <controller type='usb' index='0'/>
    <controller type='pci' index='0' model='pci-root'/>
    <rng model='virtio'>
      <rate period="1000" bytes="2048"/>
      <backend model='random'>/dev/random</backend>
    </rng>
"""

# Variables: vm_name
devices_serial = """    <serial type='pty'>
      <log file='/var/log/libvirt/{vm_name}.log' append='on'/>
    </serial>
    <console type='pty'/>
"""

# Variables: vm_vncport, vm_vnc_autoport, vm_vnc_bind
devices_vnc = (
    "    <graphics type='vnc' port='{vm_vncport}' autoport='{vm_vnc_autoport}' "
    "listen='{vm_vnc_bind}'/>\n"
)

devices_scsi_controller = """    <controller type='scsi' index='0' model='virtio-scsi'/>
"""

# Variables: ceph_storage_secret, disk_pool, vm_name, disk_id
devices_disk_header = """    <disk type='network' device='disk'>
      <driver name='qemu' discard='unmap'/>
      <target dev='{disk_id}' bus='scsi'/>
      <auth username='libvirt'>
        <secret type='ceph' uuid='{ceph_storage_secret}'/>
      </auth>
      <source protocol='rbd' name='{disk_pool}/{vm_name}_{disk_id}'>
"""

# Variables: coordinator_name, coordinator_ceph_mon_port
devices_disk_coordinator = """        <host name='{coordinator_name}' port='{coordinator_ceph_mon_port}'/>
"""

devices_disk_footer = """      </source>
    </disk>
"""

# Hypervisor information for the guest (vhostmd)
devices_vhostmd = """    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/dev/shm/vhostmd0'/>
      <target dev='sdz' bus='usb'/>
      <readonly/>
    </disk>
"""

# Variables: eth_macaddr, eth_bridge
devices_net_interface = """    <interface type='bridge'>
      <mac address='{eth_macaddr}'/>
      <source bridge='{eth_bridge}'/>
      <model type='virtio'/>
    </interface>
"""

"""`pvc provisioner template`: system, network and storage templates (what profiles combine)."""

from __future__ import annotations

from typing import Any

import click

from pvc.cli.commands.provisioner.common import list_command, quoted, remove_command, say
from pvc.cli.commands.provisioner.formats import (
    NETWORK_FORMATS,
    STORAGE_FORMATS,
    SYSTEM_FORMATS,
    TEMPLATE_FORMATS,
)
from pvc.cli.output import Formatter
from pvc.cli.state import confirm_option, format_option, get_state
from pvc.core.vocabulary import MIGRATION_METHODS, SELECTOR_CHOICES


@click.group(name="template", short_help="Manage PVC provisioner templates.")
def template() -> None:
    """Manage the system, network and storage templates that profiles combine."""


def _remove_and_list(group: click.Group, kind: str, formats: dict[str, Formatter]) -> None:
    """The `remove` and `list` commands of the `kind` templates."""
    path = f"/provisioner/template/{kind}"
    remove_command(group, path, f"Remove {kind} template.", f"Remove {kind} template {{name}}",
                   f"Remove the {kind} template NAME (refused while a profile uses it).")
    list_command(group, path, formats, f"List all {kind} templates.", f"the {kind} templates")


@template.command(name="list", short_help="List all templates.")
@click.argument("limit", required=False, default=None)
@format_option(TEMPLATE_FORMATS)
def template_list(limit: str | None, formatter: Any) -> None:
    """List all system, network and storage templates; optionally only those whose name matches LIMIT."""
    get_state().emit(get_state().api().get_json("/provisioner/template", params={"limit": limit}), formatter)


# system templates

@template.group(name="system", short_help="Manage PVC provisioner system templates.")
def system() -> None:
    """Manage system templates: vCPUs, memory, consoles and PVC metadata of VMs."""


def _system_options(required: bool) -> Any:
    def decorate(function: Any) -> Any:
        options = [
            click.option("-u", "--vcpus", "vcpus", type=int, required=required, help="The number of vCPUs."),
            click.option("-m", "--vram", "vram", type=int, required=required,
                         help="The amount of vRAM (in MB)."),
            click.option("-s/-S", "--serial/--no-serial", "serial", default=False if required else None,
                         help="Enable the virtual serial console."),
            click.option("-n/-N", "--vnc/--no-vnc", "vnc", default=False if required else None,
                         help="Enable the VNC console."),
            click.option("-b", "--vnc-bind", "vnc_bind", default=None,
                         help="Bind VNC to this IP address instead of 127.0.0.1."),
            click.option("--node-limit", "node_limit", default=None,
                         help="Limit VM operation to this CSV list of node(s)."),
            click.option("--node-selector", "node_selector", type=click.Choice(SELECTOR_CHOICES),
                         default="none" if required else None, show_default=required,
                         help="Method to determine the optimal target node during migrations."),
            click.option("--node-autostart/--no-node-autostart", "node_autostart", default=False if required
                         else None, help="Autostart the VM with its node's return to ready state."),
            click.option("--migration-method", "migration_method", type=click.Choice(MIGRATION_METHODS),
                         default=None, help="The preferred migration method of the VM between nodes."),
            click.option("--max-downtime", "--migration-max-downtime", "migration_max_downtime", type=int,
                         default=300 if required else None,
                         help="The maximum time in milliseconds that a VM can be down during a live "
                              "migration [default: 300]."),
        ]
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


@system.command(name="add", short_help="Add new system template.")
@click.argument("name")
@_system_options(required=True)
def system_add(name: str, **values: Any) -> None:
    """Add a new system template NAME.

    Example: pvc provisioner template system add --vcpus 2 --vram 2048 --serial small
    """
    say("POST", "/provisioner/template/system", {"name": name, **values})


@system.command(name="modify", short_help="Modify an existing system template.")
@click.argument("name")
@_system_options(required=False)
def system_modify(name: str, **values: Any) -> None:
    """Modify the system template NAME; only the given options change."""
    say("PUT", f"/provisioner/template/system/{quoted(name)}", values)


_remove_and_list(system, "system", SYSTEM_FORMATS)


# network templates

@template.group(name="network", short_help="Manage PVC provisioner network templates.")
def network() -> None:
    """Manage network templates: the networks (VNIs) of VMs, in order, and their MAC template."""


@network.command(name="add", short_help="Add new network template.")
@click.argument("name")
@click.option("-m", "--mac-template", "mac_template", default=None,
              help="Use this template for MAC addresses, e.g. '{prefix}:ff:ff:{vmid}{netid}'.")
def network_add(name: str, mac_template: str | None) -> None:
    """Add a new network template NAME; add its networks with 'vni add'.

    \b
    The MAC template may use these variables:
      {prefix}  the provisioner's MAC prefix, 52:54:01
      {vmid}    the VM's number (the numeric suffix of its name) as one hex digit
      {netid}   the interface's position in the template as one hex digit
    Without one, VMs get random MAC addresses (52:54:00:...).
    """
    say("POST", "/provisioner/template/network", {"name": name, "mac_template": mac_template})


_remove_and_list(network, "network", NETWORK_FORMATS)


@network.group(name="vni", short_help="Manage network VNIs in network templates.")
def vni() -> None:
    """Manage the networks of a network template (the first is eth0, the second eth1, ...)."""


@vni.command(name="add", short_help="Add network VNI to network template.")
@click.argument("name")
@click.argument("vni_id", metavar="VNI")
@click.option("-d", "--permit-duplicate", "permit_duplicate", is_flag=True, default=False,
              help="Allow the VNI to be in the template more than once.")
def vni_add(name: str, vni_id: str, permit_duplicate: bool) -> None:
    """Add the network VNI (an existing network, or upstream, cluster, storage) to the end of network
    template NAME."""
    say("POST", f"/provisioner/template/network/{quoted(name)}/net",
         {"vni": vni_id, "permit_duplicate": permit_duplicate})


@vni.command(name="remove", short_help="Remove network VNI from network template.")
@click.argument("name")
@click.argument("vni_id", metavar="VNI")
@confirm_option("Remove VNI {vni_id} from network template {name}")
def vni_remove(name: str, vni_id: str) -> None:
    """Remove the network VNI from network template NAME."""
    say("DELETE", f"/provisioner/template/network/{quoted(name)}/net/{quoted(vni_id)}")


# storage templates

@template.group(name="storage", short_help="Manage PVC provisioner storage templates.")
def storage() -> None:
    """Manage storage templates: the disks of VMs, with their filesystems and mountpoints."""


@storage.command(name="add", short_help="Add new storage template.")
@click.argument("name")
def storage_add(name: str) -> None:
    """Add a new storage template NAME; add its disks with 'disk add'."""
    say("POST", "/provisioner/template/storage", {"name": name})


_remove_and_list(storage, "storage", STORAGE_FORMATS)


@storage.group(name="disk", short_help="Manage disks in storage templates.")
def disk() -> None:
    """Manage the disks of a storage template."""


@disk.command(name="add", short_help="Add disk to storage template.")
@click.argument("name")
@click.argument("disk_id", metavar="DISK")
@click.option("-p", "--pool", "pool", required=True, help="The storage pool for the disk.")
@click.option("-i", "--source-volume", "source_volume", default=None,
              help="The source volume to clone (no size, filesystem or mountpoint).")
@click.option("-s", "--size", "size", type=int, default=None, help="The size of the disk (in GB).")
@click.option("-f", "--filesystem", "filesystem", default=None, help="The filesystem of the disk.")
@click.option("--fsarg", "fsargs", multiple=True,
              help="Additional argument for mkfs, in '-X=foo' form; repeatable.")
@click.option("-m", "--mountpoint", "mountpoint", default=None,
              help="The target mountpoint of the disk in the VM's root filesystem (needs a filesystem).")
def disk_add(name: str, disk_id: str, pool: str, source_volume: str | None, size: int | None,
             filesystem: str | None, fsargs: tuple[str, ...], mountpoint: str | None) -> None:
    """Add the disk DISK (sdX or vdX) to storage template NAME.

    Example: pvc provisioner template storage disk add --pool vms --size 8 --filesystem ext4 --mountpoint /
    mytemplate sda
    """
    say("POST", f"/provisioner/template/storage/{quoted(name)}/disk",
         {"disk_id": disk_id, "pool": pool, "source_volume": source_volume, "disk_size": size,
          "filesystem": filesystem, "filesystem_arg": list(fsargs) or None, "mountpoint": mountpoint})


@disk.command(name="remove", short_help="Remove disk from storage template.")
@click.argument("name")
@click.argument("disk_id", metavar="DISK")
@confirm_option("Remove disk {disk_id} from storage template {name}")
def disk_remove(name: str, disk_id: str) -> None:
    """Remove the disk DISK from storage template NAME."""
    say("DELETE", f"/provisioner/template/storage/{quoted(name)}/disk/{quoted(disk_id)}")

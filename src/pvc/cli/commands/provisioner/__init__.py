"""`pvc provisioner`: templates, userdata, scripts, profiles and OVA images for creating VMs.

Options and requests are upstream's (`pvc provisioner template system add --vcpus 1 --vram 1024
--serial ... NAME`): scalar options travel as query parameters, repeated options (`--fsarg`,
`--script-arg`) as repeated keys, documents (userdata, scripts) as the form field `data`, so this
client works against upstream PVC and upstream's client against us. The API validates everything;
its message is what the user sees. The list views follow the product documents' examples. VM
creation, job status and OVA upload are added by provisioner_jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.text import Text

from pvc.cli.errors import CLIError
from pvc.cli.output import json_formatters
from pvc.cli.state import confirm_option, format_option, get_state

SELECTORS = ("mem", "memprov", "vcpus", "load", "vms", "none")
METHODS = ("live", "shutdown", "none")
DOCUMENT_LINES = 4
NA = "N/A"

Column = tuple[str | None, str]          # (group label or None, header)


# -- formatters --------------------------------------------------------------------------------------

def grid(columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> Text:
    """Upstream's plain column layout: columns two spaces apart, a column with a group label
    ("Consoles:", "Metadata:", ...) shows the label before its header and indents its values to
    the header (as in the product documents' examples). The header line is bold."""
    cells = [[str(value) for value in row] for row in rows]
    widths = []
    for index, (label, header) in enumerate(columns):
        indent = len(label) + 1 if label else 0
        width = indent + len(header)
        for row in cells:
            if index < len(row):
                width = max(width, indent + len(row[index]))
        widths.append(width)

    def line(values: Sequence[str], header: bool) -> str:
        parts = []
        for index, (label, _header) in enumerate(columns):
            value = values[index] if index < len(values) else ""
            indent = len(label) + 1 if label else 0
            prefix = (label + " " if header else " " * indent if value else "") if label else ""
            parts.append((prefix + value).ljust(widths[index]))
        return "  ".join(parts).rstrip()

    text = Text(line([h for _l, h in columns], True), style="bold")
    for row in cells:
        text.append("\n" + line(row, False))
    return text


def _s(value: Any) -> str:
    """A value as upstream's CLI prints it: str(), so unset values show None."""
    return str(value)


def _titled(title: str, body: Text | str) -> Text:
    text = Text(title, style="bold")
    text.append("\n\n")
    text.append(body if isinstance(body, Text) else Text(body))
    return text


SYSTEM_COLUMNS: list[Column] = [(None, "Name"), (None, "ID"), (None, "vCPUs"), (None, "vRAM [MB]"),
                                ("Consoles:", "Serial"), (None, "VNC"), (None, "VNC bind"),
                                ("Metadata:", "Limit"), (None, "Selector"), (None, "Autostart"),
                                (None, "Migration")]


def format_system_list(templates: Sequence[dict[str, Any]], title: bool = True) -> Text | str:
    if not templates:
        body: Text | str = "No system templates found."
    else:
        body = grid(SYSTEM_COLUMNS, [
            [t.get("name"), t.get("id"), t.get("vcpu_count"), t.get("vram_mb"), _s(t.get("serial")),
             _s(t.get("vnc")), _s(t.get("vnc_bind")), _s(t.get("node_limit")), _s(t.get("node_selector")),
             _s(t.get("node_autostart")), _s(t.get("migration_method"))]
            for t in sorted(templates, key=lambda t: str(t.get("name")))])
    return _titled("System templates:", body) if title else body


def format_network_list(templates: Sequence[dict[str, Any]], title: bool = True) -> Text | str:
    if not templates:
        body: Text | str = "No network templates found."
    else:
        body = grid([(None, "Name"), (None, "ID"), (None, "MAC template"), (None, "Network VNIs")], [
            [t.get("name"), t.get("id"), _s(t.get("mac_template")),
             ",".join(str(n.get("vni")) for n in t.get("networks") or [])]
            for t in sorted(templates, key=lambda t: str(t.get("name")))])
    return _titled("Network templates:", body) if title else body


STORAGE_COLUMNS: list[Column] = [(None, "Name"), (None, "ID"), (None, "Disk ID"), (None, "Pool"),
                                 (None, "Source Volume"), (None, "Size [GB]"), (None, "Filesystem"),
                                 (None, "Arguments"), (None, "Mountpoint")]


def _fsargs(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "None"
    return str(value) if value not in (None, "") else "None"


def format_storage_list(templates: Sequence[dict[str, Any]], title: bool = True) -> Text | str:
    if not templates:
        body: Text | str = "No storage templates found."
    else:
        rows: list[list[Any]] = []
        for t in sorted(templates, key=lambda t: str(t.get("name"))):
            rows.append([t.get("name"), t.get("id")])
            for d in sorted(t.get("disks") or [], key=lambda d: str(d.get("disk_id"))):
                rows.append(["", "", d.get("disk_id"), d.get("pool"), _s(d.get("source_volume")),
                             _s(d.get("disk_size_gb")), _s(d.get("filesystem")),
                             _fsargs(d.get("filesystem_args")), _s(d.get("mountpoint"))])
        body = grid(STORAGE_COLUMNS, rows)
    return _titled("Storage templates:", body) if title else body


def format_template_list(data: dict[str, Any]) -> Text:
    text = Text()
    parts = [format_system_list(data.get("system_templates") or []),
             format_network_list(data.get("network_templates") or []),
             format_storage_list(data.get("storage_templates") or [])]
    for index, part in enumerate(parts):
        if index:
            text.append("\n\n")
        text.append(part if isinstance(part, Text) else Text(part))
    return text


def _document_rows(docs: Sequence[dict[str, Any]], key: str, lines: int | None) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for doc in sorted(docs, key=lambda d: str(d.get("name"))):
        text_lines = str(doc.get(key) or "").split("\n")
        if text_lines and text_lines[-1] == "":
            text_lines.pop()
        shown = text_lines if lines is None or len(text_lines) <= lines else [*text_lines[:lines], "[...]"]
        rows.append([doc.get("name"), doc.get("id"), shown[0] if shown else ""])
        rows += [["", "", line] for line in shown[1:]]
    return rows


def format_userdata_list(docs: Sequence[dict[str, Any]], lines: int | None = DOCUMENT_LINES) -> Text | str:
    if not docs:
        return "No userdata documents found."
    return grid([(None, "Name"), (None, "ID"), (None, "Document")], _document_rows(docs, "userdata", lines))


def format_script_list(docs: Sequence[dict[str, Any]], lines: int | None = DOCUMENT_LINES) -> Text | str:
    if not docs:
        return "No scripts found."
    return grid([(None, "Name"), (None, "ID"), (None, "Script")], _document_rows(docs, "script", lines))


PROFILE_COLUMNS: list[Column] = [(None, "Name"), (None, "ID"), ("Templates:", "System"), (None, "Network"),
                                 (None, "Storage"), ("Data:", "Userdata"), (None, "Script"),
                                 (None, "Script Arguments")]


def format_profile_list(profiles: Sequence[dict[str, Any]]) -> Text | str:
    if not profiles:
        return "No profiles found."
    rows = []
    for p in sorted(profiles, key=lambda p: str(p.get("name"))):
        args = [a for a in p.get("arguments") or [] if a]
        rows.append([p.get("name"), p.get("id"), p.get("system_template"), p.get("network_template"),
                     p.get("storage_template"), p.get("userdata"), p.get("script"), ", ".join(args) or NA])
    return grid(PROFILE_COLUMNS, rows)


def format_ova_list(ovas: Sequence[dict[str, Any]]) -> Text | str:
    if not ovas:
        return "No OVAs found."
    rows: list[list[Any]] = []
    for ova in sorted(ovas, key=lambda o: str(o.get("name"))):
        rows.append([ova.get("name"), ova.get("id")])
        for v in ova.get("volumes") or []:
            rows.append(["", "", v.get("disk_id"), _s(v.get("disk_size_gb")), v.get("pool"),
                         v.get("volume_name"), v.get("volume_format")])
    return grid([(None, "Name"), (None, "ID"), (None, "Disk ID"), (None, "Size [GB]"), (None, "Pool"),
                 (None, "Volume Name"), (None, "Volume Format")], rows)


def _raw(items: Sequence[dict[str, Any]]) -> str:
    return "\n".join(str(i.get("name")) for i in items)


SYSTEM_FORMATS = {"pretty": format_system_list, "raw": _raw, **json_formatters()}
NETWORK_FORMATS = {"pretty": format_network_list, "raw": _raw, **json_formatters()}
STORAGE_FORMATS = {"pretty": format_storage_list, "raw": _raw, **json_formatters()}
TEMPLATE_FORMATS = {"pretty": format_template_list, **json_formatters()}
USERDATA_FORMATS = {"pretty": format_userdata_list, "long": lambda d: format_userdata_list(d, None),
                    "raw": _raw, **json_formatters()}
SCRIPT_FORMATS = {"pretty": format_script_list, "long": lambda d: format_script_list(d, None), "raw": _raw,
                  **json_formatters()}
PROFILE_FORMATS = {"pretty": format_profile_list, "raw": _raw, **json_formatters()}
OVA_FORMATS = {"pretty": format_ova_list, "raw": _raw, **json_formatters()}


# -- plumbing ----------------------------------------------------------------------------------------

def _p(value: str | int) -> str:
    return quote(str(value), safe="")


def _say(method: str, path: str, params: dict[str, Any] | None = None,
         data: dict[str, Any] | None = None) -> None:
    """A call answered with `{"message": ...}`: print the message (errors exit non-zero)."""
    state = get_state()
    state.out(state.api().message(method, path, params=params, data=data))


def _list(path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [item for item in get_state().api().get_list(path, params=params) if isinstance(item, dict)]


def _read(filename: str) -> str:
    try:
        return Path(filename).read_text(encoding="utf-8") if filename != "-" else click.get_text_stream(
            "stdin").read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"Cannot read {filename}: {exc}") from None


def _show(text: str) -> None:
    get_state().out(text, nl=not text.endswith("\n"))


# -- provisioner -------------------------------------------------------------------------------------

@click.group(name="provisioner", short_help="Manage PVC provisioner.")
def group() -> None:
    """Manage the PVC provisioner: templates, userdata, scripts and profiles for creating VMs."""


@group.group(name="template", short_help="Manage PVC provisioner templates.")
def template() -> None:
    """Manage the system, network and storage templates that profiles combine."""


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
            click.option("--node-selector", "node_selector", type=click.Choice(SELECTORS), default=None,
                         help="Method to determine the optimal target node during migrations."),
            click.option("--node-autostart/--no-node-autostart", "node_autostart", default=False if required
                         else None, help="Autostart the VM with its node's return to ready state."),
            click.option("--migration-method", "migration_method", type=click.Choice(METHODS), default=None,
                         help="The preferred migration method of the VM between nodes."),
            click.option("--migration-max-downtime", "migration_max_downtime", type=int, default=None,
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
    _say("POST", "/provisioner/template/system", {"name": name, **values})


@system.command(name="modify", short_help="Modify an existing system template.")
@click.argument("name")
@_system_options(required=False)
def system_modify(name: str, **values: Any) -> None:
    """Modify the system template NAME; only the given options change."""
    _say("PUT", f"/provisioner/template/system/{_p(name)}", values)


@system.command(name="remove", short_help="Remove system template.")
@click.argument("name")
@confirm_option("Remove system template {name}")
def system_remove(name: str) -> None:
    """Remove the system template NAME (refused while a profile uses it)."""
    _say("DELETE", f"/provisioner/template/system/{_p(name)}")


@system.command(name="list", short_help="List all system templates.")
@click.argument("limit", required=False, default=None)
@format_option(SYSTEM_FORMATS)
def system_list(limit: str | None, formatter: Any) -> None:
    """List the system templates; optionally only those whose name matches the regex LIMIT."""
    get_state().emit(_list("/provisioner/template/system", {"limit": limit}), formatter)


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
    _say("POST", "/provisioner/template/network", {"name": name, "mac_template": mac_template})


@network.command(name="remove", short_help="Remove network template.")
@click.argument("name")
@confirm_option("Remove network template {name}")
def network_remove(name: str) -> None:
    """Remove the network template NAME (refused while a profile uses it)."""
    _say("DELETE", f"/provisioner/template/network/{_p(name)}")


@network.command(name="list", short_help="List all network templates.")
@click.argument("limit", required=False, default=None)
@format_option(NETWORK_FORMATS)
def network_list(limit: str | None, formatter: Any) -> None:
    """List the network templates; optionally only those whose name matches the regex LIMIT."""
    get_state().emit(_list("/provisioner/template/network", {"limit": limit}), formatter)


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
    _say("POST", f"/provisioner/template/network/{_p(name)}/net",
         {"vni": vni_id, "permit_duplicate": permit_duplicate})


@vni.command(name="remove", short_help="Remove network VNI from network template.")
@click.argument("name")
@click.argument("vni_id", metavar="VNI")
@confirm_option("Remove VNI {vni_id} from network template {name}")
def vni_remove(name: str, vni_id: str) -> None:
    """Remove the network VNI from network template NAME."""
    _say("DELETE", f"/provisioner/template/network/{_p(name)}/net/{_p(vni_id)}")


# storage templates

@template.group(name="storage", short_help="Manage PVC provisioner storage templates.")
def storage() -> None:
    """Manage storage templates: the disks of VMs, with their filesystems and mountpoints."""


@storage.command(name="add", short_help="Add new storage template.")
@click.argument("name")
def storage_add(name: str) -> None:
    """Add a new storage template NAME; add its disks with 'disk add'."""
    _say("POST", "/provisioner/template/storage", {"name": name})


@storage.command(name="remove", short_help="Remove storage template.")
@click.argument("name")
@confirm_option("Remove storage template {name}")
def storage_remove(name: str) -> None:
    """Remove the storage template NAME (refused while a profile uses it)."""
    _say("DELETE", f"/provisioner/template/storage/{_p(name)}")


@storage.command(name="list", short_help="List all storage templates.")
@click.argument("limit", required=False, default=None)
@format_option(STORAGE_FORMATS)
def storage_list(limit: str | None, formatter: Any) -> None:
    """List the storage templates; optionally only those whose name matches the regex LIMIT."""
    get_state().emit(_list("/provisioner/template/storage", {"limit": limit}), formatter)


@storage.group(name="disk", short_help="Manage disks in storage templates.")
def disk() -> None:
    """Manage the disks of a storage template."""


@disk.command(name="add", short_help="Add disk to storage template.")
@click.argument("name")
@click.argument("disk_id")
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
    """Add the disk DISK_ID (sdX or vdX) to storage template NAME.

    Example: pvc provisioner template storage disk add --pool vms --size 8 --filesystem ext4 --mountpoint /
    mytemplate sda
    """
    _say("POST", f"/provisioner/template/storage/{_p(name)}/disk",
         {"disk_id": disk_id, "pool": pool, "source_volume": source_volume, "disk_size": size,
          "filesystem": filesystem, "filesystem_arg": list(fsargs) or None, "mountpoint": mountpoint})


@disk.command(name="remove", short_help="Remove disk from storage template.")
@click.argument("name")
@click.argument("disk_id")
@confirm_option("Remove disk {disk_id} from storage template {name}")
def disk_remove(name: str, disk_id: str) -> None:
    """Remove the disk DISK_ID from storage template NAME."""
    _say("DELETE", f"/provisioner/template/storage/{_p(name)}/disk/{_p(disk_id)}")


# -- userdata ----------------------------------------------------------------------------------------

@group.group(name="userdata", short_help="Manage PVC provisioner userdata documents.")
def userdata() -> None:
    """Manage cloud-init userdata documents (served to VMs by the metadata service)."""


@userdata.command(name="add", short_help="Define userdata document from file.")
@click.argument("name")
@click.argument("filename", metavar="FILE", type=click.Path(dir_okay=False))
def userdata_add(name: str, filename: str) -> None:
    """Add the userdata document NAME from FILE (#cloud-config YAML, a script, or MIME multipart)."""
    _say("POST", "/provisioner/userdata", {"name": name}, data={"data": _read(filename)})


@userdata.command(name="modify", short_help="Modify existing userdata document from file.")
@click.argument("name")
@click.argument("filename", metavar="FILE", type=click.Path(dir_okay=False))
def userdata_modify(name: str, filename: str) -> None:
    """Replace the userdata document NAME with the contents of FILE."""
    _say("PUT", f"/provisioner/userdata/{_p(name)}", data={"data": _read(filename)})


@userdata.command(name="remove", short_help="Remove userdata document.")
@click.argument("name")
@confirm_option("Remove userdata document {name}")
def userdata_remove(name: str) -> None:
    """Remove the userdata document NAME (not 'empty', nor while a profile uses it)."""
    _say("DELETE", f"/provisioner/userdata/{_p(name)}")


@userdata.command(name="show", short_help="Show contents of userdata document.")
@click.argument("name")
def userdata_show(name: str) -> None:
    """Show the contents of the userdata document NAME."""
    _show(str(get_state().api().get_one(f"/provisioner/userdata/{_p(name)}", what="Userdata").get(
        "userdata", "")))


@userdata.command(name="list", short_help="List all userdata documents.")
@click.argument("limit", required=False, default=None)
@format_option(USERDATA_FORMATS)
def userdata_list(limit: str | None, formatter: Any) -> None:
    """List the userdata documents (their first lines; 'long' shows all); optionally only those whose
    name matches the regex LIMIT."""
    get_state().emit(_list("/provisioner/userdata", {"limit": limit}), formatter)


# -- scripts -----------------------------------------------------------------------------------------

@group.group(name="script", short_help="Manage PVC provisioner scripts.")
def script() -> None:
    """Manage provisioning scripts (Python defining class VMBuilderScript(VMBuilder))."""


@script.command(name="add", short_help="Define script from file.")
@click.argument("name")
@click.argument("filename", metavar="FILE", type=click.Path(dir_okay=False))
def script_add(name: str, filename: str) -> None:
    """Add the provisioning script NAME from FILE."""
    _say("POST", "/provisioner/script", {"name": name}, data={"data": _read(filename)})


@script.command(name="modify", short_help="Modify existing script from file.")
@click.argument("name")
@click.argument("filename", metavar="FILE", type=click.Path(dir_okay=False))
def script_modify(name: str, filename: str) -> None:
    """Replace the provisioning script NAME with the contents of FILE."""
    _say("PUT", f"/provisioner/script/{_p(name)}", data={"data": _read(filename)})


@script.command(name="remove", short_help="Remove script.")
@click.argument("name")
@confirm_option("Remove provisioning script {name}")
def script_remove(name: str) -> None:
    """Remove the provisioning script NAME (refused while a profile uses it)."""
    _say("DELETE", f"/provisioner/script/{_p(name)}")


@script.command(name="show", short_help="Show contents of script.")
@click.argument("name")
def script_show(name: str) -> None:
    """Show the contents of the provisioning script NAME."""
    _show(str(get_state().api().get_one(f"/provisioner/script/{_p(name)}", what="Script").get("script", "")))


@script.command(name="list", short_help="List all scripts.")
@click.argument("limit", required=False, default=None)
@format_option(SCRIPT_FORMATS)
def script_list(limit: str | None, formatter: Any) -> None:
    """List the provisioning scripts (their first lines; 'long' shows all); optionally only those whose
    name matches the regex LIMIT."""
    get_state().emit(_list("/provisioner/script", {"limit": limit}), formatter)


# -- profiles ----------------------------------------------------------------------------------------

def _profile_options(adding: bool) -> Any:
    def decorate(function: Any) -> Any:
        options = [
            click.option("-s", "--system-template", "system_template", required=adding, default=None,
                         help="The system template of the profile."),
            click.option("-n", "--network-template", "network_template", default=None,
                         help="The network template of the profile."),
            click.option("-t", "--storage-template", "storage_template", default=None,
                         help="The storage template of the profile."),
            click.option("-u", "--userdata", "userdata", default=None,
                         help="The userdata document of the profile."),
            click.option("-x", "--script", "script", required=adding, default=None,
                         help="The provisioning script of the profile."),
            click.option("-a", "--script-arg", "script_args", multiple=True,
                         help="An additional argument to the script's install() in 'arg=data' form; "
                              "repeatable" + ("" if adding else " (replaces all previous ones)") + "."),
        ]
        if adding:
            options.insert(0, click.option("-p", "--profile-type", "profile_type", default="provisioner",
                                           show_default=True, type=click.Choice(("provisioner", "ova")),
                                           help="The type of profile."))
            options.append(click.option("-o", "--ova", "ova", default=None,
                                        help="The OVA image of the profile (ova profiles)."))
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


@group.group(name="profile", short_help="Manage PVC provisioner profiles.")
def profile() -> None:
    """Manage profiles: a system template, network and storage templates, userdata, a script and its
    arguments, combined into what 'pvc provisioner create' builds."""


@profile.command(name="add", short_help="Add provisioner profile.")
@click.argument("name")
@_profile_options(adding=True)
def profile_add(name: str, profile_type: str, system_template: str, network_template: str | None,
                storage_template: str | None, userdata: str | None, script: str, ova: str | None,
                script_args: tuple[str, ...]) -> None:
    """Add a new provisioner profile NAME."""
    _say("POST", "/provisioner/profile",
         {"name": name, "profile_type": profile_type, "system_template": system_template,
          "network_template": network_template, "storage_template": storage_template, "userdata": userdata,
          "script": script, "ova": ova, "arg": list(script_args) or None})


@profile.command(name="modify", short_help="Modify provisioner profile.")
@click.argument("name")
@_profile_options(adding=False)
def profile_modify(name: str, system_template: str | None, network_template: str | None,
                   storage_template: str | None, userdata: str | None, script: str | None,
                   script_args: tuple[str, ...]) -> None:
    """Modify the provisioner profile NAME; only the given options change ("" removes an optional one)."""
    _say("PUT", f"/provisioner/profile/{_p(name)}",
         {"system_template": system_template, "network_template": network_template,
          "storage_template": storage_template, "userdata": userdata, "script": script,
          "arg": list(script_args) or None})


@profile.command(name="remove", short_help="Remove profile.")
@click.argument("name")
@confirm_option("Remove profile {name}")
def profile_remove(name: str) -> None:
    """Remove the provisioner profile NAME."""
    _say("DELETE", f"/provisioner/profile/{_p(name)}")


@profile.command(name="list", short_help="List all profiles.")
@click.argument("limit", required=False, default=None)
@format_option(PROFILE_FORMATS)
def profile_list(limit: str | None, formatter: Any) -> None:
    """List the provisioner profiles; optionally only those whose name matches the regex LIMIT."""
    get_state().emit(_list("/provisioner/profile", {"limit": limit}), formatter)


# -- OVA images --------------------------------------------------------------------------------------

@group.group(name="ova", short_help="Manage PVC provisioner OVA images.")
def ova() -> None:
    """Manage OVA images uploaded to the cluster (each with its profile and system template)."""


@ova.command(name="remove", short_help="Remove OVA image.")
@click.argument("name")
@confirm_option("Remove OVA image {name}")
def ova_remove(name: str) -> None:
    """Remove the OVA image NAME with its volumes, profile and system template."""
    _say("DELETE", f"/provisioner/ova/{_p(name)}")


@ova.command(name="list", short_help="List all OVA images.")
@click.argument("limit", required=False, default=None)
@format_option(OVA_FORMATS)
def ova_list(limit: str | None, formatter: Any) -> None:
    """List the OVA images and their volumes; optionally only those whose name matches the regex LIMIT."""
    get_state().emit(_list("/provisioner/ova", {"limit": limit}), formatter)


from pvc.cli.commands.provisioner import jobs as provisioner_jobs  # noqa: E402  (create, status, cancel, ova upload)

provisioner_jobs.register(group)

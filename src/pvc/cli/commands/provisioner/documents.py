"""`pvc provisioner userdata` and `pvc provisioner script`: the documents profiles name, read from
files (or stdin as "-") and sent as the form field `data`."""

from __future__ import annotations

from typing import Any

import click

from pvc.cli.commands.provisioner.common import list_items, quoted, read_document, say, show_document
from pvc.cli.commands.provisioner.formats import SCRIPT_FORMATS, USERDATA_FORMATS
from pvc.cli.state import confirm_option, format_option, get_state


@click.group(name="userdata", short_help="Manage PVC provisioner userdata documents.")
def userdata() -> None:
    """Manage cloud-init userdata documents (served to VMs by the metadata service)."""


@userdata.command(name="add", short_help="Define userdata document from file.")
@click.argument("name")
@click.argument("filename", metavar="FILE", type=click.Path(dir_okay=False))
def userdata_add(name: str, filename: str) -> None:
    """Add the userdata document NAME from FILE (#cloud-config YAML, a script, or MIME multipart)."""
    say("POST", "/provisioner/userdata", {"name": name}, data={"data": read_document(filename)})


@userdata.command(name="modify", short_help="Modify existing userdata document from file.")
@click.argument("name")
@click.argument("filename", metavar="FILE", type=click.Path(dir_okay=False))
def userdata_modify(name: str, filename: str) -> None:
    """Replace the userdata document NAME with the contents of FILE."""
    say("PUT", f"/provisioner/userdata/{quoted(name)}", data={"data": read_document(filename)})


@userdata.command(name="remove", short_help="Remove userdata document.")
@click.argument("name")
@confirm_option("Remove userdata document {name}")
def userdata_remove(name: str) -> None:
    """Remove the userdata document NAME (not 'empty', nor while a profile uses it)."""
    say("DELETE", f"/provisioner/userdata/{quoted(name)}")


@userdata.command(name="show", short_help="Show contents of userdata document.")
@click.argument("name")
def userdata_show(name: str) -> None:
    """Show the contents of the userdata document NAME."""
    item = get_state().api().get_one(f"/provisioner/userdata/{quoted(name)}", what="Userdata")
    show_document(str(item.get("userdata", "")))


@userdata.command(name="list", short_help="List all userdata documents.")
@click.argument("limit", required=False, default=None)
@format_option(USERDATA_FORMATS)
def userdata_list(limit: str | None, formatter: Any) -> None:
    """List the userdata documents (their first lines; 'long' shows all); optionally only those whose
    name matches the regex LIMIT."""
    get_state().emit(list_items("/provisioner/userdata", {"limit": limit}), formatter)


# scripts

@click.group(name="script", short_help="Manage PVC provisioner scripts.")
def script() -> None:
    """Manage provisioning scripts (Python defining class VMBuilderScript(VMBuilder))."""


@script.command(name="add", short_help="Define script from file.")
@click.argument("name")
@click.argument("filename", metavar="FILE", type=click.Path(dir_okay=False))
def script_add(name: str, filename: str) -> None:
    """Add the provisioning script NAME from FILE."""
    say("POST", "/provisioner/script", {"name": name}, data={"data": read_document(filename)})


@script.command(name="modify", short_help="Modify existing script from file.")
@click.argument("name")
@click.argument("filename", metavar="FILE", type=click.Path(dir_okay=False))
def script_modify(name: str, filename: str) -> None:
    """Replace the provisioning script NAME with the contents of FILE."""
    say("PUT", f"/provisioner/script/{quoted(name)}", data={"data": read_document(filename)})


@script.command(name="remove", short_help="Remove script.")
@click.argument("name")
@confirm_option("Remove provisioning script {name}")
def script_remove(name: str) -> None:
    """Remove the provisioning script NAME (refused while a profile uses it)."""
    say("DELETE", f"/provisioner/script/{quoted(name)}")


@script.command(name="show", short_help="Show contents of script.")
@click.argument("name")
def script_show(name: str) -> None:
    """Show the contents of the provisioning script NAME."""
    item = get_state().api().get_one(f"/provisioner/script/{quoted(name)}", what="Script")
    show_document(str(item.get("script", "")))


@script.command(name="list", short_help="List all scripts.")
@click.argument("limit", required=False, default=None)
@format_option(SCRIPT_FORMATS)
def script_list(limit: str | None, formatter: Any) -> None:
    """List the provisioning scripts (their first lines; 'long' shows all); optionally only those whose
    name matches the regex LIMIT."""
    get_state().emit(list_items("/provisioner/script", {"limit": limit}), formatter)

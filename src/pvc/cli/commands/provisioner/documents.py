"""`pvc provisioner userdata` and `pvc provisioner script`: the documents profiles name, read from
files (or stdin as "-") and sent as the form field `data`.

Both groups have the same five commands (add, modify, remove, show, list); `document_group` makes
them for one kind, from the words that name its documents.
"""

from __future__ import annotations

import click

from pvc.cli.commands.provisioner.common import (
    edit_document,
    list_command,
    quoted,
    read_document,
    remove_command,
    say,
    show_document,
)
from pvc.cli.commands.provisioner.formats import SCRIPT_FORMATS, USERDATA_FORMATS
from pvc.cli.errors import CLIError
from pvc.cli.output import Formatter
from pvc.cli.state import get_state

EXTENSIONS = {"userdata": ".yaml", "script": ".py"}  # the editor's syntax highlighting, as upstream


def document_group(kind: str, short: str, long: str, formats: dict[str, Formatter], group_help: str,
                   add_detail: str, remove_note: str) -> click.Group:
    """The group `kind` (the API's path and key of the text): `short` names one document in short
    helps ("script"), `long` in full helps ("provisioning script")."""
    path = f"/provisioner/{kind}"

    @click.group(name=kind, short_help=f"Manage PVC provisioner {short}s.", help=group_help)
    def group() -> None:
        pass

    @group.command(name="add", short_help=f"Define {short} from file.",
                   help=f"Add the {long} NAME from FILE{add_detail}.")
    @click.argument("name")
    @click.argument("filename", metavar="FILE", type=click.Path(dir_okay=False))
    def add(name: str, filename: str) -> None:
        say("POST", path, {"name": name}, data={"data": read_document(filename)})

    @group.command(name="modify", short_help=f"Modify existing {short}.",
                   help=f"Replace the {long} NAME with the contents of FILE, or edit it in $EDITOR "
                        f"(-e/--editor: the changes are shown and confirmed first).")
    @click.argument("name")
    @click.argument("filename", metavar="[FILE]", type=click.Path(dir_okay=False), required=False,
                    default=None)
    @click.option("-e", "--editor", is_flag=True, default=False,
                  help=f"Edit the current {short} in $EDITOR.")
    def modify(name: str, filename: str | None, editor: bool) -> None:
        if filename is None and not editor:
            raise CLIError('Either a file or the "--editor" option must be specified.')
        if editor:
            item = get_state().api().get_one(f"{path}/{quoted(name)}", what=kind.capitalize())
            text = edit_document(str(item.get(kind) or ""), EXTENSIONS[kind])
            if text is None:
                return
        else:
            assert filename is not None
            text = read_document(filename)
        say("PUT", f"{path}/{quoted(name)}", data={"data": text})

    remove_command(group, path, f"Remove {short}.", f"Remove {long} {{name}}",
                   f"Remove the {long} NAME ({remove_note}).")

    @group.command(name="show", short_help=f"Show contents of {short}.",
                   help=f"Show the contents of the {long} NAME.")
    @click.argument("name")
    def show(name: str) -> None:
        item = get_state().api().get_one(f"{path}/{quoted(name)}", what=kind.capitalize())
        show_document(str(item.get(kind, "")))

    list_command(group, path, formats, f"List all {short}s.",
                 f"the {long}s (their first lines; -l/--long or the 'long' format shows all)",
                 long_format="long")
    return group


userdata = document_group(
    "userdata", "userdata document", "userdata document", USERDATA_FORMATS,
    "Manage cloud-init userdata documents (served to VMs by the metadata service).",
    " (#cloud-config YAML, a script, or MIME multipart)", "not 'empty', nor while a profile uses it")
script = document_group(
    "script", "script", "provisioning script", SCRIPT_FORMATS,
    "Manage provisioning scripts (Python defining class VMBuilderScript(VMBuilder)).",
    "", "refused while a profile uses it")

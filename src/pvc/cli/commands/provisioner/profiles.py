"""`pvc provisioner profile`: profiles, what `pvc provisioner create` builds (a system template,
network and storage templates, userdata, a script and its arguments, or an OVA)."""

from __future__ import annotations

from typing import Any

import click

from pvc.cli.commands.provisioner.common import list_command, quoted, remove_command, say
from pvc.cli.commands.provisioner.formats import PROFILE_FORMATS
from pvc.core.vocabulary import PROFILE_TYPES


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
        if not adding:
            options.insert(5, click.option("-d", "--delete-script-args", "delete_script_args", is_flag=True,
                                           default=False, help="Delete the existing script arguments."))
        if adding:
            options.insert(0, click.option("-p", "--profile-type", "profile_type", default="provisioner",
                                           show_default=True, type=click.Choice(PROFILE_TYPES),
                                           help="The type of profile."))
            options.append(click.option("-o", "--ova", "ova", default=None,
                                        help="The OVA image of the profile (ova profiles)."))
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


@click.group(name="profile", short_help="Manage PVC provisioner profiles.")
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
    say("POST", "/provisioner/profile",
         {"name": name, "profile_type": profile_type, "system_template": system_template,
          "network_template": network_template, "storage_template": storage_template, "userdata": userdata,
          "script": script, "ova": ova, "arg": list(script_args) or None})


@profile.command(name="modify", short_help="Modify provisioner profile.")
@click.argument("name")
@_profile_options(adding=False)
def profile_modify(name: str, system_template: str | None, network_template: str | None,
                   storage_template: str | None, userdata: str | None, script: str | None,
                   delete_script_args: bool, script_args: tuple[str, ...]) -> None:
    """Modify the provisioner profile NAME; only the given options change ("" removes an optional one).

    -a/--script-arg replaces all script arguments; -d/--delete-script-args removes them (with -a,
    only the new ones remain).
    """
    # The API replaces the arguments with the given ones; one empty value removes them all.
    args = list(script_args) or ([""] if delete_script_args else None)
    say("PUT", f"/provisioner/profile/{quoted(name)}",
         {"system_template": system_template, "network_template": network_template,
          "storage_template": storage_template, "userdata": userdata, "script": script, "arg": args})


remove_command(profile, "/provisioner/profile", "Remove profile.", "Remove profile {name}",
               "Remove the provisioner profile NAME.")
list_command(profile, "/provisioner/profile", PROFILE_FORMATS, "List all profiles.",
             "the provisioner profiles")

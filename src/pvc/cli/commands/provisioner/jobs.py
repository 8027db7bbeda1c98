"""`pvc provisioner create|status|cancel`: provisioning jobs (the seed's "Deploying VMs").

`create` posts to `/provisioner/create` as upstream's client does (name, profile, define_vm,
start_vm and repeated `arg` in the query string); `--wait` follows the job with a progress bar
showing the stage text. `status` and `cancel` use our `/provisioner/status[/<id>]` routes.
"""

from __future__ import annotations

from typing import Any

import click

from pvc.cli.client import decode
from pvc.cli.errors import CLIError
from pvc.cli.output import json_formatters, table
from pvc.cli.state import get_state
from pvc.cli.waiters import run_task

BASE = "/provisioner"
STATE_WORDS = {"RUNNING": "active", "PENDING": "pending", "SUCCESS": "success", "FAILURE": "failure",
               "CANCELLED": "cancelled"}


def format_job_list(jobs: list[dict[str, Any]]) -> Any:
    rows = [(j.get("id"), STATE_WORDS.get(str(j.get("state")), str(j.get("state", "")).lower()),
             j.get("worker") or j.get("target") or "", j.get("vm_name"), j.get("vm_profile"),
             j.get("define_vm"), j.get("start_vm"), j.get("status")) for j in jobs]
    return table(["Job ID", "Status", "Worker", "VM: Name", "Profile", "Define?", "Start?", "Stage"], rows)


def format_job(status: dict[str, Any]) -> str:
    return (f"Job state: {status.get('state')}\nStage: {status.get('current')}/{status.get('total')}\n"
            f"Status: {status.get('status')}")


JOB_LIST_FORMATS = {"pretty": format_job_list, **json_formatters()}
JOB_FORMATS = {"pretty": format_job, **json_formatters()}


def _script_arg(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        if "=" not in value or not value.split("=", 1)[0].strip():
            raise click.BadParameter(f"'{value}' is not in key=value form")
    return values


@click.command(name="create", short_help="Create a new VM with a provisioner profile.")
@click.argument("name")
@click.argument("profile")
@click.option("--wait/--no-wait", "wait", default=True, show_default=True,
              help="Wait for the job to finish, showing its progress (as upstream, the default).")
@click.option("-d/-D", "--define/--no-define", "define_vm", default=True, show_default=True,
              help="Define the VM on the cluster (--no-define implies --no-start).")
@click.option("-s/-S", "--start/--no-start", "start_vm", default=True, show_default=True,
              help="Start the VM once it is provisioned.")
@click.option("-a", "--script-arg", "script_args", multiple=True, metavar="KEY=VALUE", callback=_script_arg,
              help="An extra argument for the script (overrides the profile's); repeat for several.")
def create(name: str, profile: str, wait: bool, define_vm: bool, start_vm: bool,
           script_args: tuple[str, ...]) -> None:
    """Create the VM NAME with the provisioner profile PROFILE (a job on the primary's worker).

    As upstream, the command follows the job to its end; --no-wait prints its task ID instead.
    """
    state = get_state()
    start_vm = start_vm and define_vm
    params: dict[str, Any] = {"name": name, "profile": profile, "define_vm": str(define_vm).lower(),
                              "start_vm": str(start_vm).lower(), "arg": list(script_args)}
    body = decode(state.api().call("POST", f"{BASE}/create", params=params, ok=(202,)))
    run_task(state, body, wait)


@click.command(name="status", short_help="Show provisioning jobs.")
@click.argument("job", required=False, default=None)
@click.option("-a", "--all", "show_all", is_flag=True, default=False,
              help="Also list finished jobs.")
@click.option("-f", "--format", "output_format", type=click.Choice(list(JOB_FORMATS)), default="pretty",
              show_default=True, help="Output format.")
def status(job: str | None, show_all: bool, output_format: str) -> None:
    """Show the provisioning job JOB, or list running and waiting jobs."""
    state = get_state()
    api = state.api()
    if job:
        state.emit(api.get_json(f"{BASE}/status/{job}"), JOB_FORMATS[output_format])
        return
    jobs = api.get_json(f"{BASE}/status", params={"all": "true"} if show_all else None)
    if not isinstance(jobs, list):
        raise CLIError(f"Unexpected answer from the API: {jobs!r}")
    state.emit(jobs, JOB_LIST_FORMATS[output_format])


@click.command(name="cancel", short_help="Cancel a provisioning job.")
@click.argument("job")
def cancel(job: str) -> None:
    """Cancel the provisioning job JOB: a waiting job is dropped; a running one stops at once, runs
    its script's cleanup() and removes the volumes and VM definition it made."""
    state = get_state()
    body = decode(state.api().call("DELETE", f"{BASE}/status/{job}"))
    state.out(body.get("message", "") if isinstance(body, dict) else str(body))


COMMANDS = (create, status, cancel)

"""`pvc vm autobackup` and `pvc vm automirror`: run the cluster's autobackup or automirror now (a task
on the primary), as upstream's commands; `--cron` is for timers (queue, print nothing)."""

from __future__ import annotations

import click

from pvc.cli.client import decode
from pvc.cli.state import get_state, wait_option
from pvc.cli.waiters import run_task


def _recipients(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _run(path: str, params: dict[str, object], wait: bool, cron: bool) -> None:
    state = get_state()
    if cron:
        state.quiet = True            # as --quiet: no connection header; a failure still names itself
    body = decode(state.api().call("POST", path, params=params, ok=(202,)))
    if cron:
        return                        # upstream's cron mode: queued, no output
    run_task(state, body, wait)


@click.command(name="autobackup", short_help="Perform automatic virtual machine backups.")
@click.option("--email-report", "email_report", default=None, metavar="ADDRESS[,ADDRESS...]",
              help="Email a backup summary report to these addresses (comma-separated).")
@click.option("--force-full", "force_full", is_flag=True, default=False,
              help="Force all backups to be full backups this run.")
@click.option("--cleanup", "cleanup", is_flag=True, default=False,
              help="Also remove orphan autobackup (ab...) snapshots that no retained backup accounts for.")
@wait_option(True)
@click.option("--cron", "cron", is_flag=True, default=False,
              help="Cron mode: queue the run and return at once with no output (implies --no-wait).")
def autobackup(email_report: str | None, force_full: bool, cleanup: bool, wait: bool, cron: bool) -> None:
    """Back up every VM carrying one of the cluster's backup_tags, as the `autobackup` section of
    pvc.conf on the coordinators says (target, full interval, retention, mount commands).

    Full or incremental follows backup_schedule; a failed backup never counts as a full or toward
    retention. The primary can also run this on its own schedule (autobackup.schedule); this
    command and external timers keep working beside it.
    """
    params: dict[str, object] = {"force_full": force_full, "cleanup": cleanup}
    recipients = _recipients(email_report)
    if recipients:
        params["email_recipients"] = recipients
    _run("/vm/autobackup", params, wait and not cron, cron)


@click.command(name="automirror", short_help="Perform automatic virtual machine mirrors.")
@click.option("--email-report", "email_report", default=None, metavar="ADDRESS[,ADDRESS...]",
              help="Email a mirror summary report to these addresses (comma-separated).")
@click.option("--email-errors-only", "email_errors_only", is_flag=True, default=False,
              help="Send the report only when a VM or destination failed.")
@wait_option(True)
@click.option("--cron", "cron", is_flag=True, default=False,
              help="Cron mode: queue the run and return at once with no output (implies --no-wait).")
def automirror(email_report: str | None, email_errors_only: bool, wait: bool, cron: bool) -> None:
    """Mirror every VM carrying one of the cluster's mirror_tags to its destination cluster(s), as
    the `automirror` section of pvc.conf says (a tag `T:<destination>` picks a destination).

    Each VM gets one am<datestring> snapshot, sent incrementally where both sides share an earlier
    one; the oldest beyond keep_snapshots are removed on both sides.
    """
    params: dict[str, object] = {"email_errors_only": email_errors_only}
    recipients = _recipients(email_report)
    if recipients:
        params["email_recipients"] = recipients
    _run("/vm/automirror", params, wait and not cron, cron)


COMMANDS: tuple[click.Command, ...] = (autobackup, automirror)

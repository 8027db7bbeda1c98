"""The `pvc` entry point: global options, the command tree and uniform error handling."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from pvc import __version__
from pvc.cli.commands import AREAS
from pvc.cli.errors import CLIError
from pvc.cli.output import escape_controls
from pvc.cli.state import CLIState

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 120}
SECRET_OPTIONS = ("-k", "--api-key")


class PVCGroup(click.Group):
    """Root group: turns every CLIError into one line on stderr and its exit code, no traceback.

    Anything unexpected is also one line (with --debug, the traceback is shown instead).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CLIError as exc:
            self._report(ctx, exc.message)
            ctx.exit(exc.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            state = ctx.find_object(CLIState)
            if state is not None and state.debug:
                raise
            self._report(ctx, f"Unexpected error: {type(exc).__name__}: {exc} (use --debug for details)")
            ctx.exit(1)
        finally:
            state = ctx.find_object(CLIState)
            if state is not None:
                state.close()


    @staticmethod
    def _report(ctx: click.Context, message: str) -> None:
        state = ctx.find_object(CLIState)
        if state is None or not state.silent:
            click.echo(escape_controls(message), err=True)


def audit(argv: Sequence[str]) -> None:
    """Log the invocation to syslog AUTH like upstream's client (API keys masked); best effort."""
    try:
        import syslog
    except ImportError:  # not on this platform
        return
    words = list(argv)
    for index, word in enumerate(words):
        if word in SECRET_OPTIONS and index + 1 < len(words):
            words[index + 1] = "********"
        elif word.startswith("--api-key="):
            words[index] = "--api-key=********"
    try:
        syslog.openlog(ident=f"pvc[{os.getpid()}]", facility=syslog.LOG_AUTH)
        syslog.syslog(f'client audit: command "{" ".join(words)}" by user {os.environ.get("USER")}')
        syslog.closelog()
    except OSError:
        pass


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"Parallel Virtual Cluster CLI client version {__version__}")
    ctx.exit()


@click.group(cls=PVCGroup, context_settings=CONTEXT_SETTINGS)
@click.option("-c", "--connection", "connection", envvar="PVC_CONNECTION", default=None, metavar="NAME",
              help="Cluster connection to use (see 'pvc connection list').")
@click.option("-v", "--debug", "debug", envvar="PVC_DEBUG", is_flag=True, default=False,
              help="Show API requests and responses on stderr.")
@click.option("-q", "--quiet", "quiet", envvar="PVC_QUIET", is_flag=True, default=False,
              help="Suppress informational output on stderr.")
@click.option("-s", "--silent", "silent", envvar="PVC_SILENT", is_flag=True, default=False,
              help="Suppress all output on stdout and stderr (the exit code still tells).")
@click.option("-u", "--unsafe", "unsafe", envvar="PVC_UNSAFE", is_flag=True, default=False,
              help='Perform unsafe operations without confirmation or "--yes".')
@click.option("--colour/--no-colour", "--color/--no-color", "colour", envvar="PVC_COLOUR", default=None,
              help="Force colour on or off (default: colour when writing to a terminal).")
@click.option("--version", is_flag=True, callback=_version, expose_value=False, is_eager=True,
              help="Show the CLI version and exit.")
@click.pass_context
def cli(ctx: click.Context, connection: str | None, debug: bool, quiet: bool, silent: bool, unsafe: bool,
        colour: bool | None) -> None:
    """Parallel Virtual Cluster command-line client.

    \b
    Environment variables:
      PVC_CONNECTION  connection to use instead of -c/--connection
      PVC_DEBUG, PVC_QUIET, PVC_SILENT, PVC_UNSAFE, PVC_COLOUR  as the options
      PVC_CLIENT_DIR  directory of the connection store (default ~/.config/pvc)
      PVC_CONFIG_FILE node configuration read for the implicit "local" connection
                      (default /etc/pvc/pvc.conf)
      PVC_CLIENT_VERIFY_SSL  set to false to skip TLS certificate checks

    Without a connection the client uses the only one defined, else "local".
    """
    seed = ctx.obj if isinstance(ctx.obj, dict) else {}
    ctx.obj = CLIState(connection_name=connection or None, debug=debug, quiet=quiet, silent=silent,
                       unsafe=unsafe, colour=colour, transport=seed.get("transport"),
                       env=seed.get("env", dict(os.environ)))
    if not seed.get("no_audit"):
        audit(sys.argv)


for _area in AREAS:
    cli.add_command(_area)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (`pvc = pvc.cli.main:main`)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="pvc")

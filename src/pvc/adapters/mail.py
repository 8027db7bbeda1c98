"""The external programs autobackup and automirror run: `sendmail -t` for their reports, and the
operator's mount/unmount commands for the backup target (argument vectors, never a shell).
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate

SENDMAIL = "/usr/sbin/sendmail"


class CommandFailed(Exception):
    """A command that could not run or exited non-zero; the message names it and its output."""


@dataclass(frozen=True)
class Outcome:
    argv: tuple[str, ...]
    returncode: int
    output: str


def run_argv(argv: Sequence[str], timeout: float = 300.0, stdin: bytes | None = None) -> Outcome:
    """Run one command without a shell; CommandFailed when it cannot start, times out or fails."""
    if not argv:
        raise CommandFailed("empty command")
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, timeout=timeout, check=False,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise CommandFailed(f"{argv[0]}: no such program") from None
    except PermissionError:
        raise CommandFailed(f"{argv[0]}: not executable") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{' '.join(argv)} did not finish within {timeout:.0f}s") from None
    text = (done.stderr or done.stdout or b"").decode(errors="replace").strip()
    if len(text) > 600:
        text = "..." + text[-600:]
    if done.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)} failed (exit {done.returncode}): {text or 'no output'}")
    return Outcome(tuple(argv), done.returncode, text)


def compose(sender: str, recipients: Sequence[str], subject: str, body: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=True)
    message.set_content(body)
    return bytes(message)


def default_sender(system: str) -> str:
    """`PVC <System> <root@host>`, upstream's style of sender."""
    return f"PVC {system} <root@{socket.getfqdn()}>"


def send_mail(recipients: Sequence[str], subject: str, body: str, sender: str,
              sendmail: str | None = None) -> None:
    """Hand a message to `sendmail -t` on stdin (recipients from its To: header)."""
    run_argv([sendmail or SENDMAIL, "-t"], timeout=60, stdin=compose(sender, recipients, subject, body))

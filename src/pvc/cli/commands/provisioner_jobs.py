"""`pvc provisioner` job commands: create, status, cancel, ova upload."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Filled in by the job commands."""

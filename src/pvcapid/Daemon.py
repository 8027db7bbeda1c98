"""`from pvcapid.Daemon import config` for upstream scripts: the running job's settings."""

from __future__ import annotations

from typing import Any


def get_config() -> Any:
    """The settings of the job running this script, else the node's configuration file."""
    from pvc.worker.provisioner import sandbox

    if sandbox.SETTINGS is not None:
        return sandbox.SETTINGS
    from pvc.core.config import load_config

    sandbox.SETTINGS = load_config()
    return sandbox.SETTINGS


def __getattr__(name: str) -> Any:
    if name == "config":
        return get_config()
    raise AttributeError(name)

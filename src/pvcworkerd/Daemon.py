"""`from pvcworkerd.Daemon import config`: the same settings as pvcapid.Daemon.config."""

from __future__ import annotations

from typing import Any

from pvcapid.Daemon import get_config

__all__ = ["get_config"]


def __getattr__(name: str) -> Any:
    if name == "config":
        return get_config()
    raise AttributeError(name)

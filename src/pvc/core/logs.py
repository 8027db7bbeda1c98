"""Daemon logging set-up from the config's `logging` section."""

from __future__ import annotations

import logging
import sys

from pvc.core.config import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(settings: Settings, daemon: str) -> logging.Logger:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(settings.logging.level.upper())
    formatter = logging.Formatter(FORMAT)
    if settings.logging.stdout:
        stream = logging.StreamHandler(sys.stdout)
        stream.setFormatter(formatter)
        root.addHandler(stream)
    if settings.logging.file:
        handler = logging.FileHandler(settings.logging.file)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    # kazoo is chatty about reconnect attempts; our session listener logs the state changes.
    logging.getLogger("kazoo").setLevel(logging.WARNING)
    return logging.getLogger(daemon)

"""Daemon logging set-up from the config's `logging` section."""

from __future__ import annotations

import logging
import logging.handlers
import sys

from pvc.core.config import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def file_handler(settings: Settings) -> logging.Handler:
    """The daemon's log file, rotated by size (logging.file_max_bytes, file_backups kept): a flood
    of log lines, some of them carrying guest or user text, cannot fill the disk."""
    logs = settings.logging
    return logging.handlers.RotatingFileHandler(str(logs.file), maxBytes=logs.file_max_bytes,
                                                backupCount=logs.file_backups)


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
        handler = file_handler(settings)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    # kazoo is chatty about reconnect attempts; our session listener logs the state changes.
    logging.getLogger("kazoo").setLevel(logging.WARNING)
    return logging.getLogger(daemon)

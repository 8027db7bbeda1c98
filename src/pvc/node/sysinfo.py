"""Facts about this host: static data at registration, resource figures at each keepalive."""

from __future__ import annotations

import os
import platform
from typing import Any

import psutil


def os_name() -> str:
    try:
        with open("/etc/os-release") as handle:
            fields = dict(line.rstrip("\n").split("=", 1) for line in handle if "=" in line)
        return fields.get("ID", "linux").strip('"') + "-" + fields.get("VERSION_ID", "").strip('"')
    except OSError:
        return platform.system().lower()


def static_data() -> dict[str, Any]:
    return {
        "cpu_count": psutil.cpu_count() or 1,
        "kernel": platform.release(),
        "os": os_name(),
        "arch": platform.machine(),
    }


def resource_figures() -> dict[str, Any]:
    """Memory in MiB (psutil total/used/available, as upstream reports) and 1-minute load."""
    mem = psutil.virtual_memory()
    mib = 1024 * 1024
    return {
        "load": round(os.getloadavg()[0], 2),
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory_total": mem.total // mib,
        "memory_used": mem.used // mib,
        "memory_free": mem.available // mib,
        "rss_bytes": psutil.Process().memory_info().rss,
    }

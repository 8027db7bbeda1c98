"""This host outside the driver: the self-test's read-only libvirt probe, and the self-fence's
QEMU killer (which must not wait for libvirtd)."""

from __future__ import annotations

import os
from typing import Any

from pvc.adapters.hypervisor.base import HypervisorUnavailable


def probe(uri: str) -> dict[str, Any]:
    """Open a read-only connection and report versions; raise HypervisorUnavailable on failure."""
    try:
        import libvirt
    except ImportError as exc:
        raise HypervisorUnavailable("python3-libvirt is not installed") from exc
    try:
        conn = libvirt.openReadOnly(uri)
    except libvirt.libvirtError as exc:
        raise HypervisorUnavailable(f"cannot connect to {uri}: {exc.get_error_message()}") from None
    try:
        lib = conn.getLibVersion()
        return {
            "uri": uri,
            "hostname": conn.getHostname(),
            "libvirt_version": f"{lib // 1000000}.{lib // 1000 % 1000}.{lib % 1000}",
            "domains": conn.numOfDomains(),
        }
    finally:
        conn.close()


def kill_local_qemu(uuids: set[str]) -> list[str]:
    """SIGKILL the QEMUs of these VMs in this network namespace (nodes share one process table in
    the lab); the UUIDs killed. How the self-fence stops VMs: it cannot wait for libvirtd, whose
    calls may queue behind a stats query stuck on unreachable storage."""
    import psutil

    try:
        mine = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return []
    killed = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if not cmdline or "qemu" not in os.path.basename(cmdline[0]) or "-uuid" not in cmdline:
            continue
        position = cmdline.index("-uuid") + 1
        uuid = cmdline[position] if position < len(cmdline) else ""
        if uuid not in uuids:
            continue
        try:
            if os.stat(f"/proc/{proc.pid}/ns/net").st_ino != mine:
                continue
            proc.kill()
        except (OSError, psutil.Error):
            continue
        killed.append(uuid)
    return killed

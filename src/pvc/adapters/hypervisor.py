"""libvirt access. The VM issue grows this into the full hypervisor driver."""

from __future__ import annotations

from typing import Any


class HypervisorUnavailable(Exception):
    pass


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

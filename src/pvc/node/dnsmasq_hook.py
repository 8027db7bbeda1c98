"""dnsmasq's --dhcp-script for PVC networks: leases live in ZooKeeper, not in a local file.

dnsmasq runs with --leasefile-ro, so it asks this script for its leases at start (`init`) and
reports every change (`add`, `old`, `del`). The primary's network reconciler writes the cluster's
leases to a snapshot file before it starts dnsmasq, so `init` needs no ZooKeeper session and
dnsmasq starts serving at once; changes go to /netleases/<vni>/<mac>, where the API lists them
and the next primary's dnsmasq picks them up after a hand-over.

Environment (set by the reconciler on dnsmasq, inherited by this script): PVC_CONFIG_FILE,
PVC_NETWORK_VNI, PVC_LEASE_SNAPSHOT; dnsmasq adds DNSMASQ_LEASE_EXPIRES, DNSMASQ_CLIENT_ID.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def lease_doc(mac: str, ip: str, hostname: str | None, env: dict[str, str], now: float) -> dict[str, Any]:
    """The /netleases document for one dnsmasq event (pure)."""
    expires = env.get("DNSMASQ_LEASE_EXPIRES")
    if not expires and env.get("DNSMASQ_LEASE_LENGTH"):
        expires = str(int(now) + int(env["DNSMASQ_LEASE_LENGTH"]))
    return {
        "mac_address": mac,
        "ip4_address": ip,
        "hostname": hostname or None,
        "clientid": env.get("DNSMASQ_CLIENT_ID") or "*",
        "expiry": int(expires) if expires and expires.isdigit() else 0,
        "timestamp": int(now),
    }


def _init(env: dict[str, str]) -> int:
    snapshot = env.get("PVC_LEASE_SNAPSHOT")
    if snapshot and Path(snapshot).exists():
        sys.stdout.write(Path(snapshot).read_text())
    return 0


def _record(action: str, mac: str, ip: str, hostname: str | None, env: dict[str, str]) -> int:
    from pvc.core import schema
    from pvc.core.config import load_config
    from pvc.core.zk import ZK

    vni = env.get("PVC_NETWORK_VNI", "")
    if not vni.isdigit():
        print("pvc-dnsmasq-hook: PVC_NETWORK_VNI is not set", file=sys.stderr)
        return 1
    zk = ZK.from_settings(load_config(env.get("PVC_CONFIG_FILE") or None))
    zk.start(timeout=10)
    try:
        if action == "del":
            zk.delete(schema.network_lease(vni, mac))
        else:
            zk.put(schema.network_lease(vni, mac), lease_doc(mac, ip, hostname, env, time.time()))
    finally:
        zk.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    if not args:
        return 0
    action = args[0]
    if action == "init":
        return _init(env)
    if action not in ("add", "old", "del") or len(args) < 3:
        return 0                     # tftp and arp events: nothing to record
    mac, ip = args[1].lower(), args[2]
    hostname = args[3] if len(args) > 3 else None
    if not MAC_RE.match(mac):
        return 0                     # non-Ethernet hardware addresses are not VM NICs
    try:
        return _record(action, mac, ip, hostname, env)
    except Exception as exc:           # dnsmasq only logs the exit code; say why on stderr
        print(f"pvc-dnsmasq-hook: cannot record lease {action} {mac} {ip}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

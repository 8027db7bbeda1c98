"""Per-interface NIC traffic of this node: rates, link speed and state in the node document.

Every keepalive interval the collector reads `/sys/class/net/<if>/{operstate,speed,statistics}`
(in the lab, the node's own network namespace: the daemon runs inside it) and publishes, for
each physical NIC and each configured device (cluster, bridge, upstream, and the bond slaves
and vLAN parents behind them), upstream's figures: `rx_bps`, `tx_bps`, `total_bps` (bit/s),
`rx_pps`, `tx_pps`, `total_pps`, `link_speed` (bit/s, 0 when unknown) and `state` (kernel
operstate). Rates are over the last interval; the first sample publishes zeros. A few small
file reads per interface: cheap enough to run with the keepalive.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from pvc.core.config import Settings
from pvc.node.services.nodedoc import NodeDocument

log = logging.getLogger("pvcnoded")

SYS_NET = Path("/sys/class/net")
COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return ""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def related(root: Path, devices: set[str]) -> set[str]:
    """The devices plus what lies behind them: a vLAN's parent (`lower_*`), a bond's slaves."""
    result, todo = set(), [d for d in devices if d]
    while todo:
        dev = todo.pop()
        if dev in result or not (root / dev).exists():
            continue
        result.add(dev)
        try:
            todo += [p.name.removeprefix("lower_") for p in (root / dev).glob("lower_*")]
        except OSError:
            pass
        todo += _read(root / dev / "bonding" / "slaves").split()
    return result


def interfaces(root: Path, configured: set[str]) -> list[str]:
    """Physical NICs (those with a `device` link) and the configured devices, sorted."""
    try:
        names = {p.name for p in root.iterdir()}
    except OSError:
        return []
    physical = {n for n in names if (root / n / "device").exists()}
    return sorted((physical | related(root, configured)) - {"lo"})


def sample(root: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """One reading of counters, speed and state per interface."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        base = root / name
        stats = {c: _int(_read(base / "statistics" / c)) for c in COUNTERS}
        speed = _int(_read(base / "speed"))           # Mb/s; -1 or unreadable when the link is down
        out[name] = {**stats, "speed": max(speed, 0), "state": _read(base / "operstate") or "unknown"}
    return out


def rates(before: dict[str, dict[str, Any]] | None, after: dict[str, dict[str, Any]],
          seconds: float) -> dict[str, dict[str, Any]]:
    """Upstream's per-interface figures from two samples `seconds` apart (counters that went
    backwards, e.g. a re-created device, count as zero)."""
    result: dict[str, dict[str, Any]] = {}
    for name, now in after.items():
        prev = (before or {}).get(name)

        def per_second(key: str, now: dict[str, Any] = now, prev: dict[str, Any] | None = prev) -> int:
            if prev is None or seconds <= 0 or now[key] < prev[key]:
                return 0
            return int((now[key] - prev[key]) / seconds)

        rx_bps, tx_bps = per_second("rx_bytes") * 8, per_second("tx_bytes") * 8
        rx_pps, tx_pps = per_second("rx_packets"), per_second("tx_packets")
        result[name] = {"rx_bps": rx_bps, "rx_pps": rx_pps, "tx_bps": tx_bps, "tx_pps": tx_pps,
                        "total_bps": rx_bps + tx_bps, "total_pps": rx_pps + tx_pps,
                        "link_speed": now["speed"] * 1_000_000, "state": now["state"]}
    return result


class NetStatsService:
    """Samples every `interval` seconds and writes `interfaces` into the node document."""

    def __init__(self, settings: Settings, doc: NodeDocument, interval: float, stopping: threading.Event,
                 root: Path = SYS_NET) -> None:
        net = settings.networking
        self.configured = {net.cluster_device, net.bridge_device, net.upstream_device or ""} - {""}
        self.doc, self.interval, self.stopping, self.root = doc, interval, stopping, root
        self._last: tuple[float, dict[str, dict[str, Any]]] | None = None
        self.figures: dict[str, dict[str, Any]] = {}

    def start(self) -> None:
        threading.Thread(target=self.loop, name="netstats", daemon=True).start()

    def collect(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        current = sample(self.root, interfaces(self.root, self.configured))
        before = self._last
        self._last = (now, current)
        self.figures = rates(before[1] if before else None, current, now - before[0] if before else 0.0)
        return self.figures

    def loop(self) -> None:
        while not self.stopping.is_set():
            try:
                figures = self.collect()
                self.doc.write(lambda d, figures=figures: {**d, "interfaces": figures})
            except Exception as exc:
                log.warning("netstats: %s", exc)
            self.stopping.wait(self.interval)

"""Fetch other daemons' Prometheus text for /api/v1/metrics/ceph and /metrics/zookeeper.

Upstream's proxies had no timeout (an unreachable mgr hung an API worker) and ignored error
statuses. Here every fetch is bounded (3 s by default), and a failure becomes one comment line
(`# PVC: ...`) saying what was unreachable, so the rest of a combined scrape still arrives.

ZooKeeper: its Prometheus metrics provider (`metricsProvider.className=...
PrometheusMetricsProvider`, port `zookeeper.metrics_port`) is proxied when it answers. Debian's
ZooKeeper package does not ship that provider's jars, so when no member answers there, the
members' `mntr` four-letter word (whitelisted on PVC's ZooKeeper) is translated into `zk_*`
gauges instead, labelled with the member.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

TIMEOUT = 3.0
CEPH_MGR_PORT = 9283
_NAME_OK = re.compile(r"[^a-zA-Z0-9_:]")


@dataclass(frozen=True)
class Fetched:
    text: str
    ok: bool


def comment(text: str) -> str:
    """One exposition comment line (what a failed fetch answers with)."""
    return "# PVC: " + " ".join(text.split()) + "\n"


def fetch(url: str, what: str, timeout: float = TIMEOUT) -> Fetched:
    """GET url; its text when it answers 200, else a comment naming what failed."""
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            answer = client.get(url)
    except httpx.HTTPError as exc:
        return Fetched(comment(f"{what} at {url} is unreachable: {type(exc).__name__}: {exc}"), False)
    if answer.status_code != 200:
        return Fetched(comment(f"{what} at {url} answered HTTP {answer.status_code}"), False)
    text = answer.text
    return Fetched(text if text.endswith("\n") or not text else text + "\n", True)


# -- Ceph ------------------------------------------------------------------------------------------


def ceph_mgr_url(mgr_dump: dict[str, Any]) -> str | None:
    """The active mgr's prometheus module URL from `ceph mgr dump`: the URL the module advertises
    (services.prometheus), else the active mgr's address on the module's default port."""
    services = mgr_dump.get("services") if isinstance(mgr_dump.get("services"), dict) else {}
    url = services.get("prometheus") if services else None
    if isinstance(url, str) and url.startswith("http"):
        return url.rstrip("/") + "/metrics"
    addr = str(mgr_dump.get("active_addr") or "")
    for vector in (mgr_dump.get("active_addrs") or {}).get("addrvec", []) or []:
        if isinstance(vector, dict) and vector.get("type") == "v2":
            addr = str(vector.get("addr") or addr)
    host = addr.split("/")[0].rsplit(":", 1)[0].strip("[]")
    if not host or not mgr_dump.get("available", True):
        return None
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{CEPH_MGR_PORT}/metrics"


def ceph_metrics(mgr_dump: Callable[[], dict[str, Any]], timeout: float = TIMEOUT) -> Fetched:
    """The active mgr's prometheus module output; mgr_dump() runs `ceph mgr dump`."""
    try:
        dump = mgr_dump()
    except Exception as exc:
        return Fetched(comment(f"Ceph: cannot find the active mgr (mgr dump failed: {exc})"), False)
    url = ceph_mgr_url(dump if isinstance(dump, dict) else {})
    if url is None:
        return Fetched(comment("Ceph: no active mgr (mgr dump names none)"), False)
    found = fetch(url, "the Ceph mgr prometheus module", timeout)
    if not found.ok and not (dump.get("services") or {}).get("prometheus"):
        return Fetched(
            found.text
            + comment("Ceph: is the mgr prometheus module enabled? (ceph mgr module enable prometheus)"),
            False,
        )
    return found


# -- ZooKeeper ---------------------------------------------------------------------------------------


def _host(member: str) -> str:
    return member.rsplit(":", 1)[0].strip("[]") if ":" in member else member


def mntr(host: str, port: int, timeout: float = TIMEOUT) -> str:
    """The member's `mntr` answer ('' when it does not answer)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"mntr")
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def mntr_exposition(answers: dict[str, str]) -> str:
    """`mntr` answers of members (member -> text) as gauges: numeric keys as they are
    (`zk_znode_count{server="hv1"} 12`), text ones as info series with the text in a label."""
    families: dict[str, list[str]] = {}
    for server, text in answers.items():
        for line in text.splitlines():
            key, _, value = line.partition("\t")
            key, value = key.strip(), value.strip()
            if not key.startswith("zk_"):
                continue
            name = _NAME_OK.sub("_", key)
            try:
                number = float(value)
                families.setdefault(name, []).append(f'{name}{{server="{_escape(server)}"}} {number:g}\n')
            except ValueError:
                label = "state" if name == "zk_server_state" else "value"
                families.setdefault(name, []).append(
                    f'{name}{{server="{_escape(server)}",{label}="{_escape(value)}"}} 1\n'
                )
    out = []
    for name in sorted(families):
        out.append(f"# HELP {name} ZooKeeper mntr {name[3:]}\n# TYPE {name} gauge\n")
        out += families[name]
    return "".join(out)


def zookeeper_metrics(members: list[str], metrics_port: int, timeout: float = TIMEOUT) -> Fetched:
    """ZooKeeper's metrics: the provider on the first member that answers on metrics_port (its
    `:2181` endpoint suffixes stripped from labels, as upstream), else every member's `mntr`."""
    notes = []
    for member in members:
        host = _host(member)
        found = fetch(f"http://{host}:{metrics_port}/metrics", "the ZooKeeper metrics provider", timeout)
        if found.ok:
            return Fetched(re.sub(r':2181"', '"', found.text), True)
        notes.append(found.text)
        if "ConnectError" not in found.text:
            break            # a member that is slow or answers an error: do not wait on the others too
    answers = {}
    for member in members:
        host, _, port = member.rpartition(":") if ":" in member else (member, "", "2181")
        text = mntr(host.strip("[]"), int(port or 2181), timeout)
        if text:
            answers[host.strip("[]")] = text
    if answers:
        return Fetched(
            comment(f"ZooKeeper: no metrics provider on port {metrics_port}; from mntr instead")
            + mntr_exposition(answers),
            True,
        )
    return Fetched("".join(notes) + comment("ZooKeeper: no member answered mntr either"), False)

"""What runs on this host and what it uses: domain lists, per-domain statistics in PVC's
`/domains/<u>/stats` shape, and the host's CPUs and memory, all from libvirt's bulk statistics."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from typing import Any

from pvc.adapters.hypervisor.base import DomainInfo, DomainNotFound, reason_name, state_name
from pvc.adapters.hypervisor.connection import LibvirtConnection
from pvc.adapters.hypervisor.domxml import normalize_uuid

_LIST_KEYS = ("balloon.maximum", "balloon.current", "vcpu.current")
_STATS_KEYS = (*_LIST_KEYS, "cpu.time")
# PVC's (upstream's) stats keys <- libvirt's bulk-stats keys. NIC rd/wr are the guest's rx/tx.
_DISK_KEYS = (("rd_req", "rd.reqs"), ("rd_bytes", "rd.bytes"), ("wr_req", "wr.reqs"),
              ("wr_bytes", "wr.bytes"))
_NIC_KEYS = (("rd_bytes", "rx.bytes"), ("rd_packets", "rx.pkts"), ("rd_errors", "rx.errs"),
             ("rd_drops", "rx.drop"), ("wr_bytes", "tx.bytes"), ("wr_packets", "tx.pkts"),
             ("wr_errors", "tx.errs"), ("wr_drops", "tx.drop"))


class LibvirtStats(LibvirtConnection):
    """The read side of LibvirtHypervisor: one bulk call per question, never one per domain."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        # uuid -> (libvirt domain id, {tap device: bridge}); net stats name the bridge like upstream
        self._nic_bridges: dict[str, tuple[int, dict[str, str | None]]] = {}
        lv = self._lv
        self._stats_groups = (lv.VIR_DOMAIN_STATS_STATE | lv.VIR_DOMAIN_STATS_CPU_TOTAL
                              | lv.VIR_DOMAIN_STATS_BALLOON | lv.VIR_DOMAIN_STATS_VCPU
                              | lv.VIR_DOMAIN_STATS_INTERFACE | lv.VIR_DOMAIN_STATS_BLOCK)
        self._nowait = True

    def _bulk_stats(self, conn: Any, groups: int, flags: int, doms: list[Any] | None = None) -> list[Any]:
        """getAllDomainStats / domainListGetStats, with NOWAIT where the driver takes it.

        NOWAIT: a domain busy in a job (a migration holds it for seconds) reports what it can
        instead of stalling the whole keepalive behind the job lock.
        """
        lv = self._lv
        while True:
            extra = lv.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT if self._nowait else 0
            try:
                if doms is None:
                    return conn.getAllDomainStats(groups, flags | extra)
                return conn.domainListGetStats(doms, groups, flags | extra)
            except lv.libvirtError as exc:
                if extra and exc.get_error_code() in (lv.VIR_ERR_INVALID_ARG, lv.VIR_ERR_NO_SUPPORT):
                    self._nowait = False
                    continue
                raise

    def _info_fallback(self, dom: Any, raw: dict[str, Any], needed: tuple[str, ...]) -> dict[str, Any]:
        """Fill what a driver's bulk stats lack (the test driver only reports state) from info()."""
        if all(k in raw for k in needed):
            return raw
        state, max_kib, kib, vcpus, cputime = dom.info()
        return {"state.state": state, "balloon.maximum": max_kib, "balloon.current": kib,
                "vcpu.current": vcpus, "cpu.time": cputime, **raw}

    def list_domains(self) -> dict[str, DomainInfo]:
        lv = self._lv
        groups = lv.VIR_DOMAIN_STATS_STATE | lv.VIR_DOMAIN_STATS_BALLOON | lv.VIR_DOMAIN_STATS_VCPU

        def read(conn: Any) -> dict[str, DomainInfo]:
            found = {}
            for dom, raw in self._bulk_stats(conn, groups, 0):
                try:
                    raw = self._info_fallback(dom, raw, _LIST_KEYS)
                except lv.libvirtError as exc:
                    if exc.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
                        continue          # went away while we looked
                    raise
                state = state_name(int(raw.get("state.state", 0)))
                uuid = dom.UUIDString()
                found[uuid] = DomainInfo(
                    uuid=uuid, name=dom.name(), state=state,
                    reason=reason_name(state, int(raw.get("state.reason", 0))),
                    vcpus=int(raw.get("vcpu.current", 0)),
                    memory_mib=int(raw.get("balloon.current", 0)) // 1024,
                    max_memory_mib=int(raw.get("balloon.maximum", 0)) // 1024)
            return found

        return self._read("list domains", read)

    def _bridges(self, dom: Any, uuid: str, taps: list[str]) -> dict[str, str | None]:
        """tap -> bridge from the live XML, cached per domain id; refreshed when a tap is unknown."""
        cached = self._nic_bridges.get(uuid)
        dom_id = dom.ID()
        if cached is not None and cached[0] == dom_id and all(t in cached[1] for t in taps):
            return cached[1]
        mapping: dict[str, str | None] = {}
        for iface in ET.fromstring(dom.XMLDesc(0)).findall("devices/interface"):
            target, source = iface.find("target"), iface.find("source")
            if target is not None and target.get("dev"):
                mapping[target.get("dev", "")] = source.get("bridge") if source is not None else None
        self._nic_bridges[uuid] = (dom_id, mapping)
        return mapping

    def _shape(self, dom: Any, raw: dict[str, Any]) -> dict[str, Any]:
        """libvirt's bulk statistics in PVC's /domains/<u>/stats shape (upstream's key names)."""
        raw = self._info_fallback(dom, raw, _STATS_KEYS)
        uuid = dom.UUIDString()
        cputime = int(raw.get("cpu.time", 0))
        mem_stats: dict[str, int] = {}
        for key, value in raw.items():
            if key.startswith("balloon.") and key != "balloon.maximum":
                name = key.removeprefix("balloon.").replace("-", "_")
                mem_stats["actual" if name == "current" else name] = int(value)
        cpu_stats = {"cpu_time": cputime}
        if "cpu.user" in raw:
            cpu_stats["user_time"] = int(raw["cpu.user"])
        if "cpu.system" in raw:
            cpu_stats["system_time"] = int(raw["cpu.system"])
        disks = []
        for i in range(int(raw.get("block.count", 0))):
            p = f"block.{i}."
            disk: dict[str, Any] = {"name": raw.get(p + "path") or raw.get(p + "name"),
                                    "dev": raw.get(p + "name")}
            disk.update({ours: int(raw.get(p + theirs, 0)) for ours, theirs in _DISK_KEYS})
            disk["err"] = -1        # QEMU keeps no error count; upstream's blockStats gave -1 too
            disks.append(disk)
        taps = [str(raw.get(f"net.{i}.name", "")) for i in range(int(raw.get("net.count", 0)))]
        bridges = self._bridges(dom, uuid, taps) if taps else {}
        nics = []
        for i, tap in enumerate(taps):
            nic: dict[str, Any] = {"name": tap, "bridge": bridges.get(tap)}
            nic.update({ours: int(raw.get(f"net.{i}.{theirs}", 0)) for ours, theirs in _NIC_KEYS})
            nics.append(nic)
        return {"state": state_name(int(raw.get("state.state", 0))).upper(),
                "maxmem": int(raw.get("balloon.maximum", 0)), "livemem": int(raw.get("balloon.current", 0)),
                "cpus": int(raw.get("vcpu.current", 0)), "cputime": cputime, "mem_stats": mem_stats,
                "cpu_stats": cpu_stats, "disk_stats": disks, "net_stats": nics}

    def stats(self, uuid: str) -> dict[str, Any]:
        uuid = normalize_uuid(uuid)

        def read(conn: Any) -> dict[str, Any]:
            dom = self._lookup(conn, uuid)
            found = self._bulk_stats(conn, self._stats_groups, 0, [dom])
            if not found:
                raise DomainNotFound(f"stats of {uuid}: no such domain on {self.uri}")
            return self._shape(found[0][0], found[0][1])

        return self._read(f"stats of {uuid}", read)

    def all_stats(self) -> dict[str, dict[str, Any]]:
        lv = self._lv

        def read(conn: Any) -> dict[str, dict[str, Any]]:
            out = {}
            for dom, raw in self._bulk_stats(conn, self._stats_groups,
                                             lv.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE):
                try:
                    out[dom.UUIDString()] = self._shape(dom, raw)
                except lv.libvirtError as exc:
                    if exc.get_error_code() != lv.VIR_ERR_NO_DOMAIN:
                        raise
            known = set(out)
            for gone in [u for u in list(self._nic_bridges) if u not in known]:
                self._nic_bridges.pop(gone, None)
            return out

        return self._read("stats of all domains", read)

    def host_resources(self) -> dict[str, Any]:
        """CPUs from libvirt's node info; memory from the node memory stats (= /proc/meminfo).

        Node info sums the NUMA nodes' memory, which misses hot-plugged memory: on our dev
        machines it says 5.5 GiB of 23.5 GiB.
        """
        lv = self._lv

        def read(conn: Any) -> dict[str, Any]:
            arch, mem_mib, cpus, mhz, _nodes, sockets, cores, threads = conn.getInfo()
            free: int | None = None
            try:
                mem = conn.getMemoryStats(lv.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
                mem_mib, free = int(mem["total"]) // 1024, int(mem["free"]) // 1024
            except lv.libvirtError as exc:
                if exc.get_error_code() not in (lv.VIR_ERR_NO_SUPPORT, lv.VIR_ERR_ARGUMENT_UNSUPPORTED):
                    raise
                with contextlib.suppress(lv.libvirtError):
                    free = int(conn.getFreeMemory()) // 1024 // 1024
            return {"cpus": int(cpus), "memory_mib": int(mem_mib), "memory_free_mib": free,
                    "arch": arch, "cpu_mhz": int(mhz), "sockets": int(sockets), "cores": int(cores),
                    "threads": int(threads)}

        return self._read("host resources", read)

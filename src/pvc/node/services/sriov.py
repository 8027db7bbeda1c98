"""SR-IOV on this node: set up the configured PFs, publish PFs and VFs, apply VF settings.

At start the configured PFs (`networking.sriov_device`) get their VF count and MTU. Then, on every
pass (woken by a change of a VF document, and at least every keepalive interval), the service
publishes what sysfs shows into `/nodes/<node>/sriov/{pf,vf}` (observed fields only: the desired
`config` and the claim written by the API are kept), and applies each VF's desired `config`
through the PF when it differs from what this daemon last applied (level-triggered: a daemon
restart applies everything once). This node's VM reconciler may then use these VFs, and no other
host device, in domain XML (DomainPolicy.with_managed, DESIGN D14).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from pvc.adapters.sriov import PhysicalFunction, SriovError, SriovHost, SysfsSriov, VFConfig, VirtualFunction
from pvc.cluster.sriov import CONFIG_DEFAULTS, claim, pci_text, release
from pvc.core import domainxml, schema
from pvc.core.config import Settings
from pvc.core.errors import PVCError
from pvc.core.zk import ZK

log = logging.getLogger("pvcnoded")
ORPHAN_GRACE = 120.0     # seconds a claim may wait for its VM document


class SriovService:
    def __init__(self, settings: Settings, zk: ZK, host: SriovHost, stopping: threading.Event,
                 vms: Any = None) -> None:
        self.settings, self.zk, self.host, self.stopping, self.vms = settings, zk, host, stopping, vms
        self.node = settings.node_name
        self.devices = {d.phy: d for d in settings.networking.sriov_device}
        self.applied: dict[str, dict[str, Any]] = {}      # VF name -> the config applied last
        self.wake = threading.Event()
        self._watched: set[str] = set()
        self.thread: threading.Thread | None = None

    @classmethod
    def start_from(cls, settings: Settings, zk: ZK, stopping: threading.Event,
                   vms: Any = None) -> SriovService | None:
        """The daemon's one-line registration: None unless `networking.sriov_enable`."""
        if not settings.networking.sriov_enable:
            return None
        service = cls(settings, zk, SysfsSriov(), stopping, vms)
        service.start(settings.timer.keepalive_interval)
        return service

    # -- start ---------------------------------------------------------------------------------

    def setup(self) -> None:
        """VF count and MTU of each configured PF (the VFs get the PF's MTU); errors are logged."""
        for phy, device in self.devices.items():
            try:
                self.host.set_vfcount(phy, device.vfcount)
                if device.mtu:
                    self.host.set_mtu(phy, device.mtu)
                    for vf in self.host.vfs(phy):
                        if vf.mac:           # has a netdev (not bound to vfio-pci)
                            self.host.set_mtu(vf.phy, device.mtu)
                log.info("SR-IOV PF %s: %d VFs, MTU %s", phy, device.vfcount, device.mtu or "unchanged")
            except SriovError as exc:
                log.error("SR-IOV PF %s: setup failed: %s", phy, exc)

    def start(self, interval: float) -> None:
        self.setup()
        try:
            self.run_pass()
        except Exception:
            log.exception("first SR-IOV pass failed; retrying every %.0fs", interval)
        self.thread = threading.Thread(target=self._loop, args=(interval,), name="sriov", daemon=True)
        self.thread.start()

    def _loop(self, interval: float) -> None:
        while not self.stopping.is_set():
            self.wake.wait(interval)
            self.wake.clear()
            if self.stopping.is_set():
                return
            try:
                self.run_pass()
            except Exception:
                log.exception("SR-IOV pass failed")

    # -- one pass --------------------------------------------------------------------------------

    def run_pass(self) -> None:
        pfs, vfs = self.discover()
        self.publish(pfs, vfs)
        self.apply(vfs)
        self.allow(vfs)
        self.follow_vms()
        self.free_orphans(vfs)

    def free_orphans(self, vfs: list[VirtualFunction], now: float | None = None) -> list[str]:
        """Free VFs claimed for a VM that does not exist (a define or an undefine interrupted
        between its two writes) or that is assigned to another node and does not run here (moved
        by a flush or HA recovery); a claim younger than ORPHAN_GRACE may belong to a define or a
        migration under way."""
        now = time.time() if now is None else now
        paths = {vf.phy: schema.node_sriov_vf(self.node, vf.phy) for vf in vfs}
        docs = self.zk.get_many(list(paths.values()))
        users = {d.get("used_by") for d in docs.values() if isinstance(d, dict) and d.get("used_by")}
        vms = self.zk.get_many([schema.vm(u) for u in users]) if users else {}
        running = self._running_here()
        freed = []
        for name, path in paths.items():
            doc = docs.get(path)
            if not isinstance(doc, dict) or not doc.get("used_by"):
                continue
            user = doc["used_by"]
            vm = vms.get(schema.vm(user))
            if isinstance(vm, dict) and (vm.get("node") == self.node or user in running):
                continue
            if now - float(doc.get("claimed_at") or 0) < ORPHAN_GRACE:
                continue
            release(self.zk, self.node, user, only=[name])
            log.warning("SR-IOV VF %s: freed (VM %s %s)", name, user,
                        "does not exist" if vm is None else f"is assigned to node {vm.get('node')}")
            freed.append(name)
        return freed

    def _running_here(self) -> set[str]:
        hv = getattr(self.vms, "hv", None)
        if hv is None:
            return set()
        try:
            return {u for u, d in hv.list_domains().items() if d.running}
        except Exception as exc:
            log.warning("SR-IOV: cannot list this node's domains: %s", exc)
            return set()

    def follow_vms(self) -> list[str]:
        """Claim the VFs of VMs running here that do not hold them yet (moved here by a flush or
        HA recovery, which do not go through the API); a VF another VM holds is reported."""
        running = sorted(self._running_here())
        records = self.zk.get_many([schema.vm(u) for u in running]) if running else {}
        claimed = []
        for uuid in running:
            record = records.get(schema.vm(uuid))
            if not isinstance(record, dict) or record.get("node") != self.node:
                continue            # leaving (a migration under way): the API moved its claims
            try:
                domain = domainxml.parse(str(record.get("xml", "")))
                claimed += claim(self.zk, self.node, uuid, domain)
            except PVCError as exc:
                log.error("SR-IOV: VM %s runs here on a VF it cannot hold: %s", record.get("name", uuid),
                          exc.message)
            except Exception as exc:
                log.warning("SR-IOV: VM %s: %s", uuid, exc)
        return claimed

    def discover(self) -> tuple[list[PhysicalFunction], list[VirtualFunction]]:
        pfs: list[PhysicalFunction] = []
        vfs: list[VirtualFunction] = []
        for phy in self.devices:
            try:
                pfs.append(self.host.pf(phy))
                vfs.extend(self.host.vfs(phy))
            except SriovError as exc:
                log.warning("SR-IOV PF %s: %s", phy, exc)
        return pfs, vfs

    def publish(self, pfs: list[PhysicalFunction], vfs: list[VirtualFunction]) -> None:
        """PF documents replaced; VF documents merged (observed fields), gone ones removed."""
        node = self.node
        pf_parent, vf_parent = schema.node_sriov_pfs(node), schema.node_sriov_vfs(node)
        for pf in pfs:
            doc = {"phy": pf.phy, "mtu": pf.mtu, "vfcount": pf.vfcount, "totalvfs": pf.totalvfs,
                   "vfs": list(pf.vfs)}
            if self.zk.get(schema.node_sriov_pf(node, pf.phy), None) != doc:
                self.zk.put(schema.node_sriov_pf(node, pf.phy), doc)
        present = {pf.phy for pf in pfs}
        for name in self.zk.children(pf_parent) if self.zk.exists(pf_parent) else []:
            if name not in present:
                self.zk.delete(schema.node_sriov_pf(node, name))
        for vf in vfs:
            self.zk.update(schema.node_sriov_vf(node, vf.phy), lambda d, vf=vf: _observed(d, vf), create=True)
            self._watch(vf.phy)
        names = {vf.phy for vf in vfs}
        for name in self.zk.children(vf_parent) if self.zk.exists(vf_parent) else []:
            if name not in names:
                doc = self.zk.get(schema.node_sriov_vf(node, name), None)
                if isinstance(doc, dict) and doc.get("used"):
                    log.warning("SR-IOV VF %s is gone but VM %s still uses it", name, doc.get("used_by"))
                self.zk.delete(schema.node_sriov_vf(node, name))
                self.applied.pop(name, None)

    def _watch(self, vf: str) -> None:
        if vf in self._watched:
            return
        self._watched.add(vf)

        def changed(_data: Any, _stat: Any, *_rest: Any) -> bool | None:
            self.wake.set()
            if vf not in self._watched or self.stopping.is_set():
                return False           # stop watching a VF that went away
            return None

        self.zk.watch_data(schema.node_sriov_vf(self.node, vf), changed)

    def apply(self, vfs: list[VirtualFunction]) -> None:
        """Each VF's desired settings, applied through its PF when not yet applied as they are."""
        docs = self.zk.get_many([schema.node_sriov_vf(self.node, vf.phy) for vf in vfs])
        for vf in vfs:
            doc = docs.get(schema.node_sriov_vf(self.node, vf.phy))
            if not isinstance(doc, dict):
                continue
            config = {**CONFIG_DEFAULTS, **(doc.get("config") or {})}
            if self.applied.get(vf.phy) == config:
                continue
            try:
                self.host.configure_vf(vf.pf, vf.index, VFConfig(**{k: config[k] for k in CONFIG_DEFAULTS}))
                self.applied[vf.phy] = config
                log.info("SR-IOV VF %s: settings applied (%s)", vf.phy,
                         ", ".join(f"{k}={v}" for k, v in sorted(config.items())))
            except (SriovError, TypeError, ValueError) as exc:
                log.error("SR-IOV VF %s: applying %s failed: %s", vf.phy, config, exc)

    def allow(self, vfs: list[VirtualFunction]) -> None:
        """Let this node's VM reconciler start domains on these VFs (and on no other host device)."""
        ctx = getattr(self.vms, "ctx", None)
        if ctx is None:
            return
        base = domainxml.DomainPolicy.from_settings(self.settings)
        policy = base.with_managed(direct_devices=[vf.phy for vf in vfs],
                                   hostdev_pci=[str(vf.pci) for vf in vfs])
        if ctx.settings.domain_policy != policy:
            ctx.settings = dataclasses.replace(ctx.settings, domain_policy=policy)


def _observed(doc: Any, vf: VirtualFunction) -> dict[str, Any]:
    """The VF document with what sysfs shows; config and claim as they are (defaults when new)."""
    doc = doc if isinstance(doc, dict) else {}
    pci = {"domain": vf.pci.domain, "bus": vf.pci.bus, "slot": vf.pci.slot, "function": vf.pci.function}
    phy_mac = doc.get("phy_mac") or vf.mac
    mac = vf.mac or doc.get("mac") or phy_mac
    return {"config": dict(CONFIG_DEFAULTS), "used": False, "used_by": "", "mode": "", **doc,
            "phy": vf.phy, "pf": vf.pf, "index": vf.index, "mtu": vf.mtu, "mac": mac, "phy_mac": phy_mac,
            "pci": pci, "pci_address": pci_text(pci)}

"""Registration: this node's document and its session marker, created at start and renewed
whenever ZooKeeper gives the daemon a new session."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import NodeExistsError
from kazoo.protocol.states import KazooState

from pvc import __version__
from pvc.core import schema
from pvc.core.config import Settings
from pvc.core.errors import ConfigError
from pvc.core.records import NodeRecord
from pvc.core.secrets import FENCE_SECRETS, SecretError, is_sealed, load_key, seal_fence_info
from pvc.core.zk import ZK
from pvc.node import sysinfo
from pvc.node.fencing import OUT_OF_SERVICE
from pvc.node.services.nodedoc import NodeDocument

log = logging.getLogger("pvcnoded")


class Registration:
    def __init__(self, settings: Settings, zk: ZK, doc: NodeDocument, stopping: threading.Event,
                 network_keys: Callable[[], dict[str, str]]) -> None:
        self.settings, self.zk, self.doc, self.stopping = settings, zk, doc, stopping
        self.name = settings.node_name
        self.network_keys = network_keys
        self.session: int | None = None          # the session this daemon registered with

    def register(self) -> None:
        """Create or refresh this node's document and its session marker."""
        self._check_fence_key()
        static = sysinfo.static_data()
        coordinator = self.settings.is_coordinator
        mode = "coordinator" if coordinator else "hypervisor"

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            record = NodeRecord.model_validate(doc) if doc else NodeRecord(name=self.name)
            # A dead or fenced node stays so until an administrator readies it (pvc.node.fencing).
            fenced = record.daemon_state in OUT_OF_SERVICE
            return record.model_copy(update={
                "mode": mode,
                "daemon_state": record.daemon_state if fenced else "init",
                "coordinator_state": "secondary" if coordinator else "client",
                "pvc_version": __version__,
                "daemon_pid": os.getpid(),
                "session_id": f"{self.zk.session_id or 0:x}",
                **static,
            }).doc() | self._migration_keys() | self.network_keys()

        self.zk.update(schema.node(self.name), change, create=True)
        self._publish_fence_info()
        self.doc.forget()
        self.session = self.zk.session_id
        self.mark_alive()
        log.info("registered node %s", self.name)

    def _check_fence_key(self) -> None:
        """A coordinator may have to fence any node: when a node's published fence info holds a
        sealed secret, a coordinator that could not open it refuses to start now (SecretError,
        naming the key file), rather than fail that node's fence when it dies."""
        if not (self.settings.is_coordinator and self.settings.fencing.enabled):
            return
        names = self.zk.children(schema.FENCE_INFO)
        infos = self.zk.get_many([schema.node_fence_info(n) for n in names])
        sealed = {path.rsplit("/", 1)[1]: [info[k] for k in FENCE_SECRETS if is_sealed(info.get(k))]
                  for path, info in infos.items() if isinstance(info, dict)}
        sealed = {name: values for name, values in sorted(sealed.items()) if values}
        if not sealed:
            return
        try:
            key = load_key(self.settings.cluster.key_file)
            for values in sealed.values():       # the right key: every sealed secret opens
                for value in values:
                    key.open(value)
        except SecretError as exc:
            raise SecretError(f"coordinator {self.name} may have to fence {', '.join(sealed)}, whose fence "
                              f"secrets are sealed, but: {exc}") from None

    def _publish_fence_info(self) -> None:
        """How the primary fences this node (agent, BMC); outside the node document, which the
        API serves, and with the BMC password sealed with the cluster key (pvc.core.secrets): the
        primary opens it only to fence. Republished at every start, so neither backups nor
        restores carry it."""
        from pvc.adapters.fence import fence_info

        try:
            info = seal_fence_info(fence_info(self.settings), self.settings.cluster.key_file)
        except ConfigError as exc:      # the password file or the cluster key (named in exc)
            log.error("fencing: %s; this node cannot be fenced by its agent", exc)
            info = {"agent": "none", "node": self.name, "error": str(exc)}
        self.zk.update(schema.node_fence_info(self.name), lambda _old: info, create=True)

    def _migration_keys(self) -> dict[str, str]:
        """Where other nodes send live migrations to us. Kept as extra keys of the node document
        (NodeRecord does not model them; readers take them from the raw document)."""
        hypervisor = self.settings.hypervisor
        address = hypervisor.migration_address
        if not address or not self.settings.subsystem.enable_hypervisor:
            return {"libvirt_migration_uri": "", "migration_address": ""}
        uri = hypervisor.migration_uri_template.replace("{address}", address)
        return {"libvirt_migration_uri": uri, "migration_address": address}

    def mark_alive(self) -> None:
        path = schema.node_alive(self.name)
        try:
            self.zk.create(path, {"pid": os.getpid()}, ephemeral=True)
        except NodeExistsError:
            raw = self.zk.get_raw(path)
            # A marker from our own previous session may linger until that session expires.
            if raw is not None and raw[1].ephemeralOwner != self.zk.session_id:
                self.zk.delete(path)
                self.zk.create(path, {"pid": os.getpid()}, ephemeral=True)

    def on_session(self, state: KazooState) -> None:
        if state == KazooState.CONNECTED:
            threading.Thread(target=self.after_reconnect, daemon=True).start()

    def after_reconnect(self) -> None:
        if self.stopping.is_set() or self.zk.session_id == self.session:
            return
        log.warning("new ZooKeeper session; re-registering")
        try:
            self.session = self.zk.session_id
            self.mark_alive()
            self.doc.write(lambda d: {**d, "session_id": f"{self.zk.session_id or 0:x}"})
        except Exception:
            log.exception("re-registration failed; will retry at the next keepalive")
            self.session = None

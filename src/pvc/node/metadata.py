"""The EC2-style metadata service for cloud-init, on the primary at 169.254.169.254:80.

Guests reach it through their gateway (the primary), which holds the address on `lo`. Answers
follow upstream (pvc-facts §5.4): `GET /` is HTTP 209 with a version message; under any version
prefix (`/latest`, `/2009-04-04`, ...) `meta-data/` lists instance-id, name and profile, each
readable on its own, and `user-data` is the userdata document of the VM's profile. The VM is the
one whose NIC holds the DHCP lease of the request's source address.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pvc.cluster import metadata as lookup
from pvc.core.zk import ZK

log = logging.getLogger(__name__)

KEYS = ("instance-id", "name", "profile")


def answer(zk: ZK, source: str, path: str) -> tuple[int, str, str]:
    """(status, content type, body) for one request (no I/O besides ZooKeeper reads)."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if not parts:
        return 209, "application/json", json.dumps({"message": "PVC Provisioner Metadata API version 1"})
    rest = parts[1:]
    if not rest or rest[0] not in ("meta-data", "user-data"):
        return 404, "text/plain", "not found\n"
    record = lookup.vm_for_address(zk, source)
    if record is None:
        return 404, "text/plain", f"no VM holds a lease for {source}\n"
    if rest[0] == "user-data":
        text = lookup.userdata_for(zk, record)
        if text is None:
            return 404, "text/plain", f"VM {record.name} has no userdata (profile '{record.profile}')\n"
        return 200, "text/plain", text
    if len(rest) == 1:
        return 200, "text/plain", "\n".join(KEYS)
    values = {"instance-id": record.uuid, "name": record.name, "profile": record.profile}
    if rest[1] not in values:
        return 404, "text/plain", "not found\n"
    return 200, "text/plain", values[rest[1]]


class MetadataService:
    """A small threaded HTTP server, started on takeover and stopped on relinquish."""

    def __init__(self, zk: ZK, address: str, port: int) -> None:
        self.zk, self.address, self.port = zk, address, port
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            zk = self.zk

            class Handler(BaseHTTPRequestHandler):
                server_version = "pvc-metadata"

                def do_GET(self) -> None:
                    try:
                        status, ctype, body = answer(zk, self.client_address[0], self.path)
                    except Exception as exc:
                        log.exception("metadata request %s from %s failed", self.path, self.client_address[0])
                        status, ctype, body = 503, "text/plain", f"metadata unavailable: {exc}\n"
                    data = body.encode()
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

                def log_message(self, fmt: str, *args: Any) -> None:
                    log.debug("metadata %s: " + fmt, self.client_address[0], *args)

            server = ThreadingHTTPServer((self.address, self.port), Handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, name="metadata", daemon=True).start()
            self._server = server
            log.info("metadata service listening on %s:%d", self.address, self.port)

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            log.info("metadata service stopped")

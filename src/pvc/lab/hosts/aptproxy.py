"""A small HTTP forward proxy for apt, listening inside the lane's switch namespace.

The lane's hosts live in network namespaces with no route out, and no address is ever added to
the root namespace. This proxy creates its listening socket inside the switch namespace (on the
administrator's address of the cluster network) and opens its upstream connections from the root
namespace, where the Debian mirror is reachable: apt on the hosts uses it as
`Acquire::http::Proxy`, as servers behind a site proxy do. Immutable files (`/pool/`, `by-hash`)
are kept in a cache directory, so a second lane run downloads nothing twice.

    python -m pvc.lab.hosts.aptproxy --netns pvch-sw --listen 10.210.0.254:3142 --cache DIR
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pvc.lab import proc

PASSED_HEADERS = ("If-Modified-Since", "If-None-Match", "Range", "If-Range", "Accept", "User-Agent",
                  "Cache-Control")
ALLOWED_PORTS = (80,)


def _cacheable(path: str) -> bool:
    return "/pool/" in path or "/by-hash/" in path


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cache_dir: Path

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _refuse(self, code: int, why: str) -> None:
        body = f"pvc lane apt proxy: {why}\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _cache_path(self, url: str) -> Path:
        return self.cache_dir / hashlib.sha256(url.encode()).hexdigest()

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or not url.hostname or (url.port or 80) not in ALLOWED_PORTS:
            self._refuse(403, f"only http:// URLs on port 80 are relayed, not {self.path!r}")
            return
        cached = self._cache_path(self.path)
        if not head and _cacheable(url.path) and cached.exists() and "Range" not in self.headers:
            data = cached.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=60)
        try:
            headers = {h: self.headers[h] for h in PASSED_HEADERS if self.headers.get(h)}
            target = url.path + (f"?{url.query}" if url.query else "")
            conn.request("HEAD" if head else "GET", target or "/", headers=headers)
            answer = conn.getresponse()
            data = b"" if head else answer.read()
        except OSError as exc:
            self._refuse(502, f"{url.hostname}: {exc}")
            return
        finally:
            conn.close()
        self.send_response(answer.status, answer.reason)
        for name in ("Content-Type", "Last-Modified", "ETag", "Content-Range", "Date"):
            if answer.getheader(name):
                self.send_header(name, str(answer.getheader(name)))
        length = answer.getheader("Content-Length") if head else str(len(data))
        self.send_header("Content-Length", length or "0")
        self.end_headers()
        if not head:
            self.wfile.write(data)
            if answer.status == 200 and _cacheable(url.path):
                tmp = cached.with_suffix(f".{threading.get_ident()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, cached)


def listening_socket(netns: str, address: str, port: int) -> socket.socket:
    """A listening socket that lives in `netns` (a socket keeps the namespace it was made in)."""
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(64)
        return sock

    return proc.netns_call(netns, make)


def serve(netns: str, address: str, port: int, cache_dir: Path) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    sock = listening_socket(netns, address, port)
    handler = type("LaneHandler", (Handler,), {"cache_dir": cache_dir})
    server = ThreadingHTTPServer((address, port), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.daemon_threads = True
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--netns", required=True)
    parser.add_argument("--listen", required=True, help="address:port inside the namespace")
    parser.add_argument("--cache", required=True, type=Path)
    args = parser.parse_args()
    address, _, port = args.listen.rpartition(":")
    serve(args.netns, address, int(port), args.cache)


if __name__ == "__main__":
    main()

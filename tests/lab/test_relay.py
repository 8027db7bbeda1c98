"""The loopback relay: root namespace 127.0.0.1 -> a service inside a node namespace."""

from __future__ import annotations

import os
import socket
import sys
import time

import httpx
import pytest

from pvc.lab import proc, relay
from pvc.lab.zkserver import free_port

from .labinfra import lab

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
]


def test_relay_reaches_the_listening_node_and_skips_refusing_ones() -> None:
    with lab(2) as plan:
        hv1, hv2 = plan.nodes
        www = plan.state_dir / "www"
        www.mkdir()
        (www / "index.html").write_text("hello from hv1\n")
        port = 8080
        # The server listens only on hv1's underlay address; hv2 refuses the port.
        proc.spawn([sys.executable, "-m", "http.server", "--bind", hv1.address, "--directory", str(www),
                    str(port)], plan.log_dir / "http.log", plan.pid_dir / "http.pid", netns=hv1.netns)

        def serving() -> bool:
            return proc.run(["python3", "-c", f"import socket; socket.create_connection(('{hv1.address}', "
                             f"{port}), 1)"], netns=hv2.netns, check=False).returncode == 0

        proc.wait_until(serving, 15, "http.server in hv1", interval=0.1)
        # (No reachability check from the root namespace: this machine's egress accepts any TCP
        # connect to any outside address, so only the absence of root addresses is meaningful.)

        listen = free_port()
        t0 = time.monotonic()
        pid = relay.start_relay(plan, "http", listen, port, [hv2, hv1])   # hv2 first: it refuses
        print(f"\nrelay accepting after {time.monotonic() - t0:.2f}s (pid {pid})")
        assert (plan.pid_dir / "relay-http.pid").exists()

        t1 = time.monotonic()
        response = httpx.get(f"http://127.0.0.1:{listen}/index.html", timeout=10)
        print(f"GET through relay {time.monotonic() - t1:.3f}s")
        assert response.status_code == 200
        assert response.text == "hello from hv1\n"

        # Half-close: send the request, shut our write side, still read the whole answer.
        with socket.create_connection(("127.0.0.1", listen), timeout=10) as sock:
            sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.0 200") and data.endswith(b"hello from hv1\n")

        relayed = [line for line in (plan.log_dir / "relay-http.log").read_text().splitlines()
                   if " -> " in line]
        assert relayed and all(line.endswith(f" -> {hv1.netns}/{hv1.address}:{port}") for line in relayed)

        relay.stop_relay(plan, "http")
        # The relay process (and with it its listening socket) is gone. Not checked: that nothing
        # listens on the port, since on a busy machine another process may take the freed port.
        assert not proc.alive(pid)
        assert not (plan.pid_dir / "relay-http.pid").exists()

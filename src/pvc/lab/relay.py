"""A TCP relay from 127.0.0.1 in the root namespace to services inside lab namespaces.

The lab never adds an address to the root namespace, so the API (and ZooKeeper, for tests) are
published on loopback by this relay. Each accepted connection is served by a thread that joins the
target's network namespace with setns(2) before it opens the outbound socket; a socket keeps the
namespace it was created in, so bytes are then pumped between two sockets of different namespaces.
Targets are tried in order and refused/unreachable ones are skipped, because a service such as the
API runs only on whichever node is primary.

With `--listen-netns` the relay listens inside a lab namespace instead (on an address of that
namespace): `pvc-lab link A B` publishes lab B's API on lab A's underlay this way, so A's nodes
reach B's API while neither lab's addresses nor the root namespace change.

    python -m pvc.lab.relay --listen 127.0.0.1:7370 --netns lab-hv1,lab-hv2 --target-port 7370 \
        --targets 10.200.0.1,10.200.0.2
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pvc.lab import proc
from pvc.lab.plan import LabPlan, NodePlan

BUFSIZE = 65536

log = logging.getLogger("pvc.lab.relay")


@dataclass(frozen=True)
class Target:
    netns: str
    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.netns}/{self.address}:{self.port}"


def make_targets(netns: Sequence[str], addresses: Sequence[str], port: int) -> list[Target]:
    """Pair namespaces with addresses: one each (zip), or one of either side shared by all."""
    if not netns:
        raise ValueError("at least one namespace is needed")
    addresses = list(addresses) or ["127.0.0.1"]
    if len(addresses) == len(netns):
        pairs = list(zip(netns, addresses, strict=True))
    elif len(netns) == 1:
        pairs = [(netns[0], a) for a in addresses]
    elif len(addresses) == 1:
        pairs = [(n, addresses[0]) for n in netns]
    else:
        raise ValueError("give as many targets as namespaces, or exactly one of either")
    return [Target(n, a, port) for n, a in pairs]


def connect_first(targets: Sequence[Target], timeout: float) -> tuple[socket.socket, Target]:
    """Connect to the first target that accepts; must run in a thread that may change netns."""
    errors = []
    for target in targets:
        try:
            proc.enter_netns(target.netns)
            sock = socket.create_connection((target.address, target.port), timeout=timeout)
        except OSError as exc:
            errors.append(f"{target}: {exc.strerror or exc}")
            continue
        sock.settimeout(None)
        return sock, target
    raise ConnectionError("; ".join(errors))


def _pump(src: socket.socket, dst: socket.socket, done: threading.Event) -> None:
    """Copy src→dst until EOF, then half-close dst so the other direction can finish."""
    try:
        while True:
            data = src.recv(BUFSIZE)
            if not data:
                break
            dst.sendall(data)
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    except OSError:
        # a reset on one side: tear both directions down
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    finally:
        done.set()


def serve_connection(client: socket.socket, peer: str, targets: Sequence[Target],
                     connect_timeout: float) -> None:
    """One client connection: find a target (this thread joins namespaces), then relay both ways."""
    try:
        upstream, target = connect_first(targets, connect_timeout)
    except ConnectionError as exc:
        log.warning("%s: no target reachable (%s)", peer, exc)
        client.close()
        return
    log.info("%s -> %s", peer, target)
    back = threading.Event()
    threading.Thread(target=_pump, args=(upstream, client, back), daemon=True).start()
    _pump(client, upstream, threading.Event())
    back.wait()
    client.close()
    upstream.close()
    log.debug("%s: closed", peer)


def serve(listen: tuple[str, int], targets: Sequence[Target], connect_timeout: float = 2.0,
          ready: threading.Event | None = None, listen_netns: str | None = None) -> None:
    """Accept forever on `listen` (loopback only, unless inside the lab namespace `listen_netns`)
    and relay each connection in its own thread."""
    if listen_netns:
        proc.enter_netns(listen_netns)      # the listening socket is created in that namespace
    elif not ipaddress.ip_address(listen[0]).is_loopback:
        raise ValueError(f"the relay listens on loopback only, not {listen[0]}")
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(listen)
    server.listen(128)
    log.info("listening on %s:%d, targets %s", listen[0], listen[1], ", ".join(map(str, targets)))
    if ready is not None:
        ready.set()
    while True:
        client, addr = server.accept()
        threading.Thread(target=serve_connection, args=(client, f"{addr[0]}:{addr[1]}", targets,
                                                        connect_timeout), daemon=True).start()


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pvc.lab.relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="127.0.0.1:PORT (ADDRESS:PORT with --listen-netns)")
    parser.add_argument("--listen-netns", help="listen inside this lab namespace instead of the root one")
    parser.add_argument("--netns", required=True, help="namespaces, comma-separated, in order")
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--targets", help="addresses, comma-separated (default 127.0.0.1)")
    parser.add_argument("--connect-timeout", type=float, default=2.0)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s relay[%(process)d] %(levelname)s %(message)s")
    host, _, port = args.listen.rpartition(":")
    targets = make_targets(_split(args.netns), _split(args.targets), args.target_port)
    try:
        serve((host.strip("[]"), int(port)), targets, args.connect_timeout, listen_netns=args.listen_netns)
    except KeyboardInterrupt:
        return 0
    return 0


# ---- lab side: start/stop the relay as a background process --------------------------------------

def relay_pidfile(plan: LabPlan, name: str) -> Path:
    return plan.pid_dir / f"relay-{name}.pid"


def start_relay(plan: LabPlan, name: str, listen_port: int, target_port: int,
                nodes: Sequence[NodePlan], timeout: float = 10,
                listen: tuple[str, str] | None = None) -> int:
    """Publish `target_port` of `nodes` (tried in order) on 127.0.0.1:`listen_port`; return the pid.

    Each node is reached at its own address from inside its own namespace, so a node that is cut
    off the underlay still answers for itself. An already running relay of this name is replaced.
    """
    # listen = (namespace, address): listen there instead of on the root namespace's loopback
    if not nodes:
        raise ValueError("a relay needs at least one node")
    pidfile = relay_pidfile(plan, name)
    proc.stop(pidfile)
    src = str(Path(__file__).resolve().parents[2])
    env = {"PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
           "PYTHONUNBUFFERED": "1"}
    log_path = plan.log_dir / f"relay-{name}.log"
    host = listen[1] if listen else "127.0.0.1"
    cmd = [sys.executable, "-m", "pvc.lab.relay", "--listen", f"{host}:{listen_port}",
           "--netns", ",".join(n.netns for n in nodes), "--target-port", str(target_port),
           "--targets", ",".join(n.address for n in nodes)]
    if listen:
        cmd += ["--listen-netns", listen[0]]
    pid = proc.spawn(cmd, log_path, pidfile, env=env)

    def accepting() -> bool:
        if not proc.alive(pid):
            tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
            raise proc.LabError(f"relay {name} exited:\n{tail}")
        if listen:
            return "listening on" in (log_path.read_text(errors="replace") if log_path.exists() else "")
        try:
            with socket.create_connection(("127.0.0.1", listen_port), timeout=0.5):
                return True
        except OSError:
            return False

    proc.wait_until(accepting, timeout, f"relay {name} on 127.0.0.1:{listen_port}", interval=0.05)
    return pid


def stop_relay(plan: LabPlan, name: str) -> None:
    proc.stop(relay_pidfile(plan, name))


if __name__ == "__main__":
    sys.exit(main())

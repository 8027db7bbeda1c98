"""Start and stop a private ZooKeeper server from Debian's jars.

Used by the test fixtures and the lab; production nodes run ZooKeeper as a system service.
`java ... QuorumPeerMain zoo.cfg` directly (not zkServer.sh, which opens a JMX port on every
interface), heap capped, listening on the given address only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLASSPATH = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"


def four_letter(host: str, port: int, word: str, timeout: float = 1.0) -> str:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(word.encode())
            chunks = []
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                chunks.append(data)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ZooKeeperServer:
    """One ZooKeeper member; `peers` (id -> (host, quorum_port, election_port)) makes an ensemble."""

    datadir: Path
    port: int
    host: str = "127.0.0.1"
    myid: int = 1
    peers: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    heap_mb: int = 128
    tick_ms: int = 2000
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    # Inside a namespace the calling process may not reach `host`; the caller then supplies a
    # check that runs where it can (the lab probes from a thread inside the namespace).
    ready_check: Callable[[], bool] | None = None
    log_file: Path | None = None

    @property
    def log_path(self) -> Path:
        return self.log_file or self.datadir / "zookeeper.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def write_config(self) -> Path:
        data = self.datadir / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            f"tickTime={self.tick_ms}",
            f"dataDir={data}",
            f"clientPort={self.port}",
            f"clientPortAddress={self.host}",
            "maxClientCnxns=0",
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,srvr,stat,mntr,conf,isro",
            "forceSync=no",
            "minSessionTimeout=2000",
            "maxSessionTimeout=60000",
        ]
        if self.peers:
            (data / "myid").write_text(f"{self.myid}\n")
            lines += ["initLimit=10", "syncLimit=5"]
            lines += [f"server.{i}={h}:{q}:{e}" for i, (h, q, e) in sorted(self.peers.items())]
        cfg = self.datadir / "zoo.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        return cfg

    def start(self, wait: float = 30.0) -> ZooKeeperServer:
        cfg = self.write_config()
        cmd = [
            "java", "-Xms16m", f"-Xmx{self.heap_mb}m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Xss512k", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp", CLASSPATH, "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(cfg),
        ]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        log_path = self.log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        log.close()
        if wait:
            self.wait_ready(wait)
        return self

    def ready(self) -> bool:
        if self.ready_check is not None:
            return self.ready_check()
        return "Mode:" in four_letter(self.host, self.port, "srvr")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"ZooKeeper exited early; see {self.log_path}")
            if self.ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"ZooKeeper on {self.address} not ready after {timeout}s")

    def stop(self, kill: bool = False) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

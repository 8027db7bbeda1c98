"""The lab's plan: names, addresses, ports and directories, derived from (name, node count).

Pure data, so every lab module (and the tests) agree on where things are. Everything lives in
network namespaces named `<name>-<role>`; the root namespace only sees 127.0.0.1 relays.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_NAME = "pvclab"
STATE_ROOT = Path(os.environ.get("PVC_LAB_DIR", "/var/lib/pvc-lab"))
CACHE_DIR = Path(os.environ.get("PVC_LAB_CACHE", "/var/cache/pvc-lab"))
UNDERLAY_MTU = 1550
SUBNET = "10.200.0"          # node N has SUBNET.N/24 on its eth0 (inside its own namespace)
# The upstream ("world") segment: node N has UPSTREAM_SUBNET.N/24 on its eth1, cabled to a bridge
# in the world namespace, which holds WORLD_ADDRESS: where guests' NAT goes, never the cluster.
UPSTREAM_SUBNET = "10.201.0"
WORLD_ADDRESS = f"{UPSTREAM_SUBNET}.250"
ZK_CLIENT_PORT = 2181
ZK_QUORUM_PORT = 2888
ZK_ELECTION_PORT = 3888
CEPH_MON_V2 = 3300
CEPH_MON_V1 = 6789
API_PORT = 7370
LIBVIRT_TCP_PORT = 16509
# `PVC_LAB_CHAOS=1` (or make_plan(chaos=True)) brings a lab up for chaos runs: each node's PVC state
# directory (dynamic and log directories) on a small tmpfs of its own, which a fault can fill
# (pvc.lab.chaos.space). Kept in the plan, so every later command sees the same layout.
CHAOS_ENV = "PVC_LAB_CHAOS"


@dataclass
class NodePlan:
    name: str                  # hv1, hv2 ...
    index: int                 # 1-based
    coordinator: bool
    netns: str                 # <lab>-hv1
    address: str               # 10.200.0.1 (eth0, the cluster); upstream_address is on eth1
    dir: Path                  # <state>/<node>

    @property
    def upstream_address(self) -> str:
        """The node's address on the upstream segment (its eth1)."""
        return f"{UPSTREAM_SUBNET}.{self.index}"

    @property
    def pvc_conf(self) -> Path:
        return self.dir / "pvc.conf"

    @property
    def libvirt_dir(self) -> Path:
        return self.dir / "libvirt"

    @property
    def libvirt_uri(self) -> str:
        return f"qemu+unix:///system?socket={self.libvirt_dir}/sock/libvirt-sock"


@dataclass
class LabPlan:
    name: str
    nodes: list[NodePlan]
    state_dir: Path
    api_port: int              # published on 127.0.0.1
    zk_port: int               # published on 127.0.0.1 (tests)
    switch_netns: str
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def coordinators(self) -> list[NodePlan]:
        return [n for n in self.nodes if n.coordinator]

    @property
    def world_netns(self) -> str:
        """The upstream segment's namespace (`<lab>-wd`): a bridge and WORLD_ADDRESS."""
        return f"{self.name}-wd"

    @property
    def zk_hosts(self) -> list[str]:
        return [f"{n.address}:{ZK_CLIENT_PORT}" for n in self.coordinators]

    @property
    def ceph_dir(self) -> Path:
        return self.state_dir / "ceph"

    @property
    def ceph_conf(self) -> Path:
        return self.ceph_dir / "ceph.conf"

    @property
    def pid_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def chaos(self) -> bool:
        """Brought up for chaos runs (size-limited state directories)."""
        return bool(self.extra.get("chaos"))

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name} in lab {self.name}")

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        (self.state_dir / "lab.json").write_text(json.dumps(data, default=str, indent=1))

    @classmethod
    def load(cls, name: str) -> LabPlan | None:
        path = STATE_ROOT / name / "lab.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        nodes = [NodePlan(**{**n, "dir": Path(n["dir"])}) for n in data.pop("nodes")]
        return cls(nodes=nodes, **{**data, "state_dir": Path(data["state_dir"])})


def chaos_requested() -> bool:
    """Whether the environment asks for a chaos lab (PVC_LAB_CHAOS=1/true/yes)."""
    return os.environ.get(CHAOS_ENV, "").strip().lower() in ("1", "true", "yes")


def make_plan(name: str = DEFAULT_NAME, nodes: int = 3, api_port: int | None = None,
              zk_port: int | None = None, chaos: bool | None = None) -> LabPlan:
    if not 1 <= nodes <= 32:
        raise ValueError("a lab has between 1 and 32 nodes")
    if not name.replace("-", "").isalnum() or len(name) > 8:
        raise ValueError("lab name: letters, digits and '-', at most 8 characters")
    state = STATE_ROOT / name
    plans = [
        NodePlan(name=f"hv{i}", index=i, coordinator=i <= 3, netns=f"{name}-hv{i}",
                 address=f"{SUBNET}.{i}", dir=state / f"hv{i}")
        for i in range(1, nodes + 1)
    ]
    # The default lab publishes the API on 7370; other labs derive their ports from the name.
    offset = 0 if name == DEFAULT_NAME else 10 + sum(name.encode()) % 500
    return LabPlan(name=name, nodes=plans, state_dir=state,
                   api_port=api_port or API_PORT + offset * 2,
                   zk_port=zk_port or 12181 + offset * 2, switch_netns=f"{name}-sw",
                   extra={"chaos": True} if (chaos_requested() if chaos is None else chaos) else {})

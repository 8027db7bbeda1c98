"""pvc.core.zk.ZK is the only code that talks to kazoo (its retry and error policy is decided
once): nothing else may reach through a ZK's `client` (`zk.client`, `self.zk.client`, ...).
The ZooKeeper internals (core/zk.py, core/zkcache.py, core/zkmulti.py) and the lab, which builds
clusters, are exempt."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "pvc"
EXEMPT = {SRC / "core" / "zk.py", SRC / "core" / "zkcache.py", SRC / "core" / "zkmulti.py"}


def _is_zk(node: ast.expr) -> bool:
    """A name or attribute called zk: `zk`, `self.zk`, `ctx.zk`."""
    if isinstance(node, ast.Name):
        return node.id == "zk"
    return isinstance(node, ast.Attribute) and node.attr == "zk"


def reaches_through(source: str) -> list[int]:
    """Lines of `source` with an attribute access `<...>zk.client`."""
    return sorted(node.lineno for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Attribute) and node.attr == "client" and _is_zk(node.value))


def test_the_check_sees_every_spelling() -> None:
    source = "zk.client.get('/')\nself.zk.client.set('/', b'')\nctx.zk.client\nhttp.client\nself.client\n"
    assert reaches_through(source) == [1, 2, 3]


def test_nothing_outside_the_zk_layer_reaches_kazoo() -> None:
    offenders = [f"{path.relative_to(SRC.parent)}:{line}"
                 for path in sorted(SRC.rglob("*.py"))
                 if path not in EXEMPT and (SRC / "lab") not in path.parents
                 for line in reaches_through(path.read_text())]
    assert not offenders, "use a pvc.core.zk.ZK method instead of its kazoo client: " + ", ".join(offenders)

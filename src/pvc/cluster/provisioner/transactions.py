"""Provisioner writes: each is one ZooKeeper transaction that also bumps /provisioner's version.

Every write validates against what it reads and commits its ops together with a set of
/provisioner at the version it saw, so two writers validated against the same state cannot both
commit: a profile cannot be added with a template that is being removed. The loser plans again.
"""

from __future__ import annotations

from collections.abc import Callable

from pvc.cluster.provisioner.store import PATHS, WHAT, profiles_using
from pvc.core import schema
from pvc.core.errors import Conflict
from pvc.core.zk import ZK, TxOp

ATTEMPTS = 25

Op = TxOp
Plan = Callable[[Op], tuple[list[Op], str]]


def _lock(zk: ZK) -> Op:
    """Bump /provisioner's data version (kept as it is): every provisioner write does, so two
    writers validated against the same state cannot both commit."""
    found = zk.get_raw(schema.PROVISIONER)
    if found is None:
        zk.ensure(schema.PROVISIONER)
        found = zk.get_raw(schema.PROVISIONER)
    assert found is not None
    raw, stat = found
    version = stat.version
    return lambda tx: tx.set_data(schema.PROVISIONER, raw or b"", version=version)


def transact(zk: ZK, plan: Plan) -> str:
    """Run plan(lock) (read, validate, return the ops and the answer) and commit lock + ops in one
    transaction; when another writer won, plan again on the new state."""
    for _attempt in range(ATTEMPTS):
        lock = _lock(zk)
        ops, answer = plan(lock)
        if not ops or zk.commit_ops([lock, *ops]):
            return answer
    raise Conflict("Too many concurrent changes to the provisioner; try again.")


def refuse_existing(zk: ZK, kind: str, name: str) -> None:
    if zk.exists(PATHS[kind](name)):
        raise Conflict(f"name: the {WHAT[kind]} '{name}' already exists.")


def refuse_used(zk: ZK, kind: str, name: str) -> None:
    """A document a profile names cannot be removed; the message names the profiles."""
    users = profiles_using(zk, kind, name)
    if users:
        names = ", ".join(f"'{u}'" for u in users)
        raise Conflict(f"The {WHAT[kind]} '{name}' is used by profile{'s' if len(users) > 1 else ''} "
                       f"{names}; change or remove {'them' if len(users) > 1 else 'it'} first.")

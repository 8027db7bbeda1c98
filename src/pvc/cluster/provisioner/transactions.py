"""Provisioner writes: each is one ZooKeeper transaction that also bumps /provisioner's version.

Every write validates against what it reads and commits its ops together with a set of
/provisioner at the version it saw, so two writers validated against the same state cannot both
commit: a profile cannot be added with a template that is being removed. The loser plans again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvc.cluster.provisioner.ids import next_id
from pvc.cluster.provisioner.store import PATHS, WHAT, get_doc, profiles_using
from pvc.core import schema
from pvc.core.errors import Conflict
from pvc.core.zk import ZK, TxOp, op_create, op_delete, op_set

ATTEMPTS = 25

Op = TxOp
Plan = Callable[[Op], tuple[list[Op], str]]
Doc = dict[str, Any]


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


# -- the writes every document kind makes ------------------------------------------------------------

def create_document(zk: ZK, kind: str, name: str, answer: str, fields: Callable[[], Doc] = dict) -> str:
    """Store the new `kind` document {id, name, **fields()}; refused when `name` exists.

    `fields` runs in the plan, after that check and before an id is taken, so what it checks
    against the cluster (an OVA, a profile's templates) is checked on the state that commits,
    and a refusal takes no id."""
    def plan(_lock: Op) -> tuple[list[Op], str]:
        refuse_existing(zk, kind, name)
        values = fields()
        doc = {"id": next_id(zk, kind), "name": name, **values}
        return [op_create(PATHS[kind](name), doc)], answer

    return transact(zk, plan)


def update_document(zk: ZK, kind: str, name: str, change: Callable[[Doc], Doc], answer: str,
                    unchanged: str | None = None) -> str:
    """Replace the `kind` document `name` (NotFound if missing) with change(current), which may
    refuse; when that is the document as it is, write nothing and answer `unchanged` (if given)."""
    def plan(_lock: Op) -> tuple[list[Op], str]:
        current = get_doc(zk, kind, name)
        doc = change(current)
        if unchanged is not None and doc == current:
            return [], unchanged
        return [op_set(PATHS[kind](name), doc)], answer

    return transact(zk, plan)


def remove_document(zk: ZK, kind: str, name: str, answer: str) -> str:
    """Remove the `kind` document `name` (NotFound if missing); refused while a profile names it."""
    def plan(_lock: Op) -> tuple[list[Op], str]:
        get_doc(zk, kind, name)
        refuse_used(zk, kind, name)
        return [op_delete(PATHS[kind](name))], answer

    return transact(zk, plan)

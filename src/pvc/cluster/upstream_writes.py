"""Writing an upstream PVC 1.0 backup's mapped objects into this cluster (pvc.cluster.upstream_import
decides what maps). Before anything is written, every item is checked against this cluster too (a
VM, network, pool... that exists already, a network clashing with ours, an ACL that nft refuses);
then nothing is written unless everything maps or the caller allows a partial import. Each item is
one transaction (a VM with its name index, a network with its ACLs and reservations), so no VM or
network is ever half imported."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from pvc.cluster import upstream_import as ui
from pvc.cluster.backup import refuse_running
from pvc.cluster.networks.acls import check_rule
from pvc.cluster.networks.networks import check_cluster
from pvc.cluster.networks.store import network_docs
from pvc.core import domainxml, schema
from pvc.core.errors import Conflict, InvalidInput
from pvc.core.zk import ZK, encode

# Storage first (VMs name their volumes), networks before VMs (VMs bridge onto them), faults last.
ORDER = ("pool", "volume", "snapshot", "network", "vm", "fault")
Checker = Callable[[str], None]


def _check_target(zk: ZK, item: ui.Mapped, networks: dict[str, dict[str, Any]], nodes: set[str],
                  checker: Checker | None, plan: ui.Plan) -> ui.Mapped | ui.Unmapped:
    """The item as it can be written here, or why it cannot."""
    for path, _doc in item.creates:
        if zk.exists(path):
            return ui.Unmapped(item.kind, item.key, item.name, f"already exists in this cluster ({path})")
    notes = list(item.notes)
    docs = dict(item.creates)
    if item.kind == "network":
        doc = docs[schema.network(item.key)]
        try:
            check_cluster(doc, networks.values())
        except (Conflict, InvalidInput) as exc:
            return ui.Unmapped(item.kind, item.key, item.name, exc.message)
        if checker is not None:
            acls = docs[schema.network_acls(item.key)]
            for direction in list(acls):
                kept = []
                for rule in acls[direction]:
                    try:
                        check_rule(doc, direction, rule["rule"], checker)
                        kept.append(rule)
                    except InvalidInput as exc:
                        key = f"{item.key}/{direction}/{rule['description']}"
                        plan.unmapped.append(ui.Unmapped("acl", key, rule["description"], exc.message))
                acls[direction] = kept
            item = dataclasses.replace(item, creates=tuple((p, docs[p]) for p, _ in item.creates))
    if item.kind == "vm":
        record = docs[schema.vm(item.key)]
        if record["node"] and record["node"] not in nodes:
            notes.append(f"node {record['node']} is not (yet) a node of this cluster: the VM starts once a "
                         f"node of that name joins, or move it")
    return dataclasses.replace(item, notes=tuple(notes))


def _write(zk: ZK, item: ui.Mapped) -> str | None:
    """Create the item's znodes in one transaction; None, or why it was not written."""
    for parent in item.parents:
        zk.ensure(parent)
    parent_version = None
    if item.kind == "network":
        stat = zk.stat(schema.NETWORKS)
        parent_version = stat.version if stat is not None else None

    def once() -> list[Any]:
        tx = zk.transaction()
        if parent_version is not None:      # serialises with the network writers (networks.store)
            tx.set_data(schema.NETWORKS, b"", version=parent_version)
        for path, doc in item.creates:
            tx.create(path, b"" if doc is None else encode(doc))
        return list(tx.commit())

    results = zk.retry(once)
    failed = next((r for r in results if isinstance(r, Exception) and type(r).__name__ != "RolledBackError"),
                  None)
    if failed is None:
        return None
    if isinstance(failed, NodeExistsError | BadVersionError | NoNodeError):
        first = item.creates[0][0]
        if isinstance(failed, NodeExistsError) and zk.get_raw(first) is not None and \
                zk.get(first, None) == item.creates[0][1]:
            return None                     # our own first attempt, its reply lost
        return f"changed in this cluster while importing ({type(failed).__name__}); nothing of it written"
    raise failed


def import_upstream(zk: ZK, data: Any, dry_run: bool = False, partial: bool = False, force: bool = False,
                    policy: domainxml.DomainPolicy = domainxml.DEFAULT_POLICY,
                    checker: Checker | None = None) -> dict[str, Any]:
    """Plan, check against this cluster, and (unless dry_run or something does not map and not
    partial) write. The report: what maps, what does not and why, what is dropped and why, and
    what was written. `checker` validates ACL rules with nft (None: the text checks only)."""
    version = zk.get(schema.SCHEMA_VERSION_PATH, None)
    if version != schema.SCHEMA_VERSION or not zk.exists(schema.CLUSTER):
        raise InvalidInput("This cluster is not initialized (no cluster document at schema version "
                           f"{schema.SCHEMA_VERSION}); run `pvc cluster init` first, then import")
    plan = ui.plan(data, policy)
    if not dry_run:
        refuse_running(zk, force, "import an upstream backup")
    networks = network_docs(zk)
    nodes = set(zk.children(schema.NODES))
    checked: list[ui.Mapped] = []
    for item in sorted(plan.mapped, key=lambda m: (ORDER.index(m.kind), m.key)):
        result = _check_target(zk, item, networks, nodes, checker, plan)
        if isinstance(result, ui.Unmapped):
            plan.unmapped.append(result)
        else:
            checked.append(result)
            if result.kind == "network":
                networks[result.key] = dict(result.creates)[schema.network(result.key)]
    plan.mapped = checked
    report = {**plan.report(), "dry_run": dry_run, "written": [], "failed": []}
    if dry_run:
        report["message"] = "Dry run: nothing was written."
        return report
    if not plan.complete and not partial:
        report["message"] = (f"Nothing was written: {len(plan.unmapped)} item(s) do not map (listed with "
                             f"the reason); fix them, or import the rest with partial (--partial).")
        return report
    for item in checked:
        why = _write(zk, item)
        if why is None:
            report["written"].append({"kind": item.kind, "key": item.key, "name": item.name})
        else:
            report["failed"].append({"kind": item.kind, "key": item.key, "name": item.name, "reason": why})
    failed = f"; {len(report['failed'])} failed" if report["failed"] else ""
    report["message"] = (f'Imported {len(report["written"])} item(s) from upstream cluster '
                         f'"{plan.source_cluster}"{failed}.')
    return report

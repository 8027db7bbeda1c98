"""Writing VMs: every change of `/vms/<uuid>` is a transition applied with compare-and-set.

`apply` is the one way to change a VM document from the cluster layer: it reads the document
with its version, lets a pure transition (pvc.cluster.vms.transitions) decide on it, and writes
the result only if the version is unchanged, deciding again after a lost race. An edit based on a
version the caller saw (HTTP If-Match) passes `expected_version` and gets PreconditionFailed when
the document moved on. Define and remove are one transaction each with the name index, so only
one of two concurrent defines wins and a removed VM leaves no index entry.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

from pvc.cluster import placement
from pvc.cluster import sriov as sriov_mod
from pvc.cluster import tasks as tasks_mod
from pvc.cluster.clusterinfo import get_cluster
from pvc.cluster.common import wait_until
from pvc.cluster.nodes import get_node, load_nodes
from pvc.cluster.vms import transitions as tr
from pvc.cluster.vms.index import get_status, get_vm, is_running, resolve_uuid
from pvc.cluster.vms.rules import (
    check_device_xml,
    check_downtime,
    check_fits,
    check_fits_cluster,
    check_limit_nodes,
    check_method,
    check_vm_name,
    choose_node,
    make_tags,
    parse_limit,
    parse_xml,
)
from pvc.cluster.vms.startlock import start_lock
from pvc.cluster.vms.view import derived
from pvc.core import domainxml, schema, taskkinds
from pvc.core.errors import Conflict, InvalidInput, NotFound, PreconditionFailed
from pvc.core.records import TaskRecord, VMRecord
from pvc.core.vocabulary import VM_INITIAL_STATES, VM_STOPPED_STATES
from pvc.core.zk import ZK, encode

# Bounds on waits that upstream leaves unbounded: a node that never acts must not hang a request.
WAIT_TIMEOUT = 600.0     # disabling a running VM waits until it is down
STOP_TIMEOUT = 60.0      # removing a VM waits until its node stopped it
ATTEMPTS = 20


# -- the one way to change a VM document ------------------------------------------------------------

def _check_version(record: VMRecord, version: int, expected: int | None) -> None:
    if expected is not None and version != expected:
        raise PreconditionFailed(
            f'VM "{record.name}" changed since version {expected} was read (now version {version}); '
            f"read it again and repeat the change.")


def apply(zk: ZK, uuid: str, transition: tr.Transition, expected_version: int | None = None) -> VMRecord:
    """CAS the VM document through `transition` (decided again on every attempt); the stored
    record afterwards. A transition that returns None writes nothing."""
    path = schema.vm(uuid)
    for attempt in range(ATTEMPTS * 2):
        if attempt:
            time.sleep(min(0.2, 0.002 * 2 ** min(attempt, 7)))
        found = zk.get_doc(path)
        if found is None or not isinstance(found.data, dict):
            raise NotFound("VM not found.")
        current = VMRecord.model_validate(found.data)
        _check_version(current, found.version, expected_version)
        new = transition(current)
        if new is None or new == current:
            return current
        try:
            zk.set_doc(path, {**found.data, **new.doc()}, version=found.version)
            return new
        except BadVersionError:
            continue
        except NoNodeError:
            raise NotFound("VM not found.") from None
    raise Conflict(f"VM {uuid}: too many concurrent updates, try again")


# -- define -------------------------------------------------------------------------------------------

def define(zk: ZK, xml: str | bytes, node: str | None = None, limit: str | Sequence[str] | None = None,
           selector: str | None = None, autostart: bool = False, migration_method: str = "live",
           migration_max_downtime: int = 300, user_tags: Iterable[str] = (),
           protected_tags: Iterable[str] = (), profile: str = "",
           initial_state: str = "stop", domain: domainxml.Domain | None = None,
           policy: domainxml.DomainPolicy = domainxml.DEFAULT_POLICY, strict: bool = False,
           force: bool = False) -> VMRecord:
    """Add a VM; its name and UUID are claimed in one transaction, so only one define wins.

    domain: the XML already parsed (and held to the domain XML policy) by the caller (it is
    parsed once per operation); policy: the domain XML policy (D14) the XML must pass.
    strict (an administrator's define, the API): a node limit naming nodes the cluster lacks and
    a VM no node could ever run (memory, vCPUs) are refused; `force` accepts both (nodes still
    to be added) and places the VM even where it does not fit yet. Imports and mirrors are not
    strict: they keep what they carry.
    """
    domain = domain or parse_xml(xml, policy=sriov_mod.managed_policy(zk, policy))
    check_vm_name(domain.name, "xml: <name>")
    node_limit = parse_limit(limit)
    chosen_selector = placement.check_selector(selector) or "none"
    method = check_method(migration_method)
    downtime = check_downtime(migration_max_downtime)
    tags = make_tags(user_tags, protected_tags)
    if initial_state not in VM_INITIAL_STATES:
        raise InvalidInput(f"initial_state: '{initial_state}' is not one of {', '.join(VM_INITIAL_STATES)}")
    taken = zk.get_many([schema.vm_name(domain.name), schema.vm(domain.uuid)])   # one round trip
    if taken.get(schema.vm_name(domain.name)) is not None:
        raise Conflict(f'A VM named "{domain.name}" already exists in the cluster.')
    if taken.get(schema.vm(domain.uuid)) is not None:
        raise Conflict(f'A VM with UUID "{domain.uuid}" already exists in the cluster.')
    forced, judged = strict and force, strict and not force
    registered = load_nodes(zk, fresh=True)     # placement and refusals: never the watch cache
    if judged:
        check_limit_nodes(node_limit, [n.name for n in registered])
    if node:
        target = get_node(zk, node)
        if node_limit and target.name not in node_limit:
            raise InvalidInput(f"node: '{node}' is not in the VM's node limit ({','.join(node_limit)})")
        if not forced:
            check_fits(target, domain)
        if judged:                         # a node without figures yet: judged by the others
            check_fits_cluster(registered, domain)
    else:
        if judged:
            check_fits_cluster(registered, domain)
        default = get_cluster(zk).migration_target_selector
        eligible = sriov_mod.nodes_for(zk, domain, registered)
        try:
            target = choose_node(eligible, domain, selector, default, node_limit)
        except InvalidInput:
            # forced: a node that cannot run it yet (a bigger one is to come)
            fallback = (placement.find_target(eligible, selector, default, None, node_limit)
                        if forced else None)
            if fallback is None:
                raise
            target = fallback
    claimed = sriov_mod.claim(zk, target.name, domain.uuid, domain)   # refused: a VF another VM uses
    if sriov_mod.hostdev_vfs(zk, target.name, domain):
        method = "shutdown"        # as upstream: a passed-through VF cannot migrate live
    text = xml if isinstance(xml, str) else xml.decode()
    record = VMRecord(
        uuid=domain.uuid, name=domain.name, xml=text, **derived(domain, text),
        state=initial_state, node=target.name, node_limit=node_limit, node_selector=chosen_selector,
        node_autostart=autostart, migration_method=method, migration_max_downtime=downtime,
        profile=profile or "", description=domain.description or "", tags=tags,
        rbd_volumes=domain.rbd_volumes,
    )
    try:
        _create(zk, record)
    except Exception:
        sriov_mod.release(zk, target.name, domain.uuid, only=claimed)
        raise
    return record


def _create(zk: ZK, record: VMRecord) -> None:
    doc = encode(record.doc())

    def once() -> list[Any]:
        tx = zk.transaction()
        tx.create(schema.vm(record.uuid), doc)
        tx.create(schema.vm_name(record.name), encode(record.uuid))
        return list(tx.commit())

    results = zk.retry(once)
    errors = [r for r in results if isinstance(r, Exception) and type(r).__name__ != "RolledBackError"]
    if not errors:
        return
    # A retry after a lost reply finds its own first attempt: that is success, not a duplicate.
    raw = zk.get_raw(schema.vm(record.uuid))
    if raw is not None and raw[0] == doc and zk.get(schema.vm_name(record.name), None) == record.uuid:
        return
    if isinstance(results[1], NodeExistsError):
        raise Conflict(f'A VM named "{record.name}" already exists in the cluster.')
    if isinstance(results[0], NodeExistsError):
        raise Conflict(f'A VM with UUID "{record.uuid}" already exists in the cluster.')
    raise errors[0]


# -- the definition and the name --------------------------------------------------------------------

def modify(zk: ZK, vm: str, xml: str | bytes, restart: bool = False,
           expected_version: int | None = None,
           policy: domainxml.DomainPolicy = domainxml.DEFAULT_POLICY, strict: bool = False,
           force: bool = False) -> str:
    """Replace a VM's XML; a new name in it renames the VM (index swapped atomically) and its
    snapshot records (their XML's name; their volumes stay, as the disks' sources are the caller's).

    strict (the API): a definition no node could ever run is refused, unless `force` (a bigger
    node still to be added; then it need not fit its own node either)."""
    record = get_vm(zk, vm)
    domain = parse_xml(xml, policy=sriov_mod.managed_policy(zk, policy))
    check_vm_name(domain.name, "xml: <name>")
    if domain.uuid != record.uuid:
        raise InvalidInput(f"xml: the UUID {domain.uuid} differs from VM {record.name}'s ({record.uuid}); "
                           f"a VM's UUID cannot change")
    try:
        node = get_node(zk, record.node) if record.node else None
    except NotFound:
        node = None
    if node is not None and not (strict and force):
        check_fits(node, domain)
    if strict and not force:                # its node unknown or without figures: judged by the others
        check_fits_cluster(load_nodes(zk, fresh=True), domain)
    text = xml if isinstance(xml, str) else xml.decode()

    def change(current: VMRecord) -> VMRecord:
        return tr.replace_definition(current, domain, text)

    claimed = sriov_mod.claim(zk, record.node, record.uuid, domain) if record.node else []
    try:
        if domain.name != record.name:
            if zk.exists(schema.vm_name(domain.name)):
                raise Conflict(f'A VM named "{domain.name}" already exists in the cluster.')
            updated = _swap_name(zk, record.uuid, change, expected_version)
        else:
            updated = apply(zk, record.uuid, change, expected_version)
    except Exception:
        if record.node:
            sriov_mod.release(zk, record.node, record.uuid, only=claimed)
        raise
    if domain.name != record.name:
        # its snapshots follow the new name as after `vm rename` (no volume was renamed here)
        from pvc.cluster import vmsnapshots
        vmsnapshots.follow_vm_rename(zk, record.uuid, domain.name, {})
    if record.node:     # VFs the new definition no longer uses are free again
        sriov_mod.release(zk, record.node, record.uuid, keep=sriov_mod.vf_names(zk, record.node, domain))
        if sriov_mod.hostdev_vfs(zk, record.node, domain) and updated.migration_method != "shutdown":
            updated = apply(zk, record.uuid, lambda r: tr.set_fields(r, {"migration_method": "shutdown"}))
    message = f'Successfully modified configuration of VM "{record.name}".'
    if restart:
        updated = apply(zk, record.uuid, tr.restart_if_running)
        if updated.state == "restart":
            message += " Restarting it to apply the change."
        else:
            message += f" It is in {updated.state} state, so there is nothing to restart."
    return message


def _swap_name(zk: ZK, uuid: str, fn: Callable[[VMRecord], VMRecord],
               expected_version: int | None = None) -> VMRecord:
    """Write a renamed record and move its name index entry in one transaction (CAS-checked)."""
    for _ in range(ATTEMPTS):
        found = zk.get_doc(schema.vm(uuid))
        if found is None or not isinstance(found.data, dict):
            raise NotFound("VM not found.")
        old = VMRecord.model_validate(found.data)
        _check_version(old, found.version, expected_version)
        new = fn(old)
        check_vm_name(new.name)

        def once(old: VMRecord = old, new: VMRecord = new, version: int = found.version,
                 data: dict[str, Any] = found.data) -> list[Any]:
            tx = zk.transaction()
            tx.set_data(schema.vm(uuid), encode({**data, **new.doc()}), version=version)
            tx.delete(schema.vm_name(old.name))
            tx.create(schema.vm_name(new.name), encode(uuid))
            return list(tx.commit())

        results = zk.retry(once)
        if not any(isinstance(r, Exception) for r in results):
            zk.delete(schema.vm_console(uuid))
            return new
        if isinstance(results[0], BadVersionError):
            continue
        if isinstance(results[2], NodeExistsError):
            raise Conflict(f'A VM named "{new.name}" already exists in the cluster.')
        if isinstance(results[1], NoNodeError):
            # The old index entry is missing (an interrupted older write); recreate just the new one.
            zk.put(schema.vm_name(old.name), uuid)
            continue
        raise next(r for r in results if isinstance(r, Exception) and type(r).__name__ != "RolledBackError")
    raise Conflict(f"VM {uuid}: too many concurrent updates, try again")


def check_rename(zk: ZK, record: VMRecord, new_name: str) -> None:
    check_vm_name(new_name, "new_name")
    tr.check_renamable(record)
    if new_name == record.name:
        raise InvalidInput(f"new_name: VM is already named '{new_name}'")
    if zk.exists(schema.vm_name(new_name)):
        raise Conflict(f'A VM named "{new_name}" already exists in the cluster.')


def rename(zk: ZK, vm: str, new_name: str, volume_renames: dict[str, str] | None = None) -> str:
    """Rename a stopped VM; the console log path follows the new name.

    Disks whose volumes are named `<old>_*` follow the new name in the XML only where
    volume_renames ("pool/old" -> "pool/new") says their RBD image was renamed too
    (pvc.cluster.vm_storage.rename does both); the other disks stay as they are.
    """
    renames = volume_renames or {}
    record = get_vm(zk, vm)
    check_rename(zk, record, new_name)

    def change(current: VMRecord) -> VMRecord:
        tr.check_renamable(current)
        old_domain = domainxml.parse(current.xml)
        new_domain = domainxml.parse(domainxml.rename(current.xml, new_name))
        if new_domain.rbd_volumes != old_domain.rbd_volumes:
            disks = tuple(new if _renamed(old, new, renames) else old
                          for old, new in zip(old_domain.disks, new_domain.disks, strict=True))
            new_domain = dataclasses.replace(new_domain, disks=disks)
        return tr.rename(current, new_domain, domainxml.render(new_domain))

    _swap_name(zk, record.uuid, change)
    # its snapshots follow: the name in their XML, their volumes, the owner of their RBD snapshots
    from pvc.cluster import vmsnapshots
    vmsnapshots.follow_vm_rename(zk, record.uuid, new_name, renames)
    return f'Successfully renamed VM "{record.name}" to "{new_name}".'


def _renamed(old: domainxml.Disk, new: domainxml.Disk, renames: dict[str, str]) -> bool:
    if old.source is None or new.source is None or old.source.name == new.source.name:
        return True
    return renames.get(str(old.source.name)) == new.source.name


# -- remove -------------------------------------------------------------------------------------------

def undefine(zk: ZK, vm: str, timeout: float = STOP_TIMEOUT) -> str:
    """Stop the VM, then delete it and its name in one transaction (bounded by `timeout`).

    Remove vs start (issue #17): a node starts a domain only under the VM's start lock, after
    reading the VM again, and records the start before it lets go. So, after writing stop, the
    remove takes that lock: a start in flight finishes and is recorded first (and the node then
    stops it, because the state says stop); while the remove holds the lock no start can begin,
    and the delete happens before it lets go. No QEMU keeps running for a removed VM."""
    deadline = time.monotonic() + timeout
    record = apply(zk, get_vm(zk, vm).uuid, tr.stop)
    with start_lock(zk, record.uuid, timeout, "remove") as locked:
        if not locked:
            raise Conflict(f'VM "{record.name}" is being started on node {record.node} and the start '
                           f"did not finish within {int(timeout)} s; it is left in stop state and was "
                           f"not removed.")
        if not wait_until(lambda: not is_running(get_status(zk, record.uuid)),
                          max(0.0, deadline - time.monotonic())):
            raise Conflict(f'VM "{record.name}" did not stop within {int(timeout)} s (node {record.node}); '
                           f"it is left in stop state and was not removed.")
        _delete(zk, record.uuid)
    return f'Undefined VM "{record.name}" from the cluster.'


def _subtree(zk: ZK, path: str) -> list[str]:
    """path and every znode below it, deepest first (the order a transaction deletes them in)."""
    out: list[str] = []
    for child in zk.children(path):
        out.extend(_subtree(zk, f"{path}/{child}"))
    out.append(path)
    return out


def _delete(zk: ZK, uuid: str) -> None:
    for _ in range(ATTEMPTS):
        found = zk.get_doc(schema.vm(uuid))
        if found is None or not isinstance(found.data, dict):
            return
        name = found.data.get("name", "")
        paths = _subtree(zk, schema.vm(uuid))
        index_entry = bool(name) and zk.exists(schema.vm_name(name))

        def once(paths: list[str] = paths, version: int = found.version, name: str = name,
                 index_entry: bool = index_entry) -> list[Any]:
            tx = zk.transaction()
            for path in paths[:-1]:
                tx.delete(path)
            tx.delete(paths[-1], version=version)
            if index_entry:
                tx.delete(schema.vm_name(name))
            return list(tx.commit())

        results = zk.retry(once)
        if not any(isinstance(r, Exception) for r in results):
            zk.delete(schema.vm_console(uuid))
            sriov_mod.release_everywhere(zk, uuid)      # its SR-IOV VFs are free again
            from pvc.cluster import vmsnapshots  # its snapshot records go with it
            vmsnapshots.forget_vm(zk, uuid)
            return
        if any(isinstance(r, BadVersionError | NotEmptyError | NoNodeError) for r in results):
            continue  # changed or a status/console znode appeared meanwhile: read again
        raise next(r for r in results if isinstance(r, Exception) and type(r).__name__ != "RolledBackError")
    raise Conflict(f"VM {uuid}: too many concurrent updates, try again")


# -- state and node -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StateResult:
    record: VMRecord          # the VM after the write
    plan: tr.StatePlan


def set_state(zk: ZK, vm: str, state: str, force: bool = False, timeout: float = WAIT_TIMEOUT,
              expected_version: int | None = None) -> StateResult:
    """Change the desired state (§4.4). Disabling a running VM waits (bounded) until it is down;
    waiting for the other transitions is the caller's choice (the API waits asynchronously)."""
    uuid = resolve_uuid(zk, vm)
    plans: list[tr.StatePlan] = []

    def first(current: VMRecord) -> VMRecord | None:
        plan = tr.plan_state(current.name, current.state, state, force)
        plans.append(plan)
        return tr.request_state(current, plan)

    record = apply(zk, uuid, first, expected_version)
    plan = plans[-1]
    if plan.then:
        # Disable a running VM: it must be down first (the node acts on stop/shutdown, not disable).
        if not wait_until(lambda: not is_running(get_status(zk, uuid)), timeout):
            raise Conflict(f'VM "{record.name}" did not shut down within {int(timeout)} s; it was not '
                           f"disabled (use force to stop it instead).")
        record = apply(zk, uuid, tr.finish_disable)
    return StateResult(record, plan)


@dataclass(frozen=True)
class NodeChangeResult:
    record: VMRecord          # the VM after the write
    change: tr.NodeChange


def change_node(zk: ZK, vm: str, action: str, node: str | None = None, force: bool = False,
                force_live: bool = False, expected_version: int | None = None) -> NodeChangeResult:
    """migrate (temporary), move (permanent) or unmigrate (§4.4); the nodes do the migration."""
    uuid = resolve_uuid(zk, vm)
    if node:
        get_node(zk, node)
    nodes = load_nodes(zk, fresh=True)
    default = get_cluster(zk).migration_target_selector
    changes: list[tr.NodeChange] = []
    # SR-IOV VFs: refused or moved to the target's free VFs before the node changes (sriov_mod).
    vf_move = sriov_mod.plan_node_change(zk, get_vm(zk, uuid), action, nodes, node, force, force_live,
                                         default)

    def change(current: VMRecord) -> VMRecord:
        planned = tr.plan_node_change(current, action, nodes, node, force, force_live, default)
        changes.append(planned)
        return tr.request_node_change(vf_move.apply(current, planned), planned)

    try:
        record = apply(zk, uuid, change, expected_version)
    except Exception:
        vf_move.undo(zk)
        raise
    vf_move.done(zk)
    return NodeChangeResult(record, changes[-1])


# -- metadata and tags ----------------------------------------------------------------------------------

def meta_fields(limit: str | Sequence[str] | None = None, selector: str | None = None,
                autostart: bool | None = None, profile: str | None = None,
                migration_method: str | None = None,
                migration_max_downtime: int | None = None) -> dict[str, Any]:
    """The validated metadata fields given (None: leave as is)."""
    update: dict[str, Any] = {}
    if limit is not None:
        update["node_limit"] = parse_limit(limit)
    if selector is not None:
        update["node_selector"] = placement.check_selector(selector) or "none"
    if autostart is not None:
        update["node_autostart"] = bool(autostart)
    if profile is not None:
        update["profile"] = profile
    if migration_method is not None:
        update["migration_method"] = check_method(migration_method)
    if migration_max_downtime is not None:
        update["migration_max_downtime"] = check_downtime(migration_max_downtime)
    return update


def set_meta(zk: ZK, vm: str, limit: str | Sequence[str] | None = None, selector: str | None = None,
             autostart: bool | None = None, profile: str | None = None,
             migration_method: str | None = None, migration_max_downtime: int | None = None,
             expected_version: int | None = None, strict: bool = False, force: bool = False) -> str:
    """Write only the metadata fields given; 'No updates to apply.' when none are.

    strict (the API): a node limit naming nodes the cluster lacks is refused unless `force`."""
    update = meta_fields(limit, selector, autostart, profile, migration_method, migration_max_downtime)
    if not update:
        raise InvalidInput("No updates to apply.")
    if strict and not force and update.get("node_limit"):
        check_limit_nodes(update["node_limit"], [n.name for n in load_nodes(zk, fresh=True)])
    record = apply(zk, resolve_uuid(zk, vm), lambda r: tr.set_fields(r, update), expected_version)
    return f'Successfully modified PVC metadata of VM "{record.name}".'


def modify_tag(zk: ZK, vm: str, action: str, tag: str, protected: bool = False,
               expected_version: int | None = None) -> str:
    record = apply(zk, resolve_uuid(zk, vm), lambda r: tr.change_tag(r, action, tag, protected),
                   expected_version)
    if action == "add":
        return f'Successfully added tag "{tag}" to VM "{record.name}".'
    return f'Successfully removed tag "{tag}" from VM "{record.name}".'


# -- console and node tasks ---------------------------------------------------------------------------

def console_log(zk: ZK, vm: str, lines: int = 10) -> str:
    """The last `lines` lines of the serial console the VM's node keeps in ZooKeeper."""
    if lines < 0:
        raise InvalidInput(f"lines: must not be negative ({lines})")
    data = zk.get(schema.vm_console(resolve_uuid(zk, vm)), None)
    if isinstance(data, dict):
        data = data.get("lines", data.get("log", data.get("data", "")))
    text_lines = [str(line) for line in data] if isinstance(data, list) else str(data or "").split("\n")
    return "\n".join(text_lines[-lines:]) if lines else ""


def flush_locks(zk: ZK, vm: str, force: bool = False) -> TaskRecord:
    """Queue `vm.flush_locks` on the VM's node; only safe while the VM cannot be running."""
    record = get_vm(zk, vm)
    if record.state not in VM_STOPPED_STATES and not force:
        raise Conflict(f'VM "{record.name}" is not in stopped state; flushing RBD locks on a running VM is '
                       f"dangerous.")
    if not record.node:
        raise Conflict(f'VM "{record.name}" is not assigned to a node.')
    args = taskkinds.FlushLocksArgs(uuid=record.uuid, domain=record.name, force_unlock=force)
    return tasks_mod.submit(zk, taskkinds.VM_FLUSH_LOCKS, args, target=record.node)


def device_task(zk: ZK, vm: str, xml: str, attach: bool,
                policy: domainxml.DomainPolicy = domainxml.DEFAULT_POLICY) -> TaskRecord:
    """Queue `vm.device_attach`/`vm.device_detach` on the VM's node (live only; not persisted).
    An attached device is held to the domain XML policy; a detached one only needs to parse."""
    check_device_xml(xml, sriov_mod.managed_policy(zk, policy) if attach else None)
    record = get_vm(zk, vm)
    if attach:      # an SR-IOV VF only if the VM's definition holds it (claimed at modify)
        check_device_xml(xml, sriov_mod.claimed_policy(zk, record.node, record.uuid, policy))
    if record.state != "start":
        raise Conflict(f'VM "{record.name}" is not in started state; live-{"add" if attach else "remove"} '
                       f"unnecessary.")
    kind = taskkinds.VM_DEVICE_ATTACH if attach else taskkinds.VM_DEVICE_DETACH
    return tasks_mod.submit(zk, kind, taskkinds.DeviceArgs(uuid=record.uuid, domain=record.name, xml=xml),
                            target=record.node)

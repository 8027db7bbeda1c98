"""The `provisioner.create` task (pvc-facts §7.2): a profile's script builds and defines a VM.

Task arguments (pvc.core.taskkinds.ProvisionArgs; upstream's Celery kwargs, so upstream clients'
status views work): vm_name, vm_profile, define_vm (true), start_vm (true; implies define_vm),
script_run_args (["key=value", ...], override the profile's arguments). Each script stage may
take STAGE_TIMEOUT seconds. The script runs in pvc.worker.provisioner.sandbox: no settings,
no credentials, no network unless the profile's arguments say `sandbox_network=yes` (then it
shares the node's network, e.g. for debootstrap from a mirror; a run's arguments cannot turn it
on); its volume work goes through the broker.

Stages, as upstream's (progress i/PROVISION_STAGES with this text):
    0  Starting provisioning of VM "<vm>" with profile "<profile>"
    1  Collecting configuration details           profile, templates, script, vm_data
    2  Verifying configuration against cluster    name free, a node fits, VNIs exist, pools
                                                  and source volumes exist, sizes fit, the
                                                  target volumes are free, mkfs binaries exist
    3  Preparing provisioning script              sandbox process started, script loaded
    4  Running script setup() step
    5  Running script create() step               + the VM defined in state `provision`, with
                                                  the profile name and the system template's
                                                  node limit/selector/autostart/migration
    6  Running script prepare() step
    7  Running script install() step
    8  Running script cleanup() step
    9  Running general cleanup steps              maps of the VM's volumes released, sandbox gone
    10 Starting VM                                (start_vm)
    11 done

What the job makes is undone through a Reverter, newest first, on a failure or a cancel before
stage 8 has succeeded: the VM definition this job made is removed, the script's cleanup() runs (in
a fresh sandbox if the script process had to be killed), the sandbox goes, and every volume
`<vm>_<disk_id>` of the profile is unmapped and removed (verification made sure none existed
before). After stage 8 succeeded a cancel is no longer obeyed.
"""

from __future__ import annotations

import shutil
import time
import uuid
from typing import Any

from pvc.adapters import rbdmap
from pvc.adapters.ceph import Storage, StorageError, StorageNotFound, secret_uuid, storage_from_settings
from pvc.cluster import nodes as nodes_mod
from pvc.cluster import placement, vms
from pvc.cluster import provisioner as prov
from pvc.cluster import storage as st
from pvc.cluster import tasks as tasks_mod
from pvc.core import domainxml, schema
from pvc.core.config import config_path
from pvc.core.errors import PVCError
from pvc.core.revert import Reverter
from pvc.core.taskkinds import PROVISION_STAGES, PROVISIONER_CREATE
from pvc.worker.kinds.storage import Stages
from pvc.worker.provisioner import macs, vmdata
from pvc.worker.provisioner.broker import Broker
from pvc.worker.provisioner.limits import Limits
from pvc.worker.provisioner.sandbox import Sandbox, StageError
from pvc.worker.provisioner.vmbuilder import vm_id_of
from pvc.worker.registry import TaskCancelled, TaskContext, TaskFailed, task_kind

STAGE_TIMEOUT = 3600.0
CLEANUP_TIMEOUT = 600.0
UNDEFINE_TIMEOUT = 60.0
GIB = 1024**3
CANCEL_POLL = 1.0
NETWORK_ARGUMENT = "sandbox_network"
SECRET_KEY_SUFFIXES = ("file", "directory", "dir", "path", "paths", "directories")


def storage_for(settings: Any) -> Storage:
    """This worker's Storage (patched by tests)."""
    return storage_from_settings(settings)


def secret_paths(settings: Any) -> list[str]:
    """Every file or directory the settings name (configuration file, keyrings, token and key
    files, Ceph directory...): the sandbox masks each wherever one of its binds would show it."""
    found: set[str] = {config_path(getattr(settings, "source", None) or None)}

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and value.startswith("/") and key.endswith(SECRET_KEY_SUFFIXES):
            found.add(value)

    walk(settings.model_dump(mode="json"))
    return sorted(found)


def network_allowed(arguments: dict[str, Any]) -> bool:
    """The profile's argument sandbox_network=yes gives the script the node's network (e.g.
    debootstrap from a mirror); by default its network namespace has only loopback. Only the
    profile's own arguments count: a run's arguments cannot turn the network on."""
    value = str((arguments or {}).get(NETWORK_ARGUMENT, "")).strip().lower()
    return value in ("yes", "true", "1", "on", "allow", "host")


def _text(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


class Job:
    """One provisioning run: its stages, the sandbox running its script, and a Reverter holding
    the undo of everything it has made so far."""

    def __init__(self, ctx: TaskContext, vm_name: str, vm_profile: str, define_vm: bool, start_vm: bool,
                 run_args: list[str]) -> None:
        self.ctx, self.zk = ctx, ctx.zk
        self.vm_name, self.vm_profile = vm_name, vm_profile
        self.define_vm, self.start_vm = define_vm, start_vm and define_vm
        self.run_args = run_args
        self.stages = Stages(ctx, PROVISION_STAGES)
        self.revert = Reverter(self.log)
        self.docs: prov.ProfileDocs | None = None
        self.vm_data: dict[str, Any] = {}
        self.vm_uuid = ""
        self.storage: Storage | None = None
        self.defined: str | None = None       # uuid of the VM this job defined
        self.sandbox: Sandbox | None = None
        self._cancel_checked = 0.0
        self._cancelled = False

    # -- helpers -----------------------------------------------------------------------------
    def log(self, line: str) -> None:
        self.ctx.log(line)

    def cancel_requested(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._cancel_checked >= CANCEL_POLL:
            self._cancel_checked = now
            try:
                self._cancelled = tasks_mod.get_task(self.zk, self.ctx.task_id).cancel_requested
            except PVCError:
                pass
        return self._cancelled

    def _storage(self) -> Storage:
        if self.storage is None:
            self.storage = storage_for(self.ctx.settings)
        return self.storage

    # -- the job -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.vm_uuid = str(uuid.uuid4())
        self.stages.start(f'Starting provisioning of VM "{self.vm_name}" with profile "{self.vm_profile}"')
        try:
            self.stages("Collecting configuration details")
            self.collect()
            self.stages("Verifying configuration against cluster")
            self.verify()
            # none of the volumes existed; from here on the script may create any of them
            self.revert.add(f'unmap and remove the volumes of VM "{self.vm_name}"', self.discard_volumes)
            self.stages("Preparing provisioning script")
            self.revert.add("close the script process", self.close_sandbox)
            self.prepare_script()
            self.revert.add("run the script's cleanup()", self.run_script_cleanup)
            self.run_script_stages()
            self.stages.irreversible()
            self.revert.commit()
            self.stages("Running general cleanup steps")
            self.close_sandbox()
            self.unmap_volumes()
        except Exception as exc:
            self.fail(exc)
            raise AssertionError("unreachable") from None
        if self.start_vm:
            self.stages("Starting VM")
            vms.set_state(self.zk, self.defined or self.vm_name, "start")
            status = (f'VM "{self.vm_name}" with profile "{self.vm_profile}" has been provisioned and '
                      f"started successfully")
        elif self.define_vm:
            status = f'VM "{self.vm_name}" with profile "{self.vm_profile}" has been provisioned successfully'
        else:
            status = (f'VM "{self.vm_name}" with profile "{self.vm_profile}" has been provisioned '
                      f"successfully (not defined)")
        self.stages.current = PROVISION_STAGES - 1
        self.stages(status)
        return {"status": status, "vm_name": self.vm_name, "vm_profile": self.vm_profile,
                "uuid": self.defined, "defined": self.define_vm, "started": self.start_vm}

    def run_script_stages(self) -> None:
        """Stages 4-8: the script's steps; the VM is defined from what create() returns."""
        self.stages("Running script setup() step")
        self.stage("setup")
        self.stages("Running script create() step")
        xml = self.stage("create")
        self.define(xml)
        self.stages("Running script prepare() step")
        self.stage("prepare")
        self.stages("Running script install() step")
        self.stage("install")
        self.stages("Running script cleanup() step")
        self.stage("cleanup")

    def fail(self, exc: Exception) -> None:
        """Undo after a failure or cancel, then raise what the task ends with."""
        cancelled = isinstance(exc, TaskCancelled) or (
            isinstance(exc, StageError) and exc.kind == "cancelled")
        reason = "cancelled" if cancelled else _text(exc)
        if isinstance(exc, StageError) and exc.detail:
            self.log(exc.detail.rstrip())
        self.log(f"provisioning {'cancelled' if cancelled else 'failed'}: {reason}")
        self.revert.revert("undoing what the job made")
        if cancelled:
            raise TaskCancelled(reason) from None
        if isinstance(exc, StageError):
            raise TaskFailed(f"ProvisioningError: {exc.message}") from None
        if isinstance(exc, TaskFailed):
            raise exc
        if isinstance(exc, PVCError | StorageError):
            raise TaskFailed(f"ProvisioningError: {_text(exc)}") from None
        raise TaskFailed(f"{type(exc).__name__}: {exc}") from None

    # -- stage 1 -----------------------------------------------------------------------------
    def collect(self) -> None:
        if not self.zk.exists(schema.profile(self.vm_profile)):
            raise TaskFailed(f'ProvisioningError: Profile "{self.vm_profile}" not found.')
        try:
            self.docs = prov.load_profile(self.zk, self.vm_profile)
        except PVCError as exc:
            raise TaskFailed(f"ProvisioningError: {exc.message}") from None
        monitors: list[tuple[str, int]] = []
        secret = self.ctx.settings.storage.secret_uuid or ""
        needs_storage = bool((self.docs.storage or {}).get("disks") or (self.docs.ova or {}).get("volumes"))
        try:
            storage = self._storage()
            monitors = storage.mon_addresses()
            secret = secret_uuid(storage.fsid(), self.ctx.settings.storage.secret_uuid)
        except (StorageError, OSError) as exc:
            if needs_storage:
                raise TaskFailed(f"ProvisioningError: cannot reach Ceph: {_text(exc)}") from None
            self.log(f"Ceph is not reachable ({_text(exc)}); the profile has no volumes, going on")
        self.vm_data = vmdata.build_vm_data(self.docs, self.run_args, monitors, secret)

    # -- stage 2 -----------------------------------------------------------------------------
    def verify(self) -> None:
        assert self.docs is not None
        problems: list[str] = []
        try:
            vms.check_vm_name(self.vm_name, "name")
        except PVCError as exc:
            raise TaskFailed(f"ProvisioningError: {exc.message}") from None
        if self.zk.exists(schema.vm_name(self.vm_name)):
            problems.append(f'A VM named "{self.vm_name}" already exists in the cluster')
        system = self.docs.system
        if self.define_vm:
            demand = placement.Demand(memory_mib=int(system.get("vram_mb") or 0),
                                      vcpus=int(system.get("vcpu_count") or 1))
            limit = list(system.get("node_limit") or [])
            nodes = nodes_mod.load_nodes(self.zk)
            if not placement.candidates(nodes, None, limit, demand):
                where = f" within the node limit ({','.join(limit)})" if limit else ""
                problems.append(f"No node{where} is ready and can take {demand.memory_mib} MiB of memory and "
                                f"{demand.vcpus} vCPUs")
        for index, net in enumerate(self.vm_data.get("networks") or []):
            vni = str(net["vni"])
            if vni not in prov.SPECIAL_NETWORKS and not self.zk.exists(schema.network(vni)):
                template_name = self.docs.profile.get("network_template")
                problems.append(f'Network VNI {vni} of network template "{template_name}" does not exist '
                                f"in the cluster")
            template = self.vm_data.get("mac_template")
            if template:
                try:
                    macs.template_mac(template, vm_id_of(self.vm_name), index)
                except macs.MacTemplateError as exc:
                    problems.append(str(exc))
        problems += self.verify_volumes()
        if problems:
            raise TaskFailed("ProvisioningError: " + "; ".join(problems))

    def verify_volumes(self) -> list[str]:
        problems: list[str] = []
        volumes = self.vm_data.get("volumes") or []
        if not volumes:
            return problems
        storage = self._storage()
        per_pool: dict[str, int] = {}
        for vol in volumes:
            pool, disk = str(vol.get("pool") or ""), vol.get("disk_id")
            name = f"{self.vm_name}_{disk}"
            try:
                st.get_pool(self.zk, pool)
            except PVCError:
                problems.append(f'Pool "{pool}" of disk {disk} does not exist')
                continue
            if self.zk.exists(schema.volume(pool, name)) or _in_ceph(storage, pool, name):
                problems.append(f'Volume "{name}" already exists in pool "{pool}"')
            source = vol.get("source_volume") or vol.get("volume_name")
            size = 0
            if source:
                try:
                    doc = st.get_volume(self.zk, pool, str(source))
                    size = int((doc.get("stats") or {}).get("size") or 0) if isinstance(doc, dict) else 0
                except PVCError:
                    problems.append(f'Source volume "{source}" of disk {disk} does not exist in pool '
                                    f'"{pool}"')
            if vol.get("disk_size_gb"):
                try:
                    size = max(size, int(float(vol["disk_size_gb"]) * GIB))
                except (TypeError, ValueError):
                    problems.append(f"Disk {disk}: size '{vol['disk_size_gb']}' is not a number")
            per_pool[pool] = per_pool.get(pool, 0) + size
            fs = vol.get("filesystem")
            if fs:
                tool = prov.FILESYSTEMS.get(fs, f"mkfs.{fs}")
                if shutil.which(tool) is None:
                    problems.append(f"Disk {disk}: filesystem {fs} needs {tool}, which is not installed on "
                                    f"node {self.ctx.node}")
        for pool, size in per_pool.items():
            try:
                st.check_space(size, st.pool_space(self.zk, storage, pool), pool, False,
                               field="storage template")
            except PVCError as exc:
                problems.append(exc.message)
            except StorageError as exc:
                problems.append(f'Cannot read the free space of pool "{pool}": {exc.message}')
        return problems

    # -- stages 3-8 --------------------------------------------------------------------------
    def _new_sandbox(self) -> Sandbox:
        assert self.docs is not None
        # The script gets the VMBuilder data and nothing else: no settings. Volume work goes
        # through the broker, which holds the ZooKeeper session and the Ceph credentials.
        cfg = self.ctx.settings.storage
        broker = Broker(self.vm_name, self.vm_data, self.log, zk=self.zk, storage=self._storage,
                        ceph=rbdmap.Ceph(cfg.ceph_config_file, cfg.ceph_keyring_file, cfg.client_user))
        return Sandbox(script=self.docs.script, script_name=self.docs.script_name, vm_name=self.vm_name,
                       vm_profile=self.vm_profile, vm_data=self.vm_data, vm_uuid=self.vm_uuid,
                       log=self.log, broker=broker, secrets=secret_paths(self.ctx.settings),
                       network=self.network_allowed(), limits=Limits.from_settings(self.ctx.settings.worker))

    def network_allowed(self) -> bool:
        assert self.docs is not None
        allowed = network_allowed(prov.arguments_dict(self.docs.arguments, "profile arguments"))
        if NETWORK_ARGUMENT in prov.arguments_dict(self.run_args, "arg"):
            self.log(f"the run's argument {NETWORK_ARGUMENT} is ignored: only the profile's arguments "
                     f"decide whether the script gets the network")
        if allowed:
            self.log(f'the script gets the node\'s network (profile argument {NETWORK_ARGUMENT}=yes)')
        return allowed

    def prepare_script(self) -> None:
        self.sandbox = self._new_sandbox()
        try:
            self.sandbox.start()
        except StageError as exc:
            raise TaskFailed(f"ProvisioningError: {exc.message}") from None

    def stage(self, name: str) -> Any:
        assert self.sandbox is not None
        return self.sandbox.run(name, STAGE_TIMEOUT, self.cancel_requested)

    def define(self, xml: Any) -> None:
        if not isinstance(xml, str) or not xml.strip():
            raise TaskFailed("ProvisioningError: the script's create() returned no libvirt XML")
        # The script's XML is held to this node's domain XML policy (D14) like an API define.
        policy = domainxml.DomainPolicy.from_settings(self.ctx.settings)
        try:
            domain = vms.parse_xml(xml, "create() XML", policy=policy)
        except PVCError as exc:
            raise TaskFailed(f"ProvisioningError: the script's create() returned invalid XML: "
                             f"{exc.message}") from None
        if domain.name != self.vm_name:
            raise TaskFailed(f'ProvisioningError: the XML from create() names the VM "{domain.name}", '
                             f'not "{self.vm_name}"')
        if not self.define_vm:
            self.log("Not defining the VM (define_vm is false)")
            return
        system = self.docs.system if self.docs else {}
        record = vms.define(
            self.zk, xml, limit=list(system.get("node_limit") or []),
            selector=system.get("node_selector") or None, autostart=bool(system.get("node_autostart")),
            migration_method=system.get("migration_method") or "none",
            migration_max_downtime=int(system.get("migration_max_downtime") or prov.DOWNTIME_DEFAULT),
            profile=self.vm_profile, initial_state="provision", domain=domain)
        self.defined = record.uuid
        self.revert.add(f'remove the definition of VM "{self.vm_name}"', self.undefine)
        self.log(f'Defined VM "{record.name}" ({record.uuid}) on node {record.node} in state provision')

    # -- undo and general cleanup ------------------------------------------------------------
    def run_script_cleanup(self) -> None:
        """The script's cleanup() after a failure; in a fresh process if the old one is gone."""
        sandbox = self.sandbox
        alive = sandbox is not None and sandbox.proc is not None and sandbox.proc.poll() is None
        try:
            if not alive:
                if sandbox is not None:
                    sandbox.close()
                self.log("running the script's cleanup() in a new script process")
                sandbox = self.sandbox = self._new_sandbox()
                sandbox.start()
            assert sandbox is not None
            self.log("Running script cleanup() step")
            sandbox.run("cleanup", min(STAGE_TIMEOUT, CLEANUP_TIMEOUT))
        except StageError as error:
            self.log(f"the script's cleanup() failed: {error.message}")

    def close_sandbox(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None

    def undefine(self) -> None:
        assert self.defined is not None
        try:
            vms.undefine(self.zk, self.defined, timeout=UNDEFINE_TIMEOUT)
            self.log(f'removed the definition of VM "{self.vm_name}"')
        except PVCError as exc:
            self.log(f'could not remove VM "{self.vm_name}": {exc.message}')

    def unmap_volumes(self) -> None:
        """Release this node's maps of the VM's volumes (a script may have left them mapped)."""
        for pool, name in vmdata.volume_names(self.vm_name, self.vm_data):
            try:
                if rbdmap.unmap_volume(pool, name):
                    self.log(f"unmapped {pool}/{name}")
            except rbdmap.RbdMapError as exc:
                self.log(f"could not unmap {pool}/{name}: {exc.message}")

    def discard_volumes(self) -> None:
        self.unmap_volumes()
        for pool, name in vmdata.volume_names(self.vm_name, self.vm_data):
            self.remove_volume(pool, name)

    def remove_volume(self, pool: str, name: str) -> None:
        try:
            storage = self._storage()
        except (StorageError, OSError) as exc:
            self.log(f"could not remove volume {pool}/{name}: {_text(exc)}")
            return
        try:
            if self.zk.exists(schema.volume(pool, name)):
                st.remove_volume(self.zk, storage, pool, name)
                self.log(f"removed volume {pool}/{name}")
            elif _in_ceph(storage, pool, name):
                storage.remove_volume(pool, name)
                self.log(f"removed volume {pool}/{name}")
        except (PVCError, StorageError) as exc:
            self.log(f"could not remove volume {pool}/{name}: {_text(exc)}")


def _in_ceph(storage: Storage, pool: str, name: str) -> bool:
    try:
        storage.volume_info(pool, name)
        return True
    except StorageNotFound:
        return False
    except StorageError:
        return False


@task_kind(PROVISIONER_CREATE)
def provisioner_create(ctx: TaskContext, vm_name: str, vm_profile: str, define_vm: bool = True,
                       start_vm: bool = True, script_run_args: list[str] | None = None) -> dict[str, Any]:
    """The task (arguments as pvc.core.taskkinds.ProvisionArgs, already validated)."""
    args = list(script_run_args or [])
    try:
        prov.arguments_dict(args, "arg")
    except PVCError as exc:
        raise TaskFailed(f"ProvisioningError: {exc.message}") from None
    return Job(ctx, vm_name, vm_profile, define_vm, start_vm, args).run()

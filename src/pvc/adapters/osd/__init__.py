"""This node's OSD daemons and their devices, and the fio storage benchmark (DESIGN D6, D11).

The only code in PVC that runs ceph-volume, ceph-osd, systemctl, LVM, sfdisk, wipefs and fio; always
with argument lists, never a shell, and never with a secret on a command line. Cluster-side steps
(`osd new`, CRUSH, purge) go through the Storage adapter; this package only does what must happen
on the node that owns the disk. Two ways of running OSDs (settings.storage.osd_service):

* ``systemd`` (real nodes, as upstream PVC; systemd.py): ceph-volume turns a whole block device
  into LVM-backed bluestore OSDs (`lvm zap --destroy`, `lvm batch --prepare`, `lvm activate`),
  systemd runs `ceph-osd@<id>`, optional bluestore DB volumes live in the `osd-db` volume group.
  Devices may be given as `detect:<name>:<size>:<index>` strings, resolved with lsscsi and
  `nvme list`.
* ``direct`` (the lab, hosts without systemd; direct.py): one bluestore OSD on a regular file (or
  a raw block device) without LVM. `file:<path>:<size>` creates a sparse file inside
  osd_data_directory (a relative path is taken under it; a path leading out of it, also through a
  symlink, is refused, and an existing file is never reused), a plain /dev/ path names a block device.

The decisions (argument lists, detect-string matching, partition-table and ceph-volume output
parsing in devices.py, DB sizes, fio jobs in bench.py) are pure functions, unit-tested in
tests/unit/test_osd_adapter.py.
"""

from typing import Any

from pvc.adapters.osd.base import CommandResult, OsdError, OsdService, Runner, run_command
from pvc.adapters.osd.bench import (
    BENCHMARK_TESTS,
    BENCHMARK_VOLUME,
    FioRunner,
    ResourceSampler,
    fio_argv,
    fio_engines,
    fio_env,
    parse_fio_output,
)
from pvc.adapters.osd.devices import (
    MIB,
    DetectSpec,
    DiskCandidate,
    FileDevice,
    PreparedOsd,
    db_size_bytes,
    device_class,
    parse_bytes,
    parse_detect,
    parse_file_device,
    parse_lsscsi,
    parse_lvm_list,
    parse_nvme_list,
    partition_table,
    pick_detect_device,
)
from pvc.adapters.osd.direct import (
    BLUESTORE_LABEL,
    LAUNCH_FILE,
    DirectOsd,
    DirectOsdService,
    holds_bluestore,
    pidfile_name,
)
from pvc.adapters.osd.systemd import (
    DB_VG,
    SystemdOsdService,
    activate_argv,
    batch_argv,
    blockdev_size_argv,
    db_lv_name,
    lvcreate_block_argv,
    lvcreate_db_argv,
    lvm_list_argv,
    lvremove_argv,
    new_db_argv,
    prepare_existing_argv,
    sfdisk_dump_argv,
    systemctl_argv,
    zap_argv,
)


def service_for(settings: Any) -> OsdService:
    """This node's OSD service as configured (settings: pvc.core.config.Settings)."""
    storage = settings.storage
    if storage.osd_service == "systemd":
        return SystemdOsdService()
    return DirectOsdService(
        node=settings.node_name, conffile=storage.ceph_config_file, data_root=storage.osd_data_directory,
        pid_dir=storage.osd_pid_directory or settings.path.dynamic_directory,
        log_dir=settings.path.system_log_directory, address=settings.hypervisor.migration_address)


__all__ = [
    "BENCHMARK_TESTS", "BENCHMARK_VOLUME", "BLUESTORE_LABEL", "DB_VG", "LAUNCH_FILE", "MIB", "CommandResult",
    "DetectSpec", "DirectOsd", "DirectOsdService", "DiskCandidate", "FileDevice", "FioRunner", "OsdError",
    "OsdService", "PreparedOsd", "ResourceSampler", "Runner", "SystemdOsdService", "activate_argv",
    "batch_argv", "blockdev_size_argv", "db_lv_name", "db_size_bytes", "device_class", "fio_argv",
    "fio_engines", "fio_env", "holds_bluestore", "lvcreate_block_argv", "lvcreate_db_argv", "lvm_list_argv",
    "lvremove_argv", "new_db_argv", "parse_bytes", "parse_detect", "parse_file_device", "parse_fio_output",
    "parse_lsscsi", "parse_lvm_list", "parse_nvme_list", "partition_table", "pick_detect_device",
    "pidfile_name", "prepare_existing_argv", "run_command", "service_for", "sfdisk_dump_argv",
    "systemctl_argv", "zap_argv",
]

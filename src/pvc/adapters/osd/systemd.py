"""OSDs on real nodes, as upstream PVC runs them: ceph-volume turns a whole block device into
LVM-backed bluestore OSDs, systemd runs `ceph-osd@<id>`, optional DB volumes live in `osd-db`."""

from __future__ import annotations

import contextlib
import time

from pvc.adapters.osd.base import CommandResult, OsdError, OsdService, Runner, check, run_command
from pvc.adapters.osd.devices import (
    MIB,
    PreparedOsd,
    parse_detect,
    parse_lsscsi,
    parse_lvm_list,
    parse_nvme_list,
    partition_table,
    pick_detect_device,
)

DB_VG = "osd-db"                      # the volume group holding external bluestore DB volumes


# systemd mode argv (ceph-volume/LVM/systemd on a real node)

def sfdisk_dump_argv(device: str) -> list[str]:
    return ["sfdisk", "--dump", device]


def zap_argv(device: str) -> list[str]:
    return ["ceph-volume", "lvm", "zap", "--destroy", device]


def batch_argv(device: str, count: int, crush_class: str) -> list[str]:
    split = ["--osds-per-device", str(count)] if count > 1 else []
    return ["ceph-volume", "lvm", "batch", "--yes", "--prepare", "--bluestore", *split,
            "--crush-device-class", crush_class, device]


def lvm_list_argv(device: str) -> list[str]:
    return ["ceph-volume", "lvm", "list", "--format", "json", device]


def activate_argv(osd_id: int, fsid: str) -> list[str]:
    return ["ceph-volume", "lvm", "activate", "--bluestore", str(osd_id), fsid]


def prepare_existing_argv(osd_id: int, fsid: str, data: str) -> list[str]:
    """Re-create an OSD with its old id and fsid on a new LV (replace keeps CRUSH and the id)."""
    return ["ceph-volume", "lvm", "prepare", "--bluestore", "--osd-id", str(osd_id), "--osd-fsid", fsid,
            "--data", data]


def db_lv_name(osd_id: int) -> str:
    return f"{DB_VG}/osd-{osd_id}"


def lvcreate_db_argv(osd_id: int, size: int) -> list[str]:
    return ["lvcreate", "-L", f"{size // MIB}M", "-n", f"osd-{osd_id}", "--yes", DB_VG]


def new_db_argv(osd_id: int, fsid: str, db_lv: str) -> list[str]:
    return ["ceph-volume", "lvm", "new-db", "--osd-id", str(osd_id), "--osd-fsid", fsid, "--target", db_lv]


def lvremove_argv(lv: str) -> list[str]:
    return ["lvremove", "--yes", "--force", lv]


def lvcreate_block_argv(vg: str, fsid: str, size_mb: int) -> list[str]:
    return ["lvcreate", "-L", f"{size_mb}M", "-n", f"osd-block-{fsid}", "--yes", vg]


def systemctl_argv(action: str, osd_id: int) -> list[str]:
    return ["systemctl", action, f"ceph-osd@{osd_id}"]


def blockdev_size_argv(path: str) -> list[str]:
    return ["blockdev", "--getsize64", path]


class SystemdOsdService(OsdService):
    """ceph-volume + LVM + systemd units, as on upstream PVC nodes."""

    mode = "systemd"

    def __init__(self, run: Runner = run_command, settle: float = 1.0) -> None:
        self.run = run
        self.settle = settle        # ceph-volume returns before systemd has the unit running

    def _do(self, argv: list[str], what: str, timeout: float = 600.0) -> CommandResult:
        return check(self.run(argv, timeout), what)

    # devices
    def resolve(self, device: str) -> str:
        """The block device a `detect:` string names (lsscsi first, then `nvme list`)."""
        spec = parse_detect(device)
        if spec is None:
            return device
        lsscsi = self.run(["lsscsi", "-s"], 60)
        found = pick_detect_device(spec, parse_lsscsi(lsscsi.stdout)) if lsscsi.returncode == 0 else None
        if found is None:
            with contextlib.suppress(OsdError):
                nvme = self.run(["nvme", "list", "--output-format", "json"], 60)
                if nvme.returncode == 0:
                    found = pick_detect_device(spec, parse_nvme_list(nvme.stdout))
        if found is None:
            raise OsdError(f"Failed to determine block device from detect string {device}")
        return found

    def check_unpartitioned(self, device: str) -> None:
        result = self.run(sfdisk_dump_argv(device), 60)
        label = partition_table(result.returncode, result.stdout)
        if label is not None:
            raise OsdError(f"Device {device} has a partition table ({label}) and is unsuitable for an OSD")

    def size_of(self, path: str) -> int:
        out = self._do(blockdev_size_argv(path), f"blockdev --getsize64 {path}").stdout.strip()
        try:
            return int(out)
        except ValueError:
            raise OsdError(f"blockdev --getsize64 {path} printed '{out}', not a size") from None

    def zap(self, device: str) -> None:
        self._do(zap_argv(device), f"ceph-volume lvm zap on {device}")

    def batch_prepare(self, device: str, count: int, crush_class: str) -> None:
        self._do(batch_argv(device, count, crush_class), f"ceph-volume lvm batch on {device}", timeout=1800)

    def list_osds(self, device: str) -> list[PreparedOsd]:
        result = self.run(lvm_list_argv(device), 120)
        if result.returncode != 0:
            return []
        return parse_lvm_list(result.stdout)

    # DB volumes
    def db_vg_exists(self) -> bool:
        return self.run(["vgs", DB_VG], 60).returncode == 0

    def create_db_vg(self, device: str) -> None:
        self._do(["wipefs", "--all", device], f"wipefs on {device}")
        self._do(["pvcreate", "--force", device], f"pvcreate on {device}")
        self._do(["vgcreate", "--force", DB_VG, device], f"vgcreate {DB_VG} on {device}")

    def remove_db_vg(self, device: str) -> None:
        self._do(["vgremove", "--yes", "--force", DB_VG], f"vgremove {DB_VG}")
        self._do(["pvremove", "--yes", "--force", device], f"pvremove {device}")

    def create_db_lv(self, osd_id: int, size: int) -> str:
        self._do(lvcreate_db_argv(osd_id, size), f"lvcreate for the DB of OSD {osd_id}")
        return db_lv_name(osd_id)

    def remove_db_lv(self, db_lv: str) -> None:
        self._do(lvremove_argv(db_lv), f"lvremove {db_lv}")

    def attach_db(self, osd_id: int, fsid: str, db_lv: str) -> None:
        self._do(new_db_argv(osd_id, fsid, db_lv), f"ceph-volume lvm new-db for OSD {osd_id}")

    # replacement of a whole block device, keeping ids (upstream's osd.replace)
    def make_block_vg(self, device: str, vg: str) -> None:
        self.zap(device)
        self._do(["pvcreate", device], f"pvcreate on {device}")
        self._do(["vgcreate", vg, device], f"vgcreate {vg} on {device}")

    def create_block_lv(self, vg: str, fsid: str, size_mb: int) -> str:
        self._do(lvcreate_block_argv(vg, fsid, size_mb), f"lvcreate of the block volume for OSD {fsid}")
        return f"{vg}/osd-block-{fsid}"

    def prepare_existing(self, osd_id: int, fsid: str, data: str) -> None:
        self._do(prepare_existing_argv(osd_id, fsid, data), f"ceph-volume lvm prepare for OSD {osd_id}",
                 timeout=1800)

    # daemons
    def activate(self, osd_id: int, fsid: str) -> None:
        """ceph-volume enables and starts ceph-osd@<id>; then the unit must be active."""
        self._do(activate_argv(osd_id, fsid), f"ceph-volume lvm activate for OSD {osd_id}")
        time.sleep(self.settle)
        if not self.running(osd_id):
            raise OsdError(f"OSD {osd_id} did not start (systemctl is-active ceph-osd@{osd_id})")

    def start(self, osd_id: int) -> None:
        self._do(systemctl_argv("start", osd_id), f"systemctl start ceph-osd@{osd_id}")

    def stop(self, osd_id: int, timeout: float = 60.0) -> None:
        self._do(systemctl_argv("stop", osd_id), f"systemctl stop ceph-osd@{osd_id}", timeout=timeout + 30)

    def running(self, osd_id: int) -> bool:
        return self.run(["systemctl", "is-active", "--quiet", f"ceph-osd@{osd_id}"], 30).returncode == 0

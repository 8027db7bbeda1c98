"""Attacks from a provisioning script on the node that runs it (issue #13): each runs through the
real sandbox (real namespaces, pivot_root, capabilities, seccomp, the worker's broker) and must
fail, with nothing changed on the host.

The hostile script runs as a profile's script through the real `provisioner.create` job (real
ZooKeeper, FakeStorage for Ceph), so the job's log shows what the script saw; a second test maps
a real block device (a loop device standing in for an RBD map) to check the broker's mounts.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from pvc.adapters.ceph.fake import FakeStorage
from pvc.cluster import tasks
from pvc.core.config import load_config
from pvc.core.zk import ZK
from pvc.worker.provisioner import broker as broker_mod
from pvc.worker.provisioner import limits as limits_mod
from pvc.worker.provisioner import runner
from pvc.worker.provisioner.broker import Broker, Refused, plan_mount
from pvc.worker.provisioner.limits import Limits, SandboxCgroup
from pvc.worker.provisioner.sandbox import Sandbox, StageError
from tests.conftest import API_TOKEN
from tests.integration.test_provisioner_jobs import cluster, profile, run

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root (namespaces)")

MARK = "98765"      # in the command lines of the processes the script leaves behind

HOSTILE = r'''
import ctypes, errno, json, os, socket, stat, subprocess, time
from pvcapid.vmbuilder import VMBuilder, open_zk

import seccomp

libc = ctypes.CDLL(None, use_errno=True)


class VMBuilderScript(VMBuilder):
    def result(self, name, escaped, detail=""):
        self.log_info(f"RESULT {name} {'ESCAPED' if escaped else 'BLOCKED'} {detail}".rstrip())

    def attempt(self, name, fn):
        try:
            detail = fn()
        except Exception as exc:
            self.result(name, False, f"{type(exc).__name__}: {exc}")
            return
        if isinstance(detail, tuple):
            self.result(name, *detail)
        else:
            self.result(name, True, str(detail)[:400])

    def setup(self):
        a = self.vm_data["script_arguments"]
        self.attempt("read-shadow", lambda: open("/etc/shadow").read())
        self.attempt("read-config", lambda: self.must_have(open(a["config"]).read()))
        self.attempt("read-keyring", lambda: self.must_have(open(a["keyring"]).read()))
        self.attempt("read-token-file", lambda: self.must_have(open(a["token"]).read()))
        self.attempt("read-etc-pvc", lambda: os.listdir("/etc/pvc"))
        self.attempt("read-ceph-dir", lambda: os.listdir("/etc/ceph"))
        self.attempt("read-root-home", lambda: self.must_have(os.listdir("/root")))
        self.attempt("settings", lambda: __import__("pvcapid.Daemon").Daemon.config.api)
        self.attempt("environment", lambda: self.must_have([k for k in os.environ if "TOKEN" in k
                                                             or "PVC_CONFIG" in k or "PASSWORD" in k]))
        self.attempt("libvirt-socket", lambda: os.listdir("/run/libvirt"))
        self.attempt("chroot-escape", lambda: self.chroot_escape(a["host_file"]))
        self.attempt("write-host-file", lambda: open(a["host_file"], "w").write("escaped"))
        self.attempt("core-pattern", lambda: open("/proc/sys/kernel/core_pattern", "w").write("|/bin/sh"))
        self.attempt("sysrq", lambda: open("/proc/sysrq-trigger", "w").write("h"))
        self.attempt("sys-write", lambda: open("/sys/kernel/uevent_helper", "w").write("/tmp/x"))
        self.attempt("fresh-proc-core-pattern", self.fresh_proc)
        self.attempt("fresh-sysfs", self.fresh_sysfs)
        self.attempt("unmount-proc-sys", lambda: self.run_ok("umount", "/proc/sys"))
        self.attempt("remount-usr-rw", lambda: self.run_ok("mount", "-o", "remount,rw", "/usr"))
        self.attempt("bind-proc-sys", self.bind_proc)
        self.attempt("cover-code", lambda: self.run_ok("mount", "--bind", "/tmp", "/usr/lib"))
        self.attempt("cover-dev", lambda: self.run_ok("mount", "-t", "tmpfs", "x", "/dev"))
        self.attempt("mknod-block", lambda: os.mknod("/tmp/sda", stat.S_IFBLK | 0o600, os.makedev(8, 0)))
        self.attempt("mknod-mem", lambda: os.mknod("/tmp/mem", stat.S_IFCHR | 0o600, os.makedev(1, 1)))
        self.attempt("mount-host-root", self.mount_host_root)
        self.attempt("host-block-devices", self.host_block_devices)
        self.attempt("finit_module", lambda: self.syscall("finit_module", os.open("/dev/null", os.O_RDONLY),
                                                           b"", 0))
        self.attempt("init_module", lambda: self.syscall("init_module", b"\0" * 64, 64, b""))
        self.attempt("kexec_load", lambda: self.syscall("kexec_load", 0, 0, 0, 0))
        self.attempt("reboot", lambda: self.syscall("reboot", 0xfee1dead, 672274793, 0xCDEF0123, 0))
        self.attempt("bpf", lambda: self.syscall("bpf", 0, 0, 0))
        self.attempt("keyctl", lambda: self.syscall("keyctl", 0, 0, 0, 0))
        self.attempt("user-namespace", lambda: self.syscall("unshare", 0x10000000))
        self.attempt("setns", lambda: self.syscall("setns", os.open("/proc/self/ns/mnt", os.O_RDONLY), 0))
        self.attempt("ptrace-host", lambda: self.syscall("ptrace", 16, int(a["host_pid"]), 0, 0))
        self.attempt("ptrace-own-child", self.ptrace_child)
        self.attempt("host-processes", self.host_processes)
        self.attempt("zookeeper", lambda: socket.create_connection(("127.0.0.1", int(a["zk_port"])), 3))
        self.attempt("zookeeper-session", self.zookeeper_session)
        self.attempt("foreign-volume", self.foreign_volume)
        self.attempt("capabilities", self.capabilities)
        self.attempt("inherited-channels", self.inherited_channels)

    # -- attacks -----------------------------------------------------------------------------
    def must_have(self, value):
        return (bool(value), repr(value)[:200])

    def run_ok(self, *cmd):
        done = subprocess.run(list(cmd), capture_output=True, text=True)
        return (done.returncode == 0, (done.stderr or done.stdout).strip())

    def syscall(self, name, *args):
        libc.syscall.restype = ctypes.c_long
        rc = libc.syscall(seccomp.resolve_syscall(seccomp.Arch.NATIVE, name), *args)
        err = ctypes.get_errno()
        return (rc >= 0, f"rc={rc} {errno.errorcode.get(err, err)}")

    def chroot_escape(self, host_file):
        real_root = os.open("/", os.O_RDONLY)
        os.makedirs("/tmp/jail", exist_ok=True)
        os.chroot("/tmp/jail")
        os.fchdir(real_root)
        for _ in range(64):
            os.chdir("..")
        os.chroot(".")
        seen = sorted(os.listdir("/"))
        try:
            with open(host_file, "w") as f:
                f.write("escaped")
            wrote = True
        except OSError as exc:
            wrote = f"no: {exc}"
        escaped = wrote is True or os.path.exists("/etc/shadow")
        return (escaped, f"root={seen} wrote={wrote}")

    def fresh_proc(self):
        os.makedirs("/tmp/p", exist_ok=True)
        done = subprocess.run(["mount", "-t", "proc", "proc", "/tmp/p"], capture_output=True, text=True)
        if done.returncode != 0:
            return (False, done.stderr.strip())
        try:
            with open("/tmp/p/sys/kernel/core_pattern", "w") as f:
                f.write("|/bin/sh")
            return (True, "wrote core_pattern")
        except OSError as exc:
            return (False, f"mounted, but {exc}")

    def bind_proc(self):
        os.makedirs("/tmp/bp", exist_ok=True)
        done = subprocess.run(["mount", "--bind", "/proc", "/tmp/bp"], capture_output=True, text=True)
        if done.returncode != 0:
            return (False, done.stderr.strip())
        rw = self.run_ok("mount", "-o", "remount,bind,rw", "/tmp/bp/sys")
        try:
            with open("/tmp/bp/sys/kernel/core_pattern", "w") as f:
                f.write("|/bin/sh")
            return (True, "wrote core_pattern through a bind of /proc")
        except OSError as exc:
            return (False, f"bound, but {exc}; remount rw: {rw}")

    def fresh_sysfs(self):
        os.makedirs("/tmp/s", exist_ok=True)
        done = subprocess.run(["mount", "-t", "sysfs", "sysfs", "/tmp/s"], capture_output=True, text=True)
        if done.returncode != 0:
            return (False, done.stderr.strip())
        try:
            with open("/tmp/s/kernel/uevent_helper", "w") as f:
                f.write("/tmp/x")
            return (True, "wrote uevent_helper")
        except OSError as exc:
            return (False, f"mounted, but {exc}")

    def mount_host_root(self):
        os.makedirs("/tmp/host", exist_ok=True)
        tries = []
        for cmd in (["mount", "--bind", "/proc/1/root/..", "/tmp/host"],
                    ["mount", "-t", "ext4", "/dev/vda", "/tmp/host"],
                    ["mount", "-t", "devtmpfs", "devtmpfs", "/tmp/host"]):
            done = subprocess.run(cmd, capture_output=True, text=True)
            tries.append(f"{cmd[1:3]}: {done.returncode} {done.stderr.strip()}")
            subprocess.run(["umount", "/tmp/host"], capture_output=True)
        subprocess.run(["mount", "--bind", "/", "/tmp/host"], capture_output=True)
        escaped = os.path.exists("/tmp/host/etc/shadow") or os.path.exists("/tmp/host/etc/pvc")
        return (escaped, "; ".join(tries))

    def host_block_devices(self):
        found = []
        os.makedirs("/tmp/devs", exist_ok=True)
        subprocess.run(["mount", "-t", "devtmpfs", "devtmpfs", "/tmp/devs"], capture_output=True)
        for where in ("/dev", "/tmp/devs"):
            for name in os.listdir(where):
                try:
                    if stat.S_ISBLK(os.stat(f"{where}/{name}").st_mode):
                        found.append(f"{where}/{name}")
                except OSError:
                    pass
        return (bool(found), repr(found))

    def ptrace_child(self):
        child = subprocess.Popen(["sleep", "30"])
        try:
            return self.syscall("ptrace", 16, child.pid, 0, 0)
        finally:
            child.kill()
            child.wait()

    def host_processes(self):
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        return (len(pids) > 20 or int(self.vm_data["script_arguments"]["host_pid"]) in pids, repr(pids))

    def zookeeper_session(self):
        with open_zk() as zk:
            return zk.exists("/")

    def foreign_volume(self):
        import daemon_lib.ceph as pvc_ceph
        with open_zk() as zk:
            ok, message = pvc_ceph.add_volume(zk, "vms", "othervm_sda", "1G")
            mine, mine_message = pvc_ceph.add_volume(zk, "vms", f"{self.vm_name}_sda", "1G")
        self.log_info(f"own volume: {mine} {mine_message}")
        return (ok or not mine, message)

    def inherited_channels(self):
        done = subprocess.run(["sh", "-c", "ls /proc/$$/fd"], capture_output=True, text=True, close_fds=False)
        fds = sorted(int(fd) for fd in done.stdout.split())
        return (fds != [0, 1, 2], repr(fds))

    def capabilities(self):
        with open("/proc/self/status") as f:
            caps = {line.split(":")[0]: int(line.split()[1], 16) for line in f if line.startswith("Cap")}
        sys_admin = 1 << 21
        return (bool(caps["CapEff"] & sys_admin or caps["CapBnd"] & sys_admin), repr(caps))

    # -- outliving the time limit ------------------------------------------------------------
    def create(self):
        return f"""<domain type='kvm'><name>{self.vm_name}</name><uuid>{self.vm_uuid}</uuid>
<memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>
<devices><disk type='network' device='disk'><source protocol='rbd' name='vms/{self.vm_name}_sda'/>
<target dev='sda' bus='scsi'/></disk></devices></domain>"""

    def install(self):
        subprocess.Popen(["sleep", "MARK"], start_new_session=True)
        subprocess.Popen(["sh", "-c", "(setsid sleep MARK.5 &) ; exit 0"])
        self.log_info("install: daemons started, now hanging")
        time.sleep(3600)

    def cleanup(self):
        self.log_info("hostile cleanup ran")
'''.replace("MARK", MARK)

ATTACKS = ("read-shadow", "read-config", "read-keyring", "read-token-file", "read-etc-pvc", "read-ceph-dir",
           "read-root-home", "settings", "environment", "libvirt-socket", "chroot-escape", "write-host-file",
           "core-pattern", "sysrq", "sys-write", "fresh-proc-core-pattern", "bind-proc-sys", "fresh-sysfs",
           "unmount-proc-sys",
           "remount-usr-rw", "cover-code", "cover-dev", "mknod-block", "mknod-mem", "mount-host-root",
           "host-block-devices",
           "finit_module", "init_module", "kexec_load", "reboot", "bpf", "keyctl", "user-namespace", "setns",
           "ptrace-host", "ptrace-own-child", "host-processes", "zookeeper", "zookeeper-session",
           "foreign-volume", "capabilities", "inherited-channels")


def leftovers() -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"sleep {MARK}" in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


@pytest.fixture
def secrets(config_factory: Any) -> Any:
    """Settings whose configuration file, keyring and token file live where a sandbox bind could
    show them (under /usr/local, which the sandbox sees read-only): they must be masked."""
    tag = f"pvc-sandbox-test-{os.getpid()}"
    keyring = Path(f"/usr/local/share/{tag}.keyring")
    token = Path(f"/usr/local/share/{tag}.token")
    config = Path(f"/usr/local/etc/{tag}.conf")
    made = []
    try:
        for path, text in ((keyring, "[client.admin]\n\tkey = AQSECRETKEYRINGCONTENT==\n"),
                           (token, "TOKENFILESECRETCONTENT\n")):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            made.append(path)
        source = Path(config_factory(storage={"ceph_keyring_file": str(keyring)},
                                     api={"token_file": str(token),
                                          "listen": {"address": "127.0.0.1", "port": 1},
                                          "authentication": {"enabled": True, "secret_key": "SECRETKEYVALUE"},
                                          "token": [{"description": "t", "token": API_TOKEN}],
                                          "ssl": {"enabled": False}}))
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(source.read_text())
        made.append(config)
        yield load_config(str(config)), {"config": str(config), "keyring": str(keyring), "token": str(token)}
    finally:
        for path in made:
            path.unlink(missing_ok=True)


def test_hostile_script_escapes_nothing(zk: ZK, secrets: Any, zk_server: Any,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    settings, paths = secrets
    fake = FakeStorage()
    monkeypatch.setattr(runner, "storage_for", lambda _settings: fake)
    monkeypatch.setattr(runner, "STAGE_TIMEOUT", 8.0)
    cluster(zk, fake)
    host_file = Path(f"/etc/pvc-sandbox-escape-{os.getpid()}")
    arguments = [f"{k}={v}" for k, v in paths.items()] + [
        f"host_file={host_file}", f"host_pid={os.getpid()}", f"zk_port={zk_server.address.rsplit(':', 1)[1]}"]
    profile(zk, HOSTILE, storage=True, arguments=arguments)
    try:
        # a run's arguments cannot give the script the network (only the profile's can)
        record = run(zk, settings, script_run_args=["sandbox_network=yes"])
    finally:
        left = leftovers()
        escaped_file = host_file.exists()
        host_file.unlink(missing_ok=True)
    log = "\n".join(tasks.task_log(zk, record.id))
    results = {line.split("RESULT ", 1)[1].split()[0]: line for line in log.splitlines() if "RESULT " in line}
    assert set(ATTACKS) <= set(results), f"missing: {set(ATTACKS) - set(results)}\n{log}"
    escaped = [line for line in results.values() if " ESCAPED" in line]
    assert not escaped, "\n".join(escaped)
    # nothing changed on the host, and no secret reached the job's log
    assert not escaped_file
    assert not left, left
    for secret in ("AQSECRETKEYRINGCONTENT", "TOKENFILESECRETCONTENT", API_TOKEN, "SECRETKEYVALUE"):
        assert secret not in log
    assert Path("/proc/sys/kernel/core_pattern").read_text().strip() != "|/bin/sh"
    # the job says what happened: its own volume was allowed, a foreign one refused; the hung
    # install() hit its time limit and took the processes it had left behind with it
    assert "the run's argument sandbox_network is ignored" in log
    assert "own volume: True" in log
    assert "refused: creation of volume vms/othervm_sda refused" in log
    assert record.state == "FAILURE"
    assert "install() did not finish within 8 s" in record.status, record.status
    assert "processes it left running were killed" in log, log
    assert "hostile cleanup ran" in log
    assert "sandbox: refused: unmounting /proc/sys" in log
    assert "sandbox: refused: creating character device 1:1" in log


def test_mount_decisions() -> None:
    c = broker_mod.confine
    assert plan_mount("/dev/rbd0", "ext4", 0, None).flags & c.MS_NODEV
    assert plan_mount("proc", "proc", 0, None).pseudo == "proc"
    assert plan_mount("x", "devtmpfs", 0, None).pseudo == "dev"
    assert plan_mount(None, None, c.MS_REMOUNT | c.MS_RDONLY, None).flags & c.MS_BIND
    for fstype in ("binfmt_misc", "debugfs", "securityfs", "bpf", "cgroup2", "overlay", "fuse", "configfs"):
        with pytest.raises(Refused, match=fstype):
            plan_mount("x", fstype, 0, None)
    with pytest.raises(Refused, match="panic"):
        plan_mount("/dev/rbd0", "ext4", 0, "errors=panic")
    with pytest.raises(Refused, match="moving"):
        plan_mount("/a", None, c.MS_MOVE, None)


MAPPED = r'''
import os, subprocess
import daemon_lib.ceph as pvc_ceph
from pvcapid.vmbuilder import VMBuilder, open_zk

def sh(*cmd):
    done = subprocess.run(list(cmd), capture_output=True, text=True)
    return f"{done.returncode} {(done.stderr or done.stdout).strip()}"

class VMBuilderScript(VMBuilder):
    def setup(self):
        with open_zk() as zk:
            ok, device = pvc_ceph.map_volume(zk, "vms", f"{self.vm_name}_sda")
            link = os.path.realpath(f"/dev/rbd/vms/{self.vm_name}_sda")
            self.log_info(f"map: {ok} {device} link={link}")
            self.log_info("other: " + repr(pvc_ceph.map_volume(zk, "vms", "othervm_sda")))
        self.log_info("mkfs: " + sh("mkfs.ext4", "-q", "-F", device))
        os.makedirs("/tmp/target/boot", exist_ok=True)
        self.log_info("mount: " + sh("mount", device, "/tmp/target"))
        with open("/tmp/target/hello", "w") as f:
            f.write("installed")
        os.makedirs("/tmp/target/proc", exist_ok=True)
        self.log_info("bind-proc: " + sh("mount", "-t", "proc", "proc", "/tmp/target/proc"))
        core = "echo x > /tmp/target/proc/sys/kernel/core_pattern"
        self.log_info("target-core-pattern: " + sh("sh", "-c", core))
        # debootstrap-style: a device node made in the target (a nodev mount) is usable in a chroot
        for d in ("bin", "dev"):
            os.makedirs(f"/tmp/target/{d}", exist_ok=True)
        self.log_info("cp: " + sh("cp", "/bin/busybox", "/tmp/target/bin/busybox"))
        self.log_info("mknod-null: " + sh("mknod", "-m", "666", "/tmp/target/dev/null", "c", "1", "3"))
        chrooted = "echo hi > /dev/null && echo devnull-ok"
        self.log_info("chroot: " + sh("chroot", "/tmp/target", "/bin/busybox", "sh", "-c", chrooted))
        self.log_info("umount-proc: " + sh("umount", "/tmp/target/proc"))
        self.log_info("umount: " + sh("umount", "/tmp/target"))
        with open_zk() as zk:
            self.log_info("unmap: " + repr(pvc_ceph.unmap_volume(zk, "vms", f"{self.vm_name}_sda")))
        self.log_info(f"after-unmap: {os.path.exists(device)}")
'''


def test_mapped_volume_is_usable_and_only_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mapped volume (here a loop device) appears in the sandbox's /dev, can be formatted,
    mounted (through the worker), written and unmounted; another VM's volume cannot be mapped."""
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    try:
        device = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no loop devices here: {exc}")
    maps: list[str] = []
    monkeypatch.setattr("pvc.adapters.rbdmap.map_volume",
                        lambda pool, name, ceph=None: maps.append(name) or device)
    monkeypatch.setattr("pvc.adapters.rbdmap.unmap_volume", lambda pool, name: True)
    vm_data = {"volumes": [{"pool": "vms", "disk_id": "sda", "disk_size_gb": 1}], "script_arguments": {}}
    lines: list[str] = []
    try:
        broker = Broker("web3", vm_data, lines.append)
        with Sandbox(script=MAPPED, script_name="mapped", vm_name="web3", vm_profile="p", vm_data=vm_data,
                     vm_uuid="", log=lines.append, broker=broker) as box:
            box.start()
            box.run("setup", 60)
    except StageError as exc:
        pytest.fail(f"{exc.message}\n{exc.detail}\n" + "\n".join(lines))
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
    text = "\n".join(lines)
    assert f"map: True {device} link={device}" in text, text
    assert maps == ["web3_sda"]
    assert "other: (False, 'ERROR: mapping of volume vms/othervm_sda refused" in text
    assert "mkfs: 0" in text and "mount: 0" in text and "bind-proc: 0" in text, text
    assert "target-core-pattern: 2" in text or "target-core-pattern: 1" in text, text
    assert "mknod-null: 0" in text and "chroot: 0 devnull-ok" in text, text
    assert "umount-proc: 0" in text and "umount: 0" in text, text
    assert "after-unmap: False" in text
    # what the script wrote went to the device
    check = subprocess.run(["debugfs", "-R", "cat /hello", str(image)], capture_output=True, text=True)
    assert check.stdout.strip() == "installed", check.stderr


def test_no_settings_are_handed_over() -> None:
    """Nothing of the settings reaches the sandbox: the Sandbox takes no settings at all."""
    import inspect

    assert "settings" not in inspect.signature(Sandbox).parameters
    source = inspect.getsource(runner.Job._new_sandbox)
    assert "model_dump" not in source and "settings=" not in source



def test_install_example_runs_in_the_sandbox(zk: ZK, config_factory: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/3-install.py (upstream's calling conventions: open_zk(config), daemon_lib.ceph)
    provisions through the sandbox: its volume is created by the worker, mapping is unavailable
    here so it builds an ext4 image and the worker imports it."""
    from pvc.adapters import rbdmap
    from pvc.core import schema

    fake = FakeStorage()
    imported: dict[str, bytes | int] = {}

    def write_volume(pool: str, name: str, source: Any, chunk: int = 4 << 20) -> int:
        head, total = b"", 0
        while block := source.read(chunk):
            head = head or block[:4096]
            total += len(block)
        imported.update(name=name.encode(), head=head, total=total)
        return total

    def no_map(pool: str, name: str, ceph: Any = None) -> str:
        raise rbdmap.RbdMapError("no rbd, nbd or fuse mapping on this test machine")

    monkeypatch.setattr(fake, "write_volume", write_volume)
    monkeypatch.setattr(rbdmap, "map_volume", no_map)
    monkeypatch.setattr(runner, "storage_for", lambda _settings: fake)
    cluster(zk, fake)
    profile(zk, (Path(runner.__file__).parent / "examples" / "3-install.py").read_text(), storage=True,
            arguments=[])    # rootfs=lab-guest, as the lab test uses
    zk.put(schema.storage_template("disks"), {"id": 3, "name": "disks", "ova": None, "disks": [
        {"id": 9, "disk_id": "sda", "pool": "vms", "source_volume": None, "disk_size_gb": 1,
         "filesystem": "ext4", "filesystem_args": [], "mountpoint": "/"}]})
    record = run(zk, load_config(str(config_factory())), start_vm=False)
    log = "\n".join(tasks.task_log(zk, record.id))
    assert record.state == "SUCCESS", (record.status, log)
    assert 'Created RBD volume "web2_sda"' in log and "building filesystem images instead" in log
    assert imported["name"] == b"web2_sda" and imported["total"] == 1 << 30
    assert imported["head"] and imported["head"][1080:1082] == b"\x53\xef"     # an ext4 superblock


def test_mount_options_naming_other_devices_are_refused() -> None:
    for data in ("journal_dev=2048", "journal_path=/dev/sda1", "errors=panic", "logdev=/dev/sdb"):
        with pytest.raises(Refused, match="option"):
            plan_mount("/dev/rbd0", "ext4", 0, data)
    assert plan_mount("/dev/rbd0", "ext4", 0, "noatime,errors=remount-ro").kind == "block"


NETWORK = r'''
import os, socket
from pvcapid.vmbuilder import VMBuilder

class VMBuilderScript(VMBuilder):
    def setup(self):
        try:
            socket.create_connection(("127.0.0.1", int(self.vm_data["port"])), 3).close()
            reached = "reached"
        except OSError as exc:
            reached = f"unreachable ({exc.strerror})"
        interfaces = sorted(name for _index, name in socket.if_nameindex())
        self.log_info(f"port {reached}; interfaces={interfaces}; resolv={os.path.exists('/etc/resolv.conf')}")
'''


@pytest.mark.parametrize("allowed", [False, True])
def test_network_only_when_the_profile_allows_it(allowed: bool) -> None:
    """By default the script's network namespace has only lo: a service listening on the host's
    loopback is out of reach. The profile argument sandbox_network=yes shares the node's network."""
    import socket

    arguments = {"sandbox_network": "yes"} if allowed else {}
    assert runner.network_allowed(arguments) is allowed
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        lines: list[str] = []
        vm_data = {"port": listener.getsockname()[1], "script_arguments": arguments}
        with Sandbox(script=NETWORK, script_name="net", vm_name="web4", vm_profile="p", vm_data=vm_data,
                     vm_uuid="", log=lines.append, network=runner.network_allowed(arguments)) as box:
            box.start()
            box.run("setup", 30)
    text = "\n".join(lines)
    if allowed:
        assert "port reached" in text and "resolv=True" in text, text
    else:
        assert "port unreachable (Connection refused); interfaces=['lo']; resolv=False" in text, text


DEBOOTSTRAP = r'''
import os
from pvcapid.vmbuilder import VMBuilder, ProvisioningError, open_zk, chroot
from pvcapid.Daemon import config
import daemon_lib.common as pvc_common
import daemon_lib.ceph as pvc_ceph

TARGET = "/tmp/target"


class VMBuilderScript(VMBuilder):
    # upstream's 3-debootstrap.py, cut to its system calls: map, mkfs, mount, debootstrap, bind
    # mounts, chroot'ed apt-get and useradd, blkid, unmount, unmap
    def prepare(self):
        volume = self.vm_data["volumes"][0]
        dst = f"{volume['pool']}/{self.vm_name}_{volume['disk_id']}"
        with open_zk(config) as zkhandler:
            ok, message = pvc_ceph.map_volume(zkhandler, volume["pool"], dst.split("/")[1])
        if not ok:
            raise ProvisioningError(message)
        for cmd in (f"mkfs.ext4 -q /dev/rbd/{dst}", f"mount /dev/rbd/{dst} {TARGET}"):
            rc, _out, err = pvc_common.run_os_command(cmd)
            if rc:
                raise ProvisioningError(f"{cmd}: {err}")

    def install(self):
        mirror = self.vm_data["script_arguments"]["deb_mirror"]
        rc = os.system(f"debootstrap --variant=minbase bookworm {TARGET} {mirror} > /tmp/db.log 2>&1")
        self.log_info(f"debootstrap: {rc}")
        for sub in ("dev", "sys", "proc"):
            os.system(f"mount --bind /{sub} {TARGET}/{sub}")
        with chroot(TARGET):
            self.log_info("null: " + str(os.system("echo hi > /dev/null")))
            self.log_info("apt: " + str(os.system("apt-get -qq update >/dev/null 2>&1 && "
                                                  "apt-get -qq -y install less >/dev/null 2>&1")))
            self.log_info("useradd: " + str(os.system("useradd -m tester")))

    def cleanup(self):
        for sub in ("dev", "sys", "proc", ""):
            rc, _out, err = pvc_common.run_os_command(f"umount {TARGET}/{sub}")
            self.log_info(f"umount /{sub}: {rc} {err.strip()}")
        with open_zk(config) as zkhandler:
            self.log_info(str(pvc_ceph.unmap_volume(zkhandler, "vms", f"{self.vm_name}_sda")))
'''
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def _mirror_reachable() -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(f"{DEBIAN_MIRROR}/dists/bookworm/Release", timeout=5).close()
        return True
    except OSError:
        return False


def test_upstream_debootstrap_flow_with_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Upstream's debootstrap example's steps, with the network opt-in, through the sandbox:
    debootstrap from a mirror, bind mounts, a chroot'ed package install, unmount, unmap."""
    import shutil

    if shutil.which("debootstrap") is None or not _mirror_reachable():
        pytest.skip("needs debootstrap and a reachable Debian mirror")
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(3 << 30)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True,
                            check=True).stdout.strip()
    monkeypatch.setattr("pvc.adapters.rbdmap.map_volume", lambda pool, name, ceph=None: device)
    monkeypatch.setattr("pvc.adapters.rbdmap.unmap_volume", lambda pool, name: True)
    vm_data = {"volumes": [{"pool": "vms", "disk_id": "sda", "disk_size_gb": 3}],
               "script_arguments": {"sandbox_network": "yes", "deb_mirror": DEBIAN_MIRROR}}
    lines: list[str] = []
    try:
        with Sandbox(script=DEBOOTSTRAP, script_name="deb", vm_name="deb1", vm_profile="p", vm_data=vm_data,
                     vm_uuid="", log=lines.append, broker=Broker("deb1", vm_data, lines.append),
                     network=runner.network_allowed(vm_data["script_arguments"])) as box:
            box.start()
            for stage in ("prepare", "install", "cleanup"):
                box.run(stage, 1200)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
    text = "\n".join(lines)
    for expected in ("debootstrap: 0", "null: 0", "apt: 0", "useradd: 0", "umount /proc: 0", "umount /: 0",
                     "(True, 'Unmapped RBD volume"):
        assert expected in text, text


def test_ova_example_converts_between_brokered_devices(zk: ZK, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/4-ova.py in the sandbox: the worker creates the VM's volume and maps it and the
    OVA's disk (read-only); qemu-img converts from one device to the other inside the sandbox."""
    from pvc.core import schema

    fake = FakeStorage()
    cluster(zk, fake)
    zk.put(schema.volume("vms", "ova_tiny_sda"), {"name": "ova_tiny_sda", "stats": {}})
    source_image, target_image = tmp_path / "ova.img", tmp_path / "vm.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(tmp_path / "guest.raw"), "8M"], check=True)
    with open(tmp_path / "guest.raw", "r+b") as f:
        f.write(b"GUEST-DISK-CONTENT")
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", str(tmp_path / "guest.raw"),
                    str(source_image)], check=True)
    with open(source_image, "r+b") as f:
        f.truncate(max(os.path.getsize(source_image), 1 << 20))
    with open(target_image, "wb") as f:
        f.truncate(1 << 30)
    devices = {}
    try:
        for key, image in (("ova_tiny_sda", source_image), ("web5_sda", target_image)):
            devices[key] = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True,
                                          text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        for dev in devices.values():
            subprocess.run(["losetup", "-d", dev], check=False)
        pytest.skip(f"no loop devices here: {exc}")
    monkeypatch.setattr("pvc.adapters.rbdmap.map_volume", lambda pool, name, ceph=None: devices[name])
    monkeypatch.setattr("pvc.adapters.rbdmap.unmap_volume", lambda pool, name: True)
    vm_data = {"volumes": [{"pool": "vms", "disk_id": "sda", "disk_size_gb": 1, "volume_name": "ova_tiny_sda",
                            "volume_format": "vmdk"}],
               "ova_details": {"name": "tiny"}, "script_arguments": {}}
    lines: list[str] = []
    try:
        broker = Broker("web5", vm_data, lines.append, zk=zk, storage=lambda: fake)
        with Sandbox(script=(Path(runner.__file__).parent / "examples" / "4-ova.py").read_text(),
                     script_name="ova", vm_name="web5", vm_profile="p", vm_data=vm_data, vm_uuid="",
                     log=lines.append, broker=broker) as box:
            box.start()
            for stage in ("setup", "prepare", "cleanup"):
                box.run(stage, 120)
    except StageError as exc:
        pytest.fail(f"{exc.message}\n{exc.detail}\n" + "\n".join(lines))
    finally:
        ro_after = [Path(f"/sys/block/{os.path.basename(devices['ova_tiny_sda'])}/ro").read_text().strip()]
        for dev in devices.values():
            subprocess.run(["losetup", "-d", dev], check=False)
    text = "\n".join(lines)
    assert "Converted ova_tiny_sda to raw web5_sda" in text, text
    assert "(read-only)" in text
    # the read-only flag was for this job only: a reused device (loop, nbd) is writable again
    assert ro_after == ["0"], ro_after
    with open(target_image, "rb") as f:
        assert f.read(18) == b"GUEST-DISK-CONTENT"


def test_the_broker_helper_imports_nothing() -> None:
    """The helper that acts inside the sandbox's view never imports a module (a script could have
    planted one where a lazy import would look)."""
    def act(_h: Any) -> str:
        import xml.dom.minidom  # noqa: F401 - the attempt is the test

        return "imported"

    with pytest.raises(Refused, match="no imports inside the sandbox helper"):
        broker_mod.run_in_sandbox(os.getpid(), act)


# ============================================================================ resource limits
# Each sandbox runs in its own cgroup (pvc.worker.provisioner.limits): a fork bomb, a memory hog
# or a full scratch file system stops at the sandbox's limits, not at the node's.

SMALL = Limits(pids_max=48, memory_max=192 << 20, tmp_size=24 << 20, cpu_weight=20)


def _cgroup_or_skip(box: Sandbox) -> SandboxCgroup:
    if box.cgroup is None:
        pytest.skip("no usable cgroup (v2 with pids and memory, or v1 hierarchies) on this machine")
    return box.cgroup


FORK_BOMB = r'''
import subprocess, time
from pvcapid.vmbuilder import VMBuilder


class VMBuilderScript(VMBuilder):
    def setup(self):
        subprocess.Popen(["bash", "-c", "bomb() { bomb | bomb & }; bomb"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        time.sleep(3600)
'''


def test_fork_bomb_is_contained_by_the_pids_limit() -> None:
    """A fork bomb in a stage: the sandbox's processes never exceed pids.max (read from the
    cgroup while it runs), forks beyond it fail (EAGAIN, counted and reported in the job's log),
    the stage ends at its time limit, the host still forks, and the cgroup is gone afterwards."""
    lines: list[str] = []
    peak = 0
    with Sandbox(script=FORK_BOMB, script_name="bomb", vm_name="bomb1", vm_profile="p", vm_data={},
                 vm_uuid="", log=lines.append, limits=SMALL) as box:
        box.start()
        group = _cgroup_or_skip(box)
        dirs = list(group.dirs.values())
        done: list[BaseException] = []

        def stage() -> None:
            try:
                box.run("setup", 6)
            except BaseException as exc:
                done.append(exc)

        runner_thread = threading.Thread(target=stage)
        runner_thread.start()
        while runner_thread.is_alive():
            peak = max(peak, group.pids_current())
            # the host is not starved while the bomb runs
            assert subprocess.run(["true"]).returncode == 0
            runner_thread.join(0.05)
        refused = group.forks_refused()
        kernel_peak = group.pids_peak()
    assert len(done) == 1 and isinstance(done[0], StageError), done
    error = done[0]
    assert isinstance(error, StageError)
    assert error.kind == "timeout", error.message
    assert 0 < peak <= SMALL.pids_max, peak
    assert kernel_peak is None or kernel_peak <= SMALL.pids_max, kernel_peak
    assert refused > 0
    text = "\n".join(lines)
    assert "reached its process limit (48)" in text and "(EAGAIN)" in text, text
    assert "reached its process limit" in error.message
    assert subprocess.run(["true"]).returncode == 0
    assert not [d for d in dirs if os.path.exists(d)], "the sandbox's cgroup was not removed"


MEMORY_HOG = r'''
import subprocess
from pvcapid.vmbuilder import VMBuilder

HOG = "x = []\nwhile True:\n    x.append(b'x' * (8 << 20))\n"


class VMBuilderScript(VMBuilder):
    def setup(self):
        self.log_info(f"hog in a command: exit {subprocess.run(['python3', '-c', HOG]).returncode}")

    def create(self):
        return f"""<domain type='kvm'><name>{self.vm_name}</name><uuid>{self.vm_uuid}</uuid>
<memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>
<devices><disk type='network' device='disk'><source protocol='rbd' name='vms/{self.vm_name}_sda'/>
<target dev='sda' bus='scsi'/></disk></devices></domain>"""

    def install(self):
        hoard = []
        while True:
            hoard.append(b"x" * (8 << 20))
'''


def test_memory_hog_is_killed_inside_the_sandbox(zk: ZK, config_factory: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A memory hog meets the sandbox's memory.max, not the node's: the kernel's OOM killer ends
    it inside the sandbox's cgroup, the job's log and status say so, and the worker (this test
    process) carries on. First a command the stage runs (the stage goes on), then the script's
    own process (the job fails, cleanup() runs in a fresh sandbox)."""
    fake = FakeStorage()
    monkeypatch.setattr(runner, "storage_for", lambda _settings: fake)
    monkeypatch.setattr(runner, "STAGE_TIMEOUT", 60.0)
    cluster(zk, fake)
    profile(zk, MEMORY_HOG, storage=True)
    settings = load_config(str(config_factory(worker={"sandbox_memory_max": "192M"})))
    created: list[Sandbox] = []
    real_new = runner.Job._new_sandbox

    def spy(self: Any) -> Sandbox:
        box = real_new(self)
        created.append(box)
        return box

    monkeypatch.setattr(runner.Job, "_new_sandbox", spy)
    record = run(zk, settings, start_vm=False)
    log = "\n".join(tasks.task_log(zk, record.id))
    if "runs without a process, memory and CPU limit" in log:
        pytest.skip("no usable cgroup on this machine")
    assert "script sandbox limits: at most 512 processes, 192M of memory (no swap)" in log, log
    assert "hog in a command: exit -9" in log, log
    assert "reached its memory limit (192M): the kernel's OOM killer ended" in log, log
    assert record.state == "FAILURE"
    assert "install()" in record.status and "killed by SIGKILL" in record.status, record.status
    assert "reached its memory limit (192M)" in record.status, record.status
    assert subprocess.run(["true"]).returncode == 0
    assert created and all(box.cgroup is None for box in created)     # each cgroup was removed


TMP_FILL = r'''
import errno, os
from pvcapid.vmbuilder import VMBuilder


class VMBuilderScript(VMBuilder):
    def setup(self):
        for path in ("/tmp/fill", "/tmp/target/fill", "/var/tmp/fill", "/dev/shm/fill", "/run/fill",
                     "/root/fill"):
            written, chunk = 0, b"x" * (1 << 20)
            try:
                with open(path, "wb") as f:
                    while written < (1 << 30):
                        f.write(chunk)
                        f.flush()
                        written += len(chunk)
                outcome = "no error"
            except OSError as exc:
                outcome = errno.errorcode.get(exc.errno, str(exc.errno))
            os.unlink(path)
            self.log_info(f"FILL {path} {outcome} after {written >> 20} MiB")
'''


def test_filling_scratch_space_stops_at_the_cap() -> None:
    """Every writable scratch file system of the sandbox is a tmpfs of worker.sandbox_tmp_size:
    writing on ends with ENOSPC at the cap (24 MiB here), not at half the node's memory."""
    lines: list[str] = []
    with Sandbox(script=TMP_FILL, script_name="fill", vm_name="fill1", vm_profile="p", vm_data={},
                 vm_uuid="", log=lines.append, limits=SMALL) as box:
        box.start()
        box.run("setup", 60)
    fills = [line for line in lines if line.startswith("FILL ")]
    assert len(fills) == 6, lines
    for line in fills:
        _fill, _path, outcome, _after, mib, _unit = line.split()
        assert outcome == "ENOSPC", line
        assert int(mib) <= 24, line


LIMIT_TAMPER = r'''
import os, subprocess
from pvcapid.vmbuilder import VMBuilder


class VMBuilderScript(VMBuilder):
    def setup(self):
        a = self.vm_data
        self.log_info("CGROUP " + open("/proc/self/cgroup").read().replace("\n", ";"))
        self.log_info(f"SYSFS {sorted(os.listdir('/sys/fs/cgroup'))}")
        for path in a["files"]:
            try:
                with open(path, "w") as f:
                    f.write("max")
                self.log_info(f"TAMPER {path} ESCAPED")
            except OSError as exc:
                self.log_info(f"TAMPER {path} BLOCKED {exc.strerror}")
        for fstype in ("cgroup2", "cgroup"):
            os.makedirs(f"/tmp/{fstype}", exist_ok=True)
            done = subprocess.run(["mount", "-t", fstype, "-o", "pids" if fstype == "cgroup" else "none",
                                   fstype, f"/tmp/{fstype}"], capture_output=True, text=True)
            self.log_info(f"MOUNT {fstype} {'ESCAPED' if done.returncode == 0 else 'BLOCKED'}")
'''


def test_sandbox_cannot_change_its_own_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The script cannot raise its limits: its cgroup namespace is rooted at its own cgroup,
    /sys/fs/cgroup is masked and read-only, and mounting a cgroup file system is refused; the
    limit files are unchanged afterwards."""
    vm_data: dict[str, Any] = {"files": []}
    real_create = limits_mod.create_or_warn

    def create(label: str, limits: Limits, job_log: Any) -> SandboxCgroup | None:
        group = real_create(label, limits, job_log)
        if group is not None:     # the host paths of its limit files (before the script starts)
            memory = "memory.max" if group.version == 2 else "memory.limit_in_bytes"
            vm_data["files"] += [os.path.join(group.path("pids"), "pids.max"),
                                 os.path.join(group.path("memory"), memory),
                                 os.path.join(group.path("pids"), "cgroup.procs")]
        return group

    monkeypatch.setattr(limits_mod, "create_or_warn", create)
    vm_data["files"] += ["/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/memory.max",
                         "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/cgroup.procs"]
    lines: list[str] = []
    with Sandbox(script=LIMIT_TAMPER, script_name="tamper", vm_name="tamper1", vm_profile="p",
                 vm_data=vm_data, vm_uuid="", log=lines.append, limits=SMALL) as box:
        box.start()
        group = _cgroup_or_skip(box)
        box.run("setup", 30)
        assert Path(group.path("pids"), "pids.max").read_text().strip() == str(SMALL.pids_max)
    text = "\n".join(lines)
    assert "ESCAPED" not in text, text
    assert text.count("TAMPER ") == len(vm_data["files"]) == 7 and text.count("MOUNT ") == 2, text
    cgroup_lines = [line for line in lines if line.startswith("CGROUP ")]
    assert cgroup_lines
    for entry in cgroup_lines[-1].split(" ", 1)[1].split(";"):
        if entry:
            assert entry.rsplit(":", 1)[1] == "/", entry     # no path leads outside its cgroup
    assert "SYSFS []" in text, text


def test_without_cgroups_provisioning_goes_on_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no cgroup can be made (no controllers, read-only), the sandbox still runs: a clear
    warning goes to the job's log (and once to the daemon's), the scratch space stays capped."""
    def unavailable(label: str, limits: Limits) -> SandboxCgroup:
        raise limits_mod.Unavailable("cgroup v2 at /sys/fs/cgroup does not offer the pids controller")

    monkeypatch.setattr(limits_mod, "create", unavailable)
    lines: list[str] = []
    with Sandbox(script=TMP_FILL, script_name="fill", vm_name="fill2", vm_profile="p", vm_data={},
                 vm_uuid="", log=lines.append, limits=SMALL) as box:
        box.start()
        assert box.cgroup is None
        box.run("setup", 60)
    text = "\n".join(lines)
    assert ("WARNING: the script sandbox runs without a process, memory and CPU limit: cgroup v2 at "
            "/sys/fs/cgroup does not offer the pids controller") in text, text
    assert text.count("ENOSPC") == 6, text


def test_cgroup_v2_layout_under_a_delegated_worker_cgroup(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The layout on a real node (cgroup v2, pvcworkerd's unit with Delegate=yes), on a stand-in
    tree since this machine's cgroup v2 has no controllers: the worker moves itself into
    <unit>/worker (v2 allows controllers below a cgroup only when it holds no process), enables
    pids, memory and cpu below, and each sandbox gets <unit>/pvc-sandbox/<name> with its limits."""
    unit = tmp_path / "system.slice" / "pvcworkerd.service"
    for directory in (unit, unit / "worker", unit / "pvc-sandbox"):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        (directory / "cgroup.subtree_control").write_text("")
        (directory / "cgroup.procs").write_text("")
    (unit / "cgroup.procs").write_text("4242\n")
    monkeypatch.setattr(limits_mod, "_mounts", lambda: [(str(tmp_path), "cgroup2", {"rw"})])
    monkeypatch.setattr(limits_mod, "_own_cgroups", lambda: {"": "/system.slice/pvcworkerd.service"})
    group = limits_mod.create("web1", SMALL)
    sandbox = Path(group.dirs[""])
    assert group.version == 2 and sandbox.parent == unit / "pvc-sandbox"
    assert (unit / "worker" / "cgroup.procs").read_text() == "4242"
    assert (unit / "cgroup.subtree_control").read_text() == "+pids +memory +cpu"
    assert (unit / "pvc-sandbox" / "cgroup.subtree_control").read_text() == "+pids +memory +cpu"
    assert (sandbox / "pids.max").read_text() == "48"
    assert (sandbox / "memory.max").read_text() == str(192 << 20)
    assert group.procs_files() == [str(sandbox / "cgroup.procs")]
    # without the controllers (not delegated): a clear reason, and the sandbox runs unlimited
    (unit / "cgroup.controllers").write_text("cpu\n")
    with pytest.raises(limits_mod.Unavailable, match="does not offer the pids and memory controllers"):
        limits_mod._create_v2(str(tmp_path), "/system.slice/pvcworkerd.service", "web2", SMALL)

"""The lab's tiny guest: a Debian cloud kernel plus a busybox initramfs (and an ext4 root disk).

Built locally from Debian packages (no images downloaded from elsewhere) and cached, so tests can
boot real VMs under TCG in a few seconds. The guest speaks a small serial protocol that tests and
the lab read from the console log:

    PVC-GUEST-BOOT-OK name=<hostname> ip=<addr|none>      once per boot
    PVC-GUEST-USERDATA <first line>                       user-data fetched from 169.254.169.254
    PVC-GUEST-HEARTBEAT name=<hostname> n=<counter> ...   every 2 s; the counter proves no reboot
    PVC-GUEST-POWEROFF                                    ACPI power button (libvirt shutdown())
    PVC-GUEST-ECHO <line>                                 a line typed into the serial port

busybox has no NTP client: a tiny static one (NTP_CLIENT_C, /bin/ntpquery) is compiled with the
host's gcc when there is one; without it the `ntp` probe answers "fail noclient".

Kernel parameters: `vmname=` (hostname), `vmip=a.b.c.d/nn` (static fallback when DHCP gets no
lease), `vmdhcp=0` (skip DHCP), `vmroot=/dev/vda` (switch_root into the ext4 disk image).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pvc.lab import plan as lab_plan
from pvc.lab.proc import LabError, run

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")          # busybox-static
# virtio, SCSI (provisioned sdX disks are virtio-scsi) and the ACPI button are modules in Debian's
# cloud kernel; ext4 is built in. Load order matters (no modprobe/modules.dep in the guest).
MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
           "failover", "net_failover", "virtio_net", "virtio_blk", "virtio_console", "virtio_balloon",
           "scsi_common", "scsi_mod", "sd_mod", "virtio_scsi",
           "button", "evdev")
DISK_SIZE_MIB = 64
FIXED_MTIME = 1700000000                # reproducible archives

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin 2>/dev/null
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
grep -q ' /dev ' /proc/mounts || mount -t devtmpfs dev /dev
say() { echo "$*" > /dev/ttyS0; }
NAME=pvcguest; VMIP=; VMROOT=; DHCP=1
for a in $(cat /proc/cmdline); do
  case "$a" in
    vmname=*) NAME=${a#vmname=};; vmip=*) VMIP=${a#vmip=};;
    vmroot=*) VMROOT=${a#vmroot=};; vmdhcp=*) DHCP=${a#vmdhcp=};;
  esac
done
if [ ! -e /etc/stage2 ]; then
  for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko 2>/dev/null; done
  if [ -n "$VMROOT" ]; then
    for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do [ -b "$VMROOT" ] && break; sleep 0.2; done
    if mount -t ext4 -o rw "$VMROOT" /newroot; then
      say "PVC-GUEST-SWITCHROOT $VMROOT"
      umount /proc /sys
      mount --move /dev /newroot/dev
      exec switch_root /newroot /init
    fi
    say "PVC-GUEST-SWITCHROOT-FAILED $VMROOT"
  fi
else
  BOOTS=$(( $(cat /etc/boot-count 2>/dev/null || echo 0) + 1 ))
  echo "$BOOTS" > /etc/boot-count; sync
  say "PVC-GUEST-ROOT dev=$(awk '$2=="/"{print $1}' /proc/mounts | tail -1) boots=$BOOTS"
fi
hostname "$NAME"
ip link set lo up
IFACE=eth0
[ -e /sys/class/net/$IFACE ] || IFACE=$(ls /sys/class/net | grep -v '^lo$' | head -1)
IP=
if [ -n "$IFACE" ]; then
  ip link set "$IFACE" up
  if [ "$DHCP" != 0 ]; then
    udhcpc -i "$IFACE" -n -t 3 -T 1 -x "hostname:$NAME" -O ntpsrv -s /etc/udhcpc.script >/dev/null 2>&1
  fi
  IP=$(ip -4 -o addr show dev "$IFACE" | awk '{print $4}' | head -1)
  if [ -z "$IP" ] && [ -n "$VMIP" ]; then ip addr add "$VMIP" dev "$IFACE" && IP=$VMIP; fi
fi
IP=${IP%/*}
acpid -c /etc/acpi -l /tmp/acpid.log
mkdir -p /tmp/www/cgi-bin && echo "hello from $NAME" > /tmp/www/index.html
cp /etc/cgi/* /tmp/www/cgi-bin/
httpd -p 80 -h /tmp/www
say "PVC-GUEST-BOOT-OK name=$(hostname) ip=${IP:-none}"
# typed input: each line read from the serial port comes back (the web UI's console test)
( exec 0</dev/ttyS0; while read -r line; do say "PVC-GUEST-ECHO $line"; done ) &
if [ -n "$IP" ]; then
  (
    for i in 1 2 3 4 5; do
      # not `wget -T`: it segfaults in Debian's busybox-static 1.35
      if timeout 5 wget -q -O /tmp/user-data http://169.254.169.254/latest/user-data 2>/dev/null \
          && [ -s /tmp/user-data ]; then
        say "PVC-GUEST-USERDATA $(head -n 1 /tmp/user-data)"
        if [ "$(head -c 2 /tmp/user-data)" = "#!" ]; then
          chmod +x /tmp/user-data
          /tmp/user-data > /dev/ttyS0 2>&1
        fi
        break
      fi
      sleep 2
    done
  ) &
fi
n=0
while true; do
  n=$((n + 1))
  say "PVC-GUEST-HEARTBEAT name=$NAME n=$n uptime=$(cut -d' ' -f1 /proc/uptime)"
  sleep 2
done
"""

# busybox-static ships no udhcpc script; this one only touches the guest's own files.
UDHCPC_SCRIPT = r"""#!/bin/sh
echo "$(cut -d' ' -f1 /proc/uptime) $1 ${ip:-} ${serverid:-}" >> /tmp/udhcpc.events
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    echo "${ntpsrv:-}" > /tmp/udhcpc.ntpsrv
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    : > /etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done ;;
esac
exit 0
"""

# Probes the system tests call over HTTP (from the primary, which routes to the guests): each
# does one fixed thing with a sanitised argument, so the guest runs no arbitrary commands.
_CGI_HEAD = """#!/bin/sh
echo "Content-Type: text/plain"; echo
ARG=$(echo "$QUERY_STRING" | tr '+' ' ' | tr -cd 'A-Za-z0-9. :_-')
"""
CGI = {
    "ping": _CGI_HEAD + """ping -c 1 -W 2 $ARG >/dev/null 2>&1 && echo ok || echo fail\n""",
    "resolve": _CGI_HEAD + """nslookup $ARG 2>/dev/null | awk '/^Name:/{f=1} f&&/^Address/{print $NF}'\n""",
    "http": _CGI_HEAD + """timeout 3 wget -q -O - "http://$ARG/" 2>/dev/null || echo fail\n""",
    "renew": _CGI_HEAD + """kill -USR1 $(pidof udhcpc) && echo ok\n""",
    "events": _CGI_HEAD + """cat /tmp/udhcpc.events /etc/resolv.conf 2>/dev/null\n""",
    "pingstart": _CGI_HEAD + """[ -f /tmp/ping.pid ] && kill -INT $(cat /tmp/ping.pid) 2>/dev/null
ping -i 0.05 $ARG > /tmp/ping.log 2>&1 < /dev/null &
echo $! > /tmp/ping.pid; echo ok\n""",
    "pingstop": _CGI_HEAD + """kill -INT $(cat /tmp/ping.pid) 2>/dev/null; rm -f /tmp/ping.pid
sleep 0.5; cat /tmp/ping.log\n""",
    # TCP connect to "<ip> <port>": open, refused (a RST came back) or closed (nothing came back)
    "tcp": _CGI_HEAD + """set -- $ARG
ERR=$(timeout 5 nc -w 2 "$1" "$2" -e /bin/true </dev/null 2>&1 >/dev/null) && echo open && exit
case "$ERR" in *refused*) echo refused ;; *) echo closed ;; esac\n""",
    # one SNTP query to "<server>": "ok stratum=<n> time=<unix seconds>" or "fail <why>"
    "ntp": _CGI_HEAD + """[ -x /bin/ntpquery ] || { echo "fail noclient"; exit; }
timeout 10 /bin/ntpquery $ARG\n""",
    "dhcpntp": _CGI_HEAD + """cat /tmp/udhcpc.ntpsrv 2>/dev/null\n""",      # DHCP option 42 as received
    # "<server> <file>": fetch the file over TFTP, answer its sha256 (or fail)
    "tftp": _CGI_HEAD + """set -- $ARG
rm -f /tmp/tftp.out
timeout 10 tftp -g -l /tmp/tftp.out -r "$2" "$1" >/dev/null 2>&1 \\
  && sha256sum /tmp/tftp.out | cut -d' ' -f1 || echo fail\n""",
    "userdata": _CGI_HEAD + """timeout 5 wget -q -O - http://169.254.169.254/latest/user-data 2>/dev/null \\
  || echo fail\n""",
    # "<victim ip> <gateway>": ask the metadata service for user-data from another guest's address
    "spoofmeta": _CGI_HEAD + """set -- $ARG
ip addr add "$1/32" dev eth0 2>/dev/null
ip route replace 169.254.169.254 via "$2" src "$1" 2>/dev/null
timeout 5 wget -q -O - http://169.254.169.254/latest/user-data 2>/dev/null || echo fail
ip route del 169.254.169.254 2>/dev/null; ip addr del "$1/32" dev eth0 2>/dev/null\n""",
}

# RFC 4330 client: one mode-3 packet, up to three tries, a reply counts only if it is mode 4 from
# the server asked (connected socket) and echoes our transmit timestamp.
NTP_CLIENT_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#define EPOCH 2208988800u
int main(int argc, char **argv) {
  struct sockaddr_storage ss; socklen_t len; int fam;
  struct sockaddr_in *a4 = (struct sockaddr_in *)&ss; struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
  memset(&ss, 0, sizeof ss);
  if (argc != 2) { puts("fail usage"); return 2; }
  if (inet_pton(AF_INET, argv[1], &a4->sin_addr) == 1) {
    fam = AF_INET; a4->sin_family = AF_INET; a4->sin_port = htons(123); len = sizeof *a4;
  } else if (inet_pton(AF_INET6, argv[1], &a6->sin6_addr) == 1) {
    fam = AF_INET6; a6->sin6_family = AF_INET6; a6->sin6_port = htons(123); len = sizeof *a6;
  } else { puts("fail address"); return 2; }
  int s = socket(fam, SOCK_DGRAM, 0);
  struct timeval tv = {2, 0};
  if (s < 0 || setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)
      || connect(s, (struct sockaddr *)&ss, len)) {
    puts("fail socket"); return 1;
  }
  for (int i = 0; i < 3; i++) {
    unsigned char q[48], r[128]; uint32_t w[2];
    memset(q, 0, sizeof q); q[0] = 0x23;                     /* LI 0, version 4, mode 3 */
    w[0] = htonl((uint32_t)time(NULL) + EPOCH); w[1] = htonl((uint32_t)getpid() * 2654435761u + (uint32_t)i);
    memcpy(q + 40, w, 8);
    if (send(s, q, sizeof q, 0) != (ssize_t)sizeof q) continue;
    ssize_t n = recv(s, r, sizeof r, 0);
    if (n < 48 || (r[0] & 7) != 4 || memcmp(r + 24, q + 40, 8) != 0) continue;
    uint32_t secs; memcpy(&secs, r + 40, 4);
    printf("ok stratum=%d time=%lu\n", r[1], (unsigned long)(ntohl(secs) - EPOCH));
    return 0;
  }
  puts("fail noreply"); return 1;
}
"""

POWER_BUTTON = """#!/bin/sh
echo "PVC-GUEST-POWEROFF" > /dev/ttyS0
sync
poweroff -f
"""


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    disk_raw: Path


def _recipe_key() -> str:
    """Changes whenever anything that goes into the images changes (except the kernel version)."""
    st = BUSYBOX.stat()
    digest = hashlib.sha256()
    for part in (INIT, UDHCPC_SCRIPT, POWER_BUTTON, *CGI.values(), " ".join(MODULES), str(DISK_SIZE_MIB),
                 f"{st.st_size}:{int(st.st_mtime)}", NTP_CLIENT_C, f"gcc={bool(shutil.which('gcc'))}", "v1"):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:12]


def kernel_package() -> str:
    """The versioned cloud kernel package the meta package currently depends on."""
    for attempt in range(2):
        result = run(["apt-cache", "depends", KERNEL_META_PACKAGE], check=False)
        for line in result.stdout.splitlines():
            word = line.split()
            if len(word) == 2 and word[0] == "Depends:" and word[1].startswith("linux-image-"):
                return word[1]
        if attempt == 0:   # no package index yet (fresh container): fetch it once
            run(["apt-get", "update", "-qq"], timeout=300)
    raise LabError(f"cannot resolve the kernel behind {KERNEL_META_PACKAGE} with apt-cache")


def _download(package: str, debs: Path) -> Path:
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    cmd = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package]
    for attempt in range(2):
        result = subprocess.run(cmd, cwd=debs, capture_output=True, text=True, timeout=600)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if result.returncode == 0 and found:
            for old in debs.glob("*.deb"):      # keep only the kernel in use
                if old != found[-1]:
                    old.unlink()
            return found[-1]
        if attempt == 0:   # a stale index points at a superseded version
            run(["apt-get", "update", "-qq"], timeout=300)
    raise LabError(f"apt-get download {package} failed: {result.stderr.strip()[-500:]}")


def _extract_kernel(deb: Path, into: Path) -> None:
    """Stream the deb's data tar and keep only vmlinuz and the modules the guest loads."""
    mods = into / "lib" / "modules"
    mods.mkdir(parents=True, exist_ok=True)
    wanted = set(MODULES)
    got_kernel = False
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as dpkg:
        assert dpkg.stdout is not None
        with tarfile.open(fileobj=dpkg.stdout, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.removeprefix("./")
                base = name.rsplit("/", 1)[-1]
                handle = None
                if name.startswith("boot/vmlinuz-"):
                    handle, target = tar.extractfile(member), into / "vmlinuz"
                    got_kernel = True
                elif "/kernel/" in name and base.split(".ko")[0] in wanted and ".ko" in base:
                    handle, target = tar.extractfile(member), mods / f"{base.split('.ko')[0]}.ko"
                if handle is None:
                    continue
                data = handle.read()
                if base.endswith(".xz"):
                    data = lzma.decompress(data)
                target.write_bytes(data)
    if dpkg.returncode != 0:
        raise LabError(f"dpkg-deb --fsys-tarfile {deb} failed")
    missing = wanted - {p.stem for p in mods.glob("*.ko")}
    if not got_kernel or missing:
        raise LabError(f"{deb.name}: no vmlinuz or missing modules {sorted(missing)}")


def build_ntp_client(into: Path) -> Path | None:
    """/bin/ntpquery for the guest, statically linked by the host's gcc; None without gcc."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    source, binary = into / "ntpquery.c", into / "ntpquery"
    source.write_text(NTP_CLIENT_C)
    run([gcc, "-static", "-Os", "-s", "-o", str(binary), str(source)])
    return binary


def write_tree(root: Path, modules_from: Path | None, ntp_client: Path | None = None) -> None:
    """The guest filesystem: busybox, /init, config; modules only in the initramfs variant."""
    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "run", "mnt", "newroot", "root", "var",
              "etc/acpi/PWRF", "etc/cgi", "lib/modules"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    if ntp_client is not None:
        shutil.copy2(ntp_client, root / "bin" / "ntpquery")

    def put(rel: str, text: str, mode: int = 0o644) -> None:
        path = root / rel
        path.write_text(text)
        path.chmod(mode)

    put("init", INIT, 0o755)
    put("etc/udhcpc.script", UDHCPC_SCRIPT, 0o755)
    put("etc/acpi/PWRF/00000080", POWER_BUTTON, 0o755)
    for name, script in CGI.items():
        put(f"etc/cgi/{name}", script, 0o755)
    put("etc/modules", "\n".join(MODULES) + "\n")
    put("etc/hostname", "pvcguest\n")
    if modules_from is not None:
        for ko in modules_from.glob("*.ko"):
            shutil.copy2(ko, root / "lib" / "modules" / ko.name)
    else:
        put("etc/stage2", "root disk: modules are loaded by the initramfs\n")


def _cpio_newc(root: Path, out: Path) -> None:
    """Write a gzip'd newc cpio of `root`, plus /dev/console (no root mknod needed)."""
    buf = io.BytesIO()
    ino = 1

    def entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        nonlocal ino
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, FIXED_MTIME, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        buf.write(header + encoded)
        buf.write(b"\0" * (-(len(header) + len(encoded)) % 4))
        buf.write(data)
        buf.write(b"\0" * (-len(data) % 4))
        ino += 1

    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            entry(rel, stat.S_IFLNK | 0o777, os.readlink(path).encode())
        elif stat.S_ISDIR(st.st_mode):
            entry(rel, stat.S_IFDIR | stat.S_IMODE(st.st_mode))
        else:
            entry(rel, stat.S_IFREG | stat.S_IMODE(st.st_mode), path.read_bytes())
    entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    entry("TRAILER!!!", 0)
    with gzip.GzipFile(out, "wb", compresslevel=6, mtime=FIXED_MTIME) as gz:
        gz.write(buf.getvalue())


def _build(kernel_pkg: str, guest_dir: Path, key: str) -> Path:
    deb = _download(kernel_pkg, guest_dir / "debs")
    target = guest_dir / f"{key}-{kernel_pkg.removeprefix('linux-image-')}"
    if (target / "manifest.json").exists():
        return target
    with tempfile.TemporaryDirectory(dir=guest_dir, prefix=".build-") as tmp:
        work = Path(tmp)
        kdir = work / "kernel"
        _extract_kernel(deb, kdir)
        out = work / "out"
        out.mkdir()
        shutil.copy2(kdir / "vmlinuz", out / "vmlinuz")
        initrd_tree, disk_tree = work / "initrd", work / "disk"
        ntp_client = build_ntp_client(work)
        write_tree(initrd_tree, kdir / "lib" / "modules", ntp_client)
        write_tree(disk_tree, None, ntp_client)
        _cpio_newc(initrd_tree, out / "initrd.gz")
        run(["mkfs.ext4", "-q", "-F", "-L", "pvcroot", "-d", str(disk_tree), str(out / "disk.raw"),
             f"{DISK_SIZE_MIB}M"])
        (out / "manifest.json").write_text(json.dumps(
            {"kernel_package": kernel_pkg, "deb": deb.name, "recipe": key}, indent=1))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(out, target)
    return target


def _image(directory: Path) -> GuestImage:
    return GuestImage(kernel=directory / "vmlinuz", initrd=directory / "initrd.gz",
                      disk_raw=directory / "disk.raw")


def build_guest(cache_dir: Path | None = None, refresh: bool = False) -> GuestImage:
    """Build (or reuse) the tiny guest; returns paths that never change once built.

    A cached build is reused without asking apt anything unless `refresh` is set, so this is fast
    and works offline. Files of a build are never rewritten: a running VM (or a migration
    destination) may have them open by path.
    """
    guest_dir = (cache_dir or lab_plan.CACHE_DIR) / "guest"
    guest_dir.mkdir(parents=True, exist_ok=True)
    key = _recipe_key()
    current = guest_dir / "current.json"
    with open(guest_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not refresh and current.exists():
            info = json.loads(current.read_text())
            directory = guest_dir / info.get("dir", "")
            if info.get("recipe") == key and (directory / "manifest.json").exists():
                return _image(directory)
        directory = _build(kernel_package(), guest_dir, key)
        tmp = current.with_suffix(".tmp")
        tmp.write_text(json.dumps({"recipe": key, "dir": directory.name}))
        os.replace(tmp, current)
        return _image(directory)


def domain_xml(name: str, guest: GuestImage, memory_mib: int = 128, disk: Path | None = None,
               serial_log: Path | None = None, cmdline_extra: str = "", vcpus: int = 1,
               uuid: str | None = None, devices: str = "", description: str = "", vnc: bool = False) -> str:
    """A minimal TCG domain of the tiny guest: for lab self-tests, system tests and the demo VM.

    `disk` is a local root image file; `devices` is extra device XML (e.g. an RBD root disk, with
    `vmroot=/dev/vda` in cmdline_extra). A disk gets event_idx='off': with it on, QEMU 7.2/TCG
    guests writing to virtio-blk die after live migration. Without serial_log the serial port is
    a pty, as PVC's node daemon expects for its console log. `vnc` adds a VGA card and a VNC
    display on every address of the node (its cluster address is what pvcapid's proxy reaches).
    """
    cmdline = f"console=ttyS0 panic=-1 quiet vmname={name}"
    disk_xml = ""
    if disk is not None:
        cmdline += " vmroot=/dev/vda"
        disk_xml = (f"<disk type='file' device='disk'><driver name='qemu' type='raw' cache='none' "
                    f"event_idx='off'/><source file='{disk}'/><target dev='vda' bus='virtio'/></disk>")
    serial_xml = (f"<serial type='file'><source path='{serial_log}' append='on'/>"
                  f"<target port='0'/></serial>" if serial_log else
                  "<serial type='pty'><target port='0'/></serial>"
                  "<console type='pty'><target type='serial' port='0'/></console>")
    cmdline = f"{cmdline} {cmdline_extra}".strip()
    if vnc:
        devices += ("<graphics type='vnc' port='-1' autoport='yes' listen='0.0.0.0'/>"
                    "<video><model type='vga'/></video>")
    extra = "".join(f"\n  <{tag}>{value}</{tag}>"
                    for tag, value in (("uuid", uuid), ("description", description)) if value)
    return f"""<domain type='qemu'>
  <name>{name}</name>{extra}
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{guest.kernel}</kernel>
    <initrd>{guest.initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {disk_xml}{devices}
    {serial_xml}
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>"""


def from_files(files: dict[str, str]) -> GuestImage:
    """The GuestImage a lab plan recorded (plan.extra["guest_files"])."""
    return GuestImage(kernel=Path(files["kernel"]), initrd=Path(files["initrd"]),
                      disk_raw=Path(files["disk_raw"]))

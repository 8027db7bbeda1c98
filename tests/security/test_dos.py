"""Denial of service by user input and guest output (D14), against real components.

* A crafted list filter (`limit`) used to run in Python's backtracking regex engine and froze
  pvcapid for minutes: a real pvcapid now answers pathological limits with the right list, refuses
  an over-long one with a 400 naming the cap, and keeps answering.
* A guest flooding its serial console (a real QEMU running a 512-byte boot sector that writes to
  the UART as fast as it can, through the same console log file and `<log append='on'>` chardev
  pvcnoded sets up) grows neither pvcnoded's memory nor the disk beyond the configured caps, and
  what reaches ZooKeeper stays a readable, bounded tail.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from pvc.cluster.common import LIMIT_MAX
from pvc.core import schema
from pvc.core.zk import ZK
from pvc.node import console
from pvc.node.console import ConsoleTail
from pvc.node.vms.store import ZKStore
from tests.conftest import Api, wait_for
from tests.integration.test_api_vms import cluster, define, vm_xml

# Limits that take a backtracking engine exponential or high-polynomial time on names that almost
# match: all within the length cap, so they reach the matcher.
PATHOLOGICAL = [
    "^" + "a+" * 30 + "!$",
    "^" + "a*" * 100 + "!$",
    ".*" * 120 + "!",
    "^" + "a?" * 60 + "a" * 60 + "$",
    "[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*!",
]
NAME = "a" * 200   # a VM name (at most 255) the patterns above chew on


def names(response: httpx.Response) -> list[str]:
    """The names listed; an empty list is upstream's 404 "... not found"."""
    if response.status_code == 404 and "not found" in response.json()["message"]:
        return []
    assert response.status_code == 200, response.text
    return [vm["name"] for vm in response.json()]


def test_pathological_limits_are_answered_and_pvcapid_keeps_answering(api: Api, zk: ZK) -> None:
    cluster(zk, api)
    for name in (NAME, "web1"):
        assert define(api, vm_xml(name)).status_code == 200
    for limit in PATHOLOGICAL:
        # a generous client timeout: a frozen pvcapid fails the test instead of hanging it
        assert names(api.http.get("/vm", params={"limit": limit}, timeout=60)) == [], limit
        assert names(api.http.get("/node", params={"limit": limit}, timeout=60)) == [], limit
    # the same shapes that do match answer with the VM
    assert names(api.http.get("/vm", params={"limit": "^" + "a*" * 100 + "$"}, timeout=60)) == [NAME]
    assert names(api.http.get("/vm", params={"limit": "[a-z]*[a-z]*[a-z]*1$"}, timeout=60)) == ["web1"]
    # groups and alternation (the catastrophic shapes) are refused by name, not run
    for limit in ("(a+)+$", "(a|aa)*!", "(.*a){20}"):
        refused = api.http.get("/vm", params={"limit": limit}, timeout=60)
        assert refused.status_code == 400
        assert refused.json()["message"].startswith(f"limit: '{limit}' is not a valid regular expression")
    # an over-long limit is refused before any matching, naming the cap, and not echoed back
    for path in ("/vm", "/node", "/network", "/provisioner/template/system"):
        refused = api.http.get(path, params={"limit": "a" * 10_000}, timeout=60)
        assert refused.status_code == 400, (path, refused.text)
        message = refused.json()["message"]
        assert f"at most {LIMIT_MAX}" in message and len(message) < 200, message
    # and pvcapid keeps answering, with nothing changed
    assert sorted(names(api.get("/vm"))) == sorted([NAME, "web1"])
    assert names(api.get("/vm", params={"limit": "web"})) == ["web1"]


# -- a guest flooding its serial console ------------------------------------------------------------

# Real-mode x86 boot sector: print a short line, then write an endless flood to COM1 (0x3f8): ESC
# sequences, a few long lines without newline, and short lines, as fast as the UART takes bytes.
BOOT_ASM = r"""
    .code16
    .globl _start
_start:
    cli
    mov $0x07c0, %ax          # the sector is loaded at 0x7c00; labels count from 0
    mov %ax, %ds
    mov $0x3f8, %dx
again:
    mov $flood, %si
next:
    lodsb
    test %al, %al
    jz long
    out %al, %dx
    jmp next
long:
    mov $20000, %cx
fill:
    mov $'x', %al
    out %al, %dx
    loop fill
    jmp again
flood:
    .ascii "guest line \033]0;owned\007 \033]52;c;ZWNobyBvd25lZA==\007 \033[2J\n"
    .ascii "short\nshort\nshort\nshort\n"
    .byte 0
    .org 510
    .word 0xaa55
"""

MAX_BYTES = 64 * 1024          # the smallest logging.console_log_max_bytes allowed
BACKUPS = 2
MAX_LINES = 100


def boot_sector(directory: Path) -> Path:
    source, obj, image = directory / "flood.S", directory / "flood.o", directory / "flood.img"
    source.write_text(BOOT_ASM)
    subprocess.run(["as", "--32", "-o", str(obj), str(source)], check=True, capture_output=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(obj), str(image)], check=True,
                   capture_output=True)
    data = image.read_bytes()
    assert len(data) == 512 and data[-2:] == b"\x55\xaa"
    image.write_bytes(data + b"\0" * (1474560 - 512))    # a floppy image
    return image


def start_guest(image: Path, log: Path) -> subprocess.Popen[bytes]:
    """QEMU (TCG) booting the flood; serial 0 logs to `log` with append=on, as pvcnoded's XML does."""
    return subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "pc,accel=tcg", "-m", "16", "-display", "none", "-nodefaults",
         "-no-user-config", "-drive", f"file={image},if=floppy,format=raw", "-boot", "a",
         "-chardev", f"null,id=s0,logfile={log},logappend=on", "-serial", "chardev:s0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None or shutil.which("as") is None,
                    reason="needs qemu-system-x86_64 and binutils")
def test_serial_console_flood_stays_within_the_caps(tmp_path: Path, zk: ZK) -> None:
    uuid = "00000000-0000-4000-8000-00000000f100"
    zk.put(schema.vm(uuid), {"name": "flood"})     # the guard put_console writes under
    store = ZKStore(zk)
    published: list[str] = []

    def publish(vm: str, text: str) -> None:
        store.put_console(vm, text)
        published.append(text)

    logs = tmp_path / "console"
    logs.mkdir()
    log = logs / "flood.log"
    tail = ConsoleTail(str(logs), MAX_LINES, publish, max_bytes=MAX_BYTES, backups=BACKUPS)
    guest = start_guest(boot_sector(tmp_path), log)
    written = 0
    try:
        wait_for(lambda: log.exists() and log.stat().st_size > 0, 60, message="the guest to write")
        rotations = 0
        for _ in range(40):
            before = log.stat().st_size
            wait_for(lambda b=before: log.stat().st_size > b + MAX_BYTES, 60,  # type: ignore[misc]
                     message="the guest to write more than the cap")
            written += log.stat().st_size
            tail.tick({uuid: str(log)})
            # disk: right after a keepalive the live file is within the cap, and so is every copy
            if log.stat().st_size < before:
                rotations += 1
            files = sorted(p.name for p in logs.iterdir())
            assert set(files) <= {"flood.log", *(f"flood.log.{n}" for n in range(1, BACKUPS + 1))}, files
            for copy in files[1:]:
                assert (logs / copy).stat().st_size <= MAX_BYTES
                assert (logs / copy).stat().st_mode & 0o077 == 0
            # memory: lines, bytes and line length all capped
            state = tail._tails[uuid]
            assert len(state.lines) <= MAX_LINES and state.size <= console.MAX_BUFFER
            assert all(len(line) <= console.MAX_LINE + 60 for line in state.lines)
            assert len(state.partial) <= console.MAX_LINE
            assert guest.poll() is None, guest.stderr.read().decode() if guest.stderr else ""
        assert rotations >= 10 and written > 20 * MAX_BYTES
    finally:
        guest.kill()
        guest.wait()
    # ZooKeeper holds a bounded tail with the guest's lines in it (control characters and all:
    # the CLI escapes them, tests/unit/test_cli_escaping.py)
    stored = zk.get(schema.vm_console(uuid))
    assert isinstance(stored, str) and 0 < len(stored.encode()) <= console.MAX_BUFFER
    lines = stored.splitlines()
    assert 0 < len(lines) <= MAX_LINES
    assert published[-1] == stored
    # which of the guest's lines the last tail holds depends on where the last rotation cut the
    # stream; over the run every kind of line was published, each within the caps
    seen = [line for text in published for line in text.splitlines()]
    assert any(line == "short" for line in seen)
    assert any("more characters cut by pvcnoded" in line for line in seen)
    assert any("\x1b]52;c;" in line for line in seen)

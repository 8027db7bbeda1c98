"""The script's side of the sandbox's request channel (issue #13).

Inside the sandbox a script has no cluster settings, no ZooKeeper session and no Ceph key. The
upstream-compatible names it uses keep working through the worker instead:

- `from pvcapid.Daemon import config` is a ScriptConfig: it holds no settings (reading one says
  why); scripts only hand it to open_zk().
- `pvcapid.vmbuilder.open_zk(config)` yields a BrokeredSession, accepted by the daemon_lib.ceph
  helpers.
- `daemon_lib.ceph` add/clone/resize/remove/map/unmap_volume and verifyVolume ask the worker
  (pvc.worker.provisioner.broker), which does them for this VM's own volumes only; the answers
  are upstream's (success, message).
- import_volume(pool, name, path) copies a raw image the script built into its volume.

bind_compat_modules() points those modules' names here; the sandbox calls it before loading the
script (the modules stay as they are outside the sandbox).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pvc.worker.provisioner.vmbuilder import ProvisioningError


class BrokerError(ProvisioningError):
    """The worker refused or failed a request (the message says which and why)."""


class BrokerClient:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.last_id = 0

    def call(self, op: str, fds: list[int] | None = None, **args: Any) -> Any:
        self.last_id += 1
        message = json.dumps({"id": self.last_id, "op": op, "args": args}).encode()
        if fds:
            socket.send_fds(self.sock, [message], fds)
        else:
            self.sock.send(message)
        while True:
            raw = self.sock.recv(1 << 20)
            if not raw:
                raise BrokerError("the worker closed the sandbox's request channel")
            reply = json.loads(raw)
            if reply.get("id") == self.last_id:      # (an answer to an interrupted request is dropped)
                break
        if "error" in reply:
            raise BrokerError(str(reply["error"]))
        return reply.get("ok")


CLIENT: BrokerClient | None = None

NO_SETTINGS = ("provisioner scripts get no cluster settings in the sandbox (no ZooKeeper, Ceph or API "
               "credentials); use open_zk(config) with the daemon_lib.ceph helpers, or the VMBuilder "
               "data (self.vm_data)")


def client() -> BrokerClient:
    if CLIENT is None:
        raise BrokerError("this script is not running in the provisioner sandbox (no request channel)")
    return CLIENT


class ScriptConfig:
    """`pvcapid.Daemon.config` in the sandbox: no settings at all."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"config.{name}: {NO_SETTINGS}")

    def __getitem__(self, key: str) -> Any:
        raise KeyError(f"config[{key!r}]: {NO_SETTINGS}")

    def get(self, key: str, default: Any = None) -> Any:
        return default

    def __repr__(self) -> str:
        return "<provisioner sandbox: no settings>"


class BrokeredSession:
    """What open_zk() yields in the sandbox: a token for the daemon_lib.ceph helpers."""

    def exists(self, path: str) -> bool:
        raise BrokerError(f"reading ZooKeeper ({path}) from a script: {NO_SETTINGS}")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise BrokerError(f"zkhandler.{name}: {NO_SETTINGS}")


@contextmanager
def open_zk(config: Any = None) -> Iterator[BrokeredSession]:
    yield BrokeredSession()


def _answer(op: str, **args: Any) -> tuple[bool, str]:
    try:
        return True, str(client().call(op, **args))
    except BrokerError as exc:
        return False, f"ERROR: {exc}"


def add_volume(zkhandler: Any, pool: str, name: str, size: str | int, force_flag: bool = False,
               zk_only: bool = False) -> tuple[bool, str]:
    return _answer("add_volume", pool=pool, name=name, size=size, force=force_flag, zk_only=zk_only)


def clone_volume(zkhandler: Any, pool: str, name_src: str, name_new: str,
                 force_flag: bool = False) -> tuple[bool, str]:
    return _answer("clone_volume", pool=pool, name=name_src, new_name=name_new, force=force_flag)


def resize_volume(zkhandler: Any, pool: str, name: str, size: str | int,
                  force_flag: bool = False) -> tuple[bool, str]:
    return _answer("resize_volume", pool=pool, name=name, size=size, force=force_flag)


def remove_volume(zkhandler: Any, pool: str, name: str) -> tuple[bool, str]:
    return _answer("remove_volume", pool=pool, name=name)


def verifyVolume(zkhandler: Any, pool: str, name: str) -> bool:  # upstream's name
    try:
        return bool(client().call("volume_exists", pool=pool, name=name))
    except BrokerError:
        return False


def map_volume(zkhandler: Any, pool: str, name: str) -> tuple[bool, str]:
    """(True, "/dev/...") or (False, the reason); /dev/rbd/<pool>/<name> points at the device."""
    return _answer("map_volume", pool=pool, name=name)


def unmap_volume(zkhandler: Any, pool: str, name: str) -> tuple[bool, str]:
    return _answer("unmap_volume", pool=pool, name=name)


def import_volume(pool: str, name: str, path: str) -> str:
    """Copy the raw image at `path` (a file in the sandbox) into this VM's volume pool/name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return str(client().call("import_volume", fds=[fd], pool=pool, name=name))
    finally:
        os.close(fd)


def bind_compat_modules(sock: socket.socket) -> None:
    """Route the upstream-compatible modules' names through the request channel."""
    global CLIENT
    import daemon_lib.ceph as ceph
    import daemon_lib.vmbuilder as dl_vmbuilder
    import pvcapid.vmbuilder as vmbuilder
    from pvc.worker.provisioner import sandbox

    CLIENT = BrokerClient(sock)
    sandbox.SETTINGS = ScriptConfig()
    vmbuilder.open_zk = open_zk
    dl_vmbuilder.open_zk = open_zk
    for name in ("add_volume", "clone_volume", "resize_volume", "remove_volume", "verifyVolume",
                 "map_volume", "unmap_volume"):
        setattr(ceph, name, globals()[name])

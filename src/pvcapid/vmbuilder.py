"""`from pvcapid.vmbuilder import VMBuilder, ProvisioningError, open_zk, chroot` for upstream scripts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pvc.worker.provisioner.vmbuilder import ProvisioningError, VMBuilder

__all__ = ["ProvisioningError", "VMBuilder", "chroot", "open_zk"]


@contextmanager
def open_zk(config: Any = None) -> Iterator[Any]:
    """A ZooKeeper session (pvc.core.zk.ZK) for the daemon_lib helpers; closed on exit.

    `config` is pvcapid.Daemon.config (our Settings); None means the same.
    """
    from pvc.core.zk import ZK
    from pvcapid.Daemon import get_config

    settings = config if config is not None and hasattr(config, "zookeeper") else get_config()
    zk = ZK.from_settings(settings).start()
    try:
        yield zk
    finally:
        zk.stop()


@contextmanager
def chroot(destination: str) -> Iterator[None]:
    """Run the block inside `chroot destination` (e.g. /tmp/target); back to the old root after."""
    real_root = os.open("/", os.O_RDONLY)
    fake_root = None
    try:
        os.chroot(destination)
        fake_root = os.open("/", os.O_RDONLY)
        os.fchdir(fake_root)
        yield
    finally:
        os.fchdir(real_root)
        os.chroot(".")
        os.fchdir(real_root)
        if fake_root is not None:
            os.close(fake_root)
        os.close(real_root)

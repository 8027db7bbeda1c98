"""`daemon_lib.ceph` volume helpers for upstream provisioner scripts.

Same signatures and (success, message) answers as upstream; `zkhandler` is the session from
pvcapid.vmbuilder.open_zk. Volumes are created and registered through pvc.cluster.storage (so
they appear in `pvc storage volume list`); maps go through pvc.adapters.rbdmap.
"""

from __future__ import annotations

from typing import Any

from pvc.adapters import rbdmap
from pvc.adapters.ceph import StorageError
from pvc.core.errors import PVCError


def _settings() -> Any:
    from pvcapid.Daemon import get_config

    return get_config()


def _storage() -> Any:
    from pvc.adapters.ceph import storage_from_settings

    return storage_from_settings(_settings())


def _ceph() -> rbdmap.Ceph:
    cfg = _settings().storage
    return rbdmap.Ceph(cfg.ceph_config_file, cfg.ceph_keyring_file, cfg.client_user)


def _answer(fn: Any, *args: Any, **kwargs: Any) -> tuple[bool, str]:
    try:
        return True, fn(*args, **kwargs)
    except PVCError as exc:
        return False, f"ERROR: {exc.message}"
    except (StorageError, rbdmap.RbdMapError) as exc:
        return False, f"ERROR: {exc.message}"


def add_volume(zkhandler: Any, pool: str, name: str, size: str | int, force_flag: bool = False,
               zk_only: bool = False) -> tuple[bool, str]:
    from pvc.cluster import storage as st

    if zk_only:
        return _answer(st.scan_volume, zkhandler, _storage(), pool, name)
    return _answer(st.add_volume, zkhandler, _storage(), pool, name, size, force=force_flag)


def clone_volume(zkhandler: Any, pool: str, name_src: str, name_new: str,
                 force_flag: bool = False) -> tuple[bool, str]:
    from pvc.cluster import storage as st

    return _answer(st.clone_volume, zkhandler, _storage(), pool, name_src, name_new, force=force_flag)


def resize_volume(zkhandler: Any, pool: str, name: str, size: str | int,
                  force_flag: bool = False) -> tuple[bool, str]:
    from pvc.cluster import storage as st

    return _answer(st.resize_volume, zkhandler, _storage(), pool, name, size, force=force_flag)


def remove_volume(zkhandler: Any, pool: str, name: str) -> tuple[bool, str]:
    from pvc.cluster import storage as st

    return _answer(st.remove_volume, zkhandler, _storage(), pool, name)


def verifyVolume(zkhandler: Any, pool: str, name: str) -> bool:  # upstream's name
    from pvc.core import schema

    return bool(zkhandler.exists(schema.volume(pool, name)))


def map_volume(zkhandler: Any, pool: str, name: str) -> tuple[bool, str]:
    """Map the volume; (True, "/dev/...") or (False, the reason)."""
    if not verifyVolume(zkhandler, pool, name):
        return False, f'ERROR: Volume "{name}" in pool "{pool}" does not exist.'
    return _answer(rbdmap.map_volume, pool, name, _ceph())


def unmap_volume(zkhandler: Any, pool: str, name: str) -> tuple[bool, str]:
    def unmap() -> str:
        if rbdmap.unmap_volume(pool, name):
            return f'Unmapped RBD volume "{name}" in pool "{pool}".'
        return f'RBD volume "{name}" in pool "{pool}" was not mapped.'

    return _answer(unmap)

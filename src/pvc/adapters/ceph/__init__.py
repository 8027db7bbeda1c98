"""Ceph access (DESIGN D6, D13): the storage adapter interface and its librados/librbd implementation.

`Storage` (base.py) is the narrow interface everything else uses (API, workers, node daemon);
`CephStorage` (librados.py, over the client in connection.py) implements it with Debian's rados/rbd
bindings, `FakeStorage` (fake.py) in memory for pure unit tests. `storage_from_settings`
(connect.py) is the one constructor of the Ceph adapter from settings.
"""

from pvc.adapters.ceph.base import (
    IMAGE_FORMATS,
    OSD_FLAGS,
    Locker,
    Storage,
    StorageError,
    StorageExists,
    StorageInUse,
    StorageNotFound,
    StorageUnavailable,
    keyring_key,
    secret_uuid,
)
from pvc.adapters.ceph.connect import close_shared, probe, storage_from_settings
from pvc.adapters.ceph.librados import CephStorage

__all__ = [
    "IMAGE_FORMATS", "OSD_FLAGS", "CephStorage", "Locker", "Storage", "StorageError", "StorageExists",
    "StorageInUse", "StorageNotFound", "StorageUnavailable", "close_shared", "keyring_key", "probe",
    "secret_uuid", "storage_from_settings",
]

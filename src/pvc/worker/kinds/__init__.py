"""Built-in task kinds; importing this package registers them."""

from pvc.worker.kinds import selftest, storage, vm  # noqa: F401

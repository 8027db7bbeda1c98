"""Built-in task kinds; importing this package registers them."""

from pvc.worker.kinds import selftest, vm  # noqa: F401

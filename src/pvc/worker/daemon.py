"""pvcworkerd: runs this node's tasks (DESIGN D9)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

from pvc import __version__
from pvc.adapters.ceph.base import set_image_guard
from pvc.cluster.storage import imagelock
from pvc.core import schema, secrets
from pvc.core.config import load_config
from pvc.core.errors import ClusterUnavailable, ConfigError
from pvc.core.logs import configure_logging
from pvc.core.zk import ZK
from pvc.worker import kinds  # noqa: F401 - registers the built-in task kinds
from pvc.worker.registry import KINDS
from pvc.worker.runner import Worker

log = logging.getLogger("pvcworkerd")


def main() -> None:
    try:
        settings = secrets.for_daemon(load_config())   # masks secrets in logs; checks the cluster key
    except ConfigError as exc:
        print(f"pvcworkerd: {exc}", file=sys.stderr)
        sys.exit(1)
    configure_logging(settings, "pvcworkerd")
    stop = threading.Event()

    def request_stop(*_args: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, request_stop)
    zk = ZK.from_settings(settings)
    while not stop.is_set():
        try:
            zk.start(timeout=10)
            break
        except ClusterUnavailable as exc:
            log.warning("%s; retrying", exc.message)
            stop.wait(2)
    if stop.is_set():
        sys.exit(1)
    schema.migrate(zk)
    # no two of PVC's maintenance operations on one RBD image at once, cluster-wide (imagelock)
    set_image_guard(imagelock.guard(zk, f"pvcworkerd on {settings.node_name}"))
    worker = Worker(zk, settings)
    log.info("pvcworkerd %s on node %s: %d slot(s), task kinds: %s", __version__, settings.node_name,
             worker.concurrency, ", ".join(sorted(KINDS)))
    worker.start()
    loop = threading.Thread(target=worker.loop, name="worker", daemon=True)
    loop.start()
    stop.wait()
    log.info("stopping")
    worker.stop()
    loop.join(5)
    zk.stop()


if __name__ == "__main__":
    main()

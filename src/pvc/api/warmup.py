"""Keep pvcapid's list latency flat: render the VM list as soon as the caches' snapshot is in (before
their watch phase takes the CPU), and keep the garbage collector's full passes off the request path.

At 10,000 VMs the API holds millions of long-lived objects (parsed records, rendered items);
every full collection walks all of them (~200 ms on our machines), which showed as the p99 of
`GET /vm`. After the caches load, the survivors are frozen (gc.freeze: never scanned again; they
are still freed by reference counting when replaced), newly settled objects are frozen every
REFREEZE seconds, and once an hour everything is unfrozen and collected in one pass, so cyclic
garbage cannot pile up.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

from pvc.cluster import vms
from pvc.core import schema
from pvc.core.zk import ZK

log = logging.getLogger(__name__)

LOAD_WAIT = 300.0
STATS_WAIT = 2.0
REFREEZE = 600.0
FULL_COLLECT = 3600.0


def warm_list(zk: ZK) -> None:
    """Render the whole VM list once (the /vms mirror calls this when its snapshot is in)."""
    try:
        started = time.monotonic()
        zk.live_cache(schema.VM_STATS, wait=STATS_WAIT)
        entries = vms.list_vms(zk)
        vms.list_json(zk, entries)
        log.info("VM list warmed: %d VMs in %.2f s", len(entries), time.monotonic() - started)
    except Exception as exc:                  # warming is an optimisation: never fatal
        log.warning("could not warm the VM list: %s", exc)


def start(zk: ZK) -> threading.Thread:
    thread = threading.Thread(target=_run, args=(zk,), name="warmup", daemon=True)
    thread.start()
    return thread


def _run(zk: ZK) -> None:
    mirror = zk.mirror(schema.VMS)
    if mirror is not None:                    # freeze what the snapshot and its watches built
        mirror.watching.wait(LOAD_WAIT)
    gc.collect()
    gc.freeze()
    last_full = time.monotonic()
    while True:
        time.sleep(REFREEZE)
        if time.monotonic() - last_full >= FULL_COLLECT:
            gc.unfreeze()
            gc.collect()
            last_full = time.monotonic()
        gc.freeze()

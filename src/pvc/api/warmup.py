"""Keep pvcapid's list latency flat: warm the VM list once the caches load, and keep the garbage
collector's full passes off the request path.

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
REFREEZE = 600.0
FULL_COLLECT = 3600.0


def start(zk: ZK) -> threading.Thread:
    thread = threading.Thread(target=_run, args=(zk,), name="warmup", daemon=True)
    thread.start()
    return thread


def _run(zk: ZK) -> None:
    deadline = time.monotonic() + LOAD_WAIT
    while time.monotonic() < deadline and (zk.live_cache(schema.VMS) is None
                                           or zk.live_cache(schema.VM_STATS) is None):
        time.sleep(0.1)
    try:
        started = time.monotonic()
        count = len(vms.list_vms(zk))
        vms.list_json(zk, vms.list_vms(zk))
        log.info("VM list warmed: %d VMs in %.2f s", count, time.monotonic() - started)
    except Exception as exc:                  # warming is an optimisation: never fatal
        log.warning("could not warm the VM list: %s", exc)
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

"""`storage.benchmark`: upstream's 8 fio tests against a fresh RBD volume of a pool; results under
/ceph/benchmarks/<job>.

Deliberate difference from upstream: the benchmark's volume is removed also when the benchmark
fails or is cancelled.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from pvc.adapters.ceph import Storage, StorageError, StorageExists, StorageNotFound
from pvc.adapters.osd import BENCHMARK_TESTS, BENCHMARK_VOLUME, OsdError
from pvc.core import schema
from pvc.core.errors import PVCError
from pvc.core.taskkinds import STORAGE_BENCHMARK
from pvc.core.units import parse_size
from pvc.worker.kinds.storage import common
from pvc.worker.kinds.storage.common import Stages, fail_on, task_reverter
from pvc.worker.registry import TaskContext, TaskFailed, task_kind

VOLUME_BUSY_TIMEOUT = 60.0    # a killed fio's watch on the benchmark volume expires within ~30 s


def _create_benchmark_volume(ctx: TaskContext, storage: Storage, pool: str, size: int) -> None:
    try:
        storage.create_volume(pool, BENCHMARK_VOLUME, size)
        return
    except StorageExists:
        if storage.watchers(pool, BENCHMARK_VOLUME):
            raise TaskFailed(f'A benchmark is already running on pool "{pool}" (volume "{BENCHMARK_VOLUME}" '
                             f"is in use)") from None
    ctx.log(f'removing a left-over volume "{BENCHMARK_VOLUME}" from pool "{pool}"')
    storage.remove_volume(pool, BENCHMARK_VOLUME)
    storage.create_volume(pool, BENCHMARK_VOLUME, size)


def _remove_benchmark_volume(storage: Storage, pool: str, timeout: float = VOLUME_BUSY_TIMEOUT) -> None:
    """Remove the test volume; a just-killed fio's watch can hold it for up to ~30 s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            storage.remove_volume(pool, BENCHMARK_VOLUME)
            return
        except StorageNotFound:
            return
        except StorageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(common.POLL)


@task_kind(STORAGE_BENCHMARK)
def storage_benchmark(ctx: TaskContext, pool: str, name: str | None = None, **_: Any) -> dict[str, Any]:
    """Upstream's 8 fio tests against a fresh RBD volume; results under /ceph/benchmarks/<job>."""
    job = name or f"{datetime.now().isoformat(timespec='seconds')}_{ctx.node}"
    cfg = ctx.settings.storage
    stages = Stages(ctx, 13)
    stages.start(f"Running storage benchmark '{job}' on pool '{pool}'")
    fio, storage = common.fio_runner_for(ctx.settings), common.storage_for(ctx.settings)
    path = schema.benchmark(job)
    with task_reverter(ctx) as revert:
        try:
            size = parse_size(cfg.benchmark_size, "storage.benchmark_size")
            fio.check()
            stages("Storing running status")
            if ctx.zk.exists(path):
                raise TaskFailed(f'A benchmark job named "{job}" already exists')
            ctx.zk.put(path, {"id": job, "job": job, "pool": pool, "test_format": 2, "node": ctx.node,
                              "benchmark_result": "Running"})
            revert.add(f"remove benchmark record {job}", lambda: ctx.zk.delete(path))
            stages("Creating benchmark volume")
            _create_benchmark_volume(ctx, storage, pool, size)
            results: dict[str, Any] = {}
            try:
                for test in BENCHMARK_TESTS:
                    stages(f"Running benchmark job '{test}'")
                    results[test] = fio.run_test(test, pool, BENCHMARK_VOLUME, cfg.benchmark_runtime,
                                                 poll=ctx.check_cancelled)
            except BaseException:
                try:
                    _remove_benchmark_volume(storage, pool)
                except Exception as exc:
                    ctx.log(f'could not remove volume "{BENCHMARK_VOLUME}" from pool "{pool}": {exc}')
                raise
            stages("Cleaning up benchmark volume")
            _remove_benchmark_volume(storage, pool)
            stages("Storing results")
            ctx.zk.put(path, {"id": job, "job": job, "pool": pool, "test_format": 2, "node": ctx.node,
                              "benchmark_result": results})
        except (StorageError, OsdError, PVCError) as exc:
            raise fail_on(exc, f"Storage benchmark {job} failed") from None
        revert.commit()
    stages("Done")
    return {"status": f"Storage benchmark {job} completed successfully", "job": job, "pool": pool}

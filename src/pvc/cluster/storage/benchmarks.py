"""Storage benchmarks: results kept in /ceph/benchmarks, and queueing a run (a task for the
primary's worker, which writes the result)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pvc.cluster import tasks as tasks_mod
from pvc.cluster.storage.common import check_name, safe_name
from pvc.cluster.storage.pools import get_pool
from pvc.core import schema
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.records import TaskRecord
from pvc.core.taskkinds import STORAGE_BENCHMARK, BenchmarkArgs
from pvc.core.zk import ZK


def benchmark_view(doc: Mapping[str, Any], job: str) -> dict[str, Any]:
    return {
        "id": str(doc.get("id", job)),
        "job": doc.get("job", job),
        "pool": doc.get("pool", ""),
        "test_format": doc.get("test_format", 0),
        "benchmark_result": doc.get("benchmark_result", "Running"),
    }


def list_benchmarks(zk: ZK, job: str | None = None) -> list[dict[str, Any]]:
    """Benchmark results, newest job first; `job` selects one job by exact name."""
    if job is not None and not safe_name(job):
        return []
    jobs = [job] if job else zk.children(schema.CEPH_BENCHMARKS)
    docs = zk.get_many([schema.benchmark(j) for j in jobs])
    out = [benchmark_view(docs[schema.benchmark(j)], j) for j in jobs
           if isinstance(docs.get(schema.benchmark(j)), dict)]
    return sorted(out, key=lambda item: str(item["job"]), reverse=True)


def run_benchmark(zk: ZK, pool: str, name: str | None = None) -> TaskRecord:
    """Queue `storage.benchmark` on the primary; without a job name the worker names it
    '<ISO time>_<primary>'."""
    check_name(pool, "pool")
    if name is not None and name != "":
        check_name(name, "name")
        if zk.exists(schema.benchmark(name)):
            raise Conflict(f'name: a benchmark job named "{name}" already exists.')
    try:
        get_pool(zk, pool)
    except NotFound as exc:
        raise InvalidInput(f"pool: {exc.message}") from None
    return tasks_mod.submit(zk, STORAGE_BENCHMARK, BenchmarkArgs(pool=pool, name=name or None),
                            target=tasks_mod.PRIMARY)

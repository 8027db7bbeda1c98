"""`pvc storage benchmark`: run fio benchmarks on a pool and show their results."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, cast

import click
from rich.console import Group, RenderableType

from pvc.cli.commands.storage.common import (
    BASE,
    NA,
    as_number,
    human_count,
    human_latency,
    human_size,
    list_items,
    plain,
    start_task,
    wait_flag,
)
from pvc.cli.errors import CLIError
from pvc.cli.output import json_formatters, key_values, table
from pvc.cli.state import confirm_option, format_option, get_state
from pvc.core.vocabulary import BENCHMARK_TESTS

# -- benchmark results -------------------------------------------------------------------------------

def benchmark_tests(result: Any) -> dict[str, Any] | None:
    """The per-test results of a benchmark, or None while it has none (upstream says "Running")."""
    if isinstance(result, str):
        try:
            result = json.loads(result)
        except ValueError:
            return None
    return result if isinstance(result, dict) else None


def benchmark_metrics(test: str, entry: Any) -> dict[str, Any]:
    """bandwidth (B/s), iops, lat_mean/lat_p50/lat_p99 (ns) of one test; missing values are None.

    Accepts fio's job result as such, fio's whole output (`{"jobs": [job]}`) and PVC's legacy
    format 0 (`{"overall": {"bandwidth": KiB/s, "iops": n}}`), because stored results outlive formats.
    """
    metrics: dict[str, Any] = {"bandwidth": None, "iops": None, "lat_mean": None, "lat_p50": None,
                               "lat_p99": None}
    if not isinstance(entry, dict):
        return metrics
    jobs = entry.get("jobs")
    if isinstance(jobs, list) and jobs and isinstance(jobs[0], dict):
        entry = jobs[0]
    if isinstance(entry.get("overall"), dict):  # legacy format 0
        overall = entry["overall"]
        kib = as_number(overall.get("bandwidth"))
        metrics["bandwidth"] = kib * 1024 if kib is not None else None
        metrics["iops"] = as_number(overall.get("iops"))
        return metrics
    preferred = ("write", "read") if "write" in test else ("read", "write")
    sides = [entry[io] for io in preferred if isinstance(entry.get(io), dict)]
    active = [s for s in sides if as_number(s.get("bw_bytes")) or as_number(s.get("iops"))]
    side: dict[str, Any] = (active or sides or [{}])[0]
    bandwidth = as_number(side.get("bw_bytes"))
    if bandwidth is None and as_number(side.get("bw")) is not None:
        bandwidth = cast(float, as_number(side.get("bw"))) * 1024  # fio's "bw" is KiB/s
    metrics["bandwidth"] = bandwidth
    metrics["iops"] = as_number(side.get("iops"))
    lat = side.get("lat_ns") if isinstance(side.get("lat_ns"), dict) else {}
    clat = side.get("clat_ns") if isinstance(side.get("clat_ns"), dict) else {}
    metrics["lat_mean"] = as_number(lat.get("mean", clat.get("mean")))
    percentiles = lat.get("percentile") if isinstance(lat.get("percentile"), dict) else \
        clat.get("percentile") if isinstance(clat.get("percentile"), dict) else {}
    metrics["lat_p50"] = as_number(percentiles.get("50.000000"))
    metrics["lat_p99"] = as_number(percentiles.get("99.000000"))
    return metrics


def _bandwidth(value: Any) -> str:
    return NA if value is None else f"{human_size(value)}/s"


def format_benchmark_info(benchmarks: Sequence[dict[str, Any]]) -> RenderableType:
    """One block per job: its identity, then a row per test with bandwidth, IOPS and latencies."""
    if not benchmarks:
        return "No benchmarks found."
    blocks: list[RenderableType] = []
    for bench in benchmarks:
        if blocks:
            blocks.append("")
        tests = benchmark_tests(bench.get("benchmark_result"))
        items: list[tuple[str, Any]] = [("Job", bench.get("job", NA))]
        if bench.get("pool"):
            items.append(("Pool", bench["pool"]))
        items.append(("Test format", plain(bench.get("test_format"))))
        if tests is None:
            items.append(("Result", str(bench.get("benchmark_result") or "Running")))
            blocks.append(key_values(items))
            continue
        blocks.append(key_values(items))
        blocks.append("")
        names = [t for t in BENCHMARK_TESTS if t in tests] + [t for t in tests if t not in BENCHMARK_TESTS]
        rows = []
        for name in names:
            m = benchmark_metrics(name, tests[name])
            rows.append([name, _bandwidth(m["bandwidth"]), human_count(m["iops"]),
                         *(human_latency(m[key]) for key in ("lat_mean", "lat_p50", "lat_p99"))])
        blocks.append(table(["Test", ("Bandwidth", "right"), ("IOPS", "right"), ("Lat mean", "right"),
                             ("Lat p50", "right"), ("Lat p99", "right")], rows))
    return Group(*blocks)


def benchmark_row(bench: dict[str, Any]) -> list[Any]:
    tests = benchmark_tests(bench.get("benchmark_result"))
    if tests is None:
        return [bench.get("job", ""), plain(bench.get("test_format")),
                *([str(bench.get("benchmark_result") or "Running")] * 4)]

    def pair(read: str, write: str, key: str, fmt: Callable[[Any], str]) -> str:
        return (f"{fmt(benchmark_metrics(read, tests.get(read))[key])} / "
                f"{fmt(benchmark_metrics(write, tests.get(write))[key])}")

    return [bench.get("job", ""), plain(bench.get("test_format")),
            pair("seq_read", "seq_write", "bandwidth", _bandwidth),
            pair("seq_read", "seq_write", "iops", human_count),
            pair("rand_read_4K", "rand_write_4K", "bandwidth", _bandwidth),
            pair("rand_read_4K", "rand_write_4K", "iops", human_count)]


def format_benchmark_list(benchmarks: Sequence[dict[str, Any]]) -> RenderableType:
    if not benchmarks:
        return "No benchmarks found."
    return table(["Job", "Format", "Sequential BW (r/w)", "Sequential IOPS (r/w)", "Random 4K BW (r/w)",
                  "Random 4K IOPS (r/w)"],
                 (benchmark_row(b) for b in sorted(benchmarks, key=lambda b: str(b.get("job", "")),
                                                   reverse=True)))


BENCHMARK_INFO_FORMATS = {"pretty": format_benchmark_info, **json_formatters()}
BENCHMARK_LIST_FORMATS = {"pretty": format_benchmark_list,
                          "raw": lambda bs: "\n".join(str(b.get("job")) for b in bs), **json_formatters()}


# -- benchmark ---------------------------------------------------------------------------------------

@click.group(name="benchmark", short_help="Run or view cluster storage benchmarks.")
def benchmark() -> None:
    """Run or view benchmarks of the storage cluster."""


@benchmark.command(name="run", short_help="Run a storage benchmark.")
@click.argument("pool")
@click.option("--name", "name", default=None, metavar="NAME",
              help="Name of the benchmark job [default: the start time and primary node].")
@wait_flag
@confirm_option("Storage benchmarks take approximately 10 minutes to run and generate significant load on "
                "the cluster; they should be run sparingly. Continue")
def benchmark_run(pool: str, name: str | None, wait: bool) -> None:
    """Run a storage benchmark on POOL (a 64G test volume, eight fio tests) in the background."""
    start_task("POST", f"{BASE}/benchmark", {"pool": pool, "name": name}, wait)


@benchmark.command(name="info", short_help="Show detailed storage benchmark results.")
@click.argument("jobs", metavar="JOB...", nargs=-1, required=True)
@format_option(BENCHMARK_INFO_FORMATS)
def benchmark_info(jobs: tuple[str, ...], formatter: Any) -> None:
    """Show the full results of the storage benchmark JOB(s): bandwidth, IOPS and latency per test."""
    state = get_state()
    results: list[dict[str, Any]] = []
    for job in jobs:
        found = list_items(f"{BASE}/benchmark", {"job": job})
        exact = [b for b in found if str(b.get("job")) == job]
        if not (exact or found):
            raise CLIError(f"Benchmark job {job} not found.")
        results.append((exact or found)[0])
    state.emit(results, formatter)


@benchmark.command(name="list", short_help="List storage benchmark results.")
@click.argument("job", required=False, default=None)
@format_option(BENCHMARK_LIST_FORMATS)
def benchmark_list(job: str | None, formatter: Any) -> None:
    """List all storage benchmarks (newest first); optionally only JOB."""
    state = get_state()
    state.emit(list_items(f"{BASE}/benchmark", {"job": job}), formatter)


COMMANDS: tuple[click.Command, ...] = (benchmark,)

"""`pvc storage`: the Ceph cluster behind the VMs — status, benchmarks, OSDs, pools, volumes, snapshots.

Everything goes over `/api/v1/storage/ceph/...` exactly as PVC's own client sends it (scalar
arguments as query parameters, the image of `volume upload` as a streamed multipart field `file`),
so this client works against upstream PVC and upstream's client works against us. OSD and
benchmark jobs are tasks (202): they are followed with a progress bar unless `--no-wait`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any, BinaryIO, TypeVar, cast

import click
from rich.console import Group, RenderableType
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.text import Text

from pvc.cli.client import decode
from pvc.cli.errors import CLIError
from pvc.cli.output import json_formatters, key_values, table
from pvc.cli.state import confirm_option, format_option, get_state
from pvc.cli.waiters import run_task
from pvc.core.errors import InvalidInput
from pvc.core.units import format_bytes, parse_size

F = TypeVar("F", bound=Callable[..., Any])

TIERS = ("default", "hdd", "ssd", "nvme")
IMAGE_FORMATS = ("raw", "vmdk", "qcow2", "qed", "vdi", "vpc")
BENCHMARK_TESTS = ("seq_read", "seq_write", "rand_read_4M", "rand_write_4M", "rand_read_4K", "rand_write_4K",
                   "rand_read_4K_lowdepth", "rand_write_4K_lowdepth")
REPLCFG_RE = re.compile(r"^(copies=\d+,mincopies=\d+|mincopies=\d+,copies=\d+)$")
BASE = "/storage/ceph"
NA = "N/A"
DB_RATIO = click.FloatRange(min=0, max=1, min_open=True, max_open=True)  # of the OSD size, e.g. 0.05


# -- value helpers -----------------------------------------------------------------------------------

def _value(data: Any, key: str) -> Any:
    """A stats value, or None when missing; PVC writes "|" while an OSD has not reported yet."""
    value = data.get(key) if isinstance(data, dict) else None
    return None if value in ("|", "") else value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def human_size(value: Any) -> str:
    """Bytes in binary units (1.5G). Sizes the API already made human ("1536M", "98.5 GiB") are
    re-rendered the same way so a column reads alike; anything else is shown as it came."""
    number = _number(value)
    if number is not None:
        return format_bytes(int(number))
    if isinstance(value, str):
        try:
            return format_bytes(parse_size(value))
        except InvalidInput:
            return value
    return NA if value is None else str(value)


def human_count(value: Any) -> str:
    """Operation counters in decimal units, as upstream shows them: 1234567 -> 1.2M."""
    number = _number(value)
    if number is None:
        return NA if value is None else str(value)
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(number) >= size:
            return f"{number / size:.1f}".removesuffix(".0") + unit
    return f"{number:.0f}"


def human_latency(nanoseconds: Any) -> str:
    number = _number(nanoseconds)
    if number is None:
        return NA
    for unit, size in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if number >= size:
            return f"{number / size:.2f}".rstrip("0").rstrip(".") + unit
    return f"{number:.0f}ns"


def _plain(value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, float):
        # small CRUSH weights (TiB: a 2 GiB OSD weighs 0.002) must not show as 0
        text = f"{value:.2f}" if abs(value) >= 0.1 or value == 0 else f"{value:.2g}"
        return text.rstrip("0").rstrip(".") if "." in text and "e" not in text else text
    return str(value)


def _flag(value: Any) -> Text:
    """OSD up/in: 1/0 (or booleans) as Yes/No in green/red."""
    if value is None:
        return Text(NA)
    yes = str(value).lower() in ("1", "true", "yes", "up", "in")
    return Text("Yes" if yes else "No", style="green" if yes else "red")


def _message(body: Any) -> str:
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return "" if body is None else str(body)


# -- formatters --------------------------------------------------------------------------------------

def format_ceph_text(data: Any) -> RenderableType:
    """`storage status`/`util`: Ceph's own text (`ceph status`, `ceph df`) under a short header."""
    if not isinstance(data, dict):
        return str(data)
    header = Text.assemble((f"Ceph cluster {data.get('type', 'status')} (primary node ", "bold"),
                           (str(data.get("primary_node") or NA), "blue"), (")", "bold"))
    return Group(header, "", Text(str(data.get("ceph_data") or "").rstrip("\n")))


CEPH_TEXT_FORMATS = {"pretty": format_ceph_text, **json_formatters()}


def _osd_sort_key(osd: dict[str, Any]) -> tuple[int, str]:
    osd_id = str(osd.get("id", ""))
    return (int(osd_id), "") if osd_id.isdigit() else (sys.maxsize, osd_id)


def osd_row(osd: dict[str, Any], with_db: bool) -> list[Any]:
    stats = osd.get("stats") if isinstance(osd.get("stats"), dict) else {}
    kb = _number(_value(stats, "kb"))
    device = str(osd.get("device") or NA) + (" [s]" if osd.get("is_split") else "")
    utilization = _number(_value(stats, "utilization"))
    row: list[Any] = [osd.get("id", ""), osd.get("node") or _value(stats, "node") or NA, device]
    if with_db:
        row.append(osd.get("db_device") or NA)
    row += [
        _flag(_value(stats, "up")), _flag(_value(stats, "in")),
        human_size(kb * 1024 if kb is not None else None),
        _plain(_value(stats, "pgs")), _plain(_value(stats, "weight")), _plain(_value(stats, "reweight")),
        human_size(_value(stats, "used")), human_size(_value(stats, "avail")),
        f"{utilization:.1f}%" if utilization is not None else NA,
        human_count(_value(stats, "rd_ops")), human_size(_value(stats, "rd_data")),
        human_count(_value(stats, "wr_ops")), human_size(_value(stats, "wr_data")),
    ]
    return row


def format_osd_list(osds: Sequence[dict[str, Any]]) -> RenderableType:
    if not osds:
        return "No OSDs found."
    with_db = any(o.get("db_device") for o in osds)
    columns: list[str | tuple[str, str]] = ["ID", "Node", "Device", *(["DB Device"] if with_db else []),
                                            "Up", "In", ("Size", "right"), ("PGs", "right"),
                                            ("Weight", "right"), ("Reweight", "right"), ("Used", "right"),
                                            ("Free", "right"), ("Util%", "right"), ("Read OPS", "right"),
                                            ("Read Data", "right"), ("Write OPS", "right"),
                                            ("Write Data", "right")]
    return table(columns, (osd_row(o, with_db) for o in sorted(osds, key=_osd_sort_key)))


OSD_LIST_FORMATS = {
    "pretty": format_osd_list,
    "raw": lambda osds: "\n".join(f"{o.get('id')}:{o.get('node')}:{o.get('device')}"
                                  for o in sorted(osds, key=_osd_sort_key)),
    **json_formatters(),
}


def _pool_sort_key(pool: dict[str, Any]) -> tuple[float, str]:
    pool_id = _number(_value(pool.get("stats"), "id"))
    return (pool_id if pool_id is not None else float("inf"), str(pool.get("name", "")))


def pool_row(pool: dict[str, Any]) -> list[Any]:
    stats = pool.get("stats") if isinstance(pool.get("stats"), dict) else {}
    used = _number(_value(stats, "used_percent"))
    stored = _value(stats, "stored_bytes")
    return [
        _plain(_value(stats, "id")), pool.get("name", ""), pool.get("tier") or "default",
        _plain(pool.get("pgs")), _plain(pool.get("volume_count")),
        human_size(stored if stored is not None else _value(stats, "used_bytes")),
        human_size(_value(stats, "free_bytes")),
        f"{used * 100:.1f}%" if used is not None else NA,  # Ceph reports a ratio
        *(_plain(_value(stats, key)) for key in ("num_objects", "num_object_clones", "num_object_copies",
                                                 "num_objects_degraded", "num_objects_unfound")),
        human_count(_value(stats, "read_ops")), human_size(_value(stats, "read_bytes")),
        human_count(_value(stats, "write_ops")), human_size(_value(stats, "write_bytes")),
    ]


POOL_COLUMNS: list[str | tuple[str, str]] = [
    ("ID", "right"), "Name", "Tier", ("PGs", "right"), ("Volumes", "right"), ("Stored", "right"),
    ("Free", "right"), ("Used%", "right"), ("Objects", "right"), ("Clones", "right"), ("Copies", "right"),
    ("Degraded", "right"), ("Unfound", "right"), ("Read OPS", "right"), ("Read Data", "right"),
    ("Write OPS", "right"), ("Write Data", "right"),
]


def format_pool_list(pools: Sequence[dict[str, Any]]) -> RenderableType:
    if not pools:
        return "No pools found."
    return table(POOL_COLUMNS, (pool_row(p) for p in sorted(pools, key=_pool_sort_key)))


POOL_LIST_FORMATS = {
    "pretty": format_pool_list,
    "raw": lambda pools: "\n".join(str(p.get("name")) for p in sorted(pools, key=_pool_sort_key)),
    **json_formatters(),
}


def _volume_key(volume: dict[str, Any]) -> tuple[str, str]:
    return str(volume.get("pool", "")), str(volume.get("name", ""))


def volume_row(volume: dict[str, Any]) -> list[Any]:
    stats = volume.get("stats") if isinstance(volume.get("stats"), dict) else {}
    features = stats.get("features")
    return [
        volume.get("name", ""), volume.get("pool", ""), human_size(_value(stats, "size")),
        _plain(_value(stats, "objects")), _plain(_value(stats, "order")), _plain(_value(stats, "format")),
        ",".join(str(f) for f in features) if isinstance(features, list) and features else NA,
        _plain(stats.get("snapshot_count", 0)),
    ]


def format_volume_list(volumes: Sequence[dict[str, Any]]) -> RenderableType:
    if not volumes:
        return "No volumes found."
    return table(["Name", "Pool", ("Size", "right"), ("Objects", "right"), ("Order", "right"),
                  ("Format", "right"), "Features", ("Snapshots", "right")],
                 (volume_row(v) for v in sorted(volumes, key=_volume_key)))


VOLUME_LIST_FORMATS = {
    "pretty": format_volume_list,
    "raw": lambda volumes: "\n".join(f"{v.get('pool')}/{v.get('name')}"
                                     for v in sorted(volumes, key=_volume_key)),
    **json_formatters(),
}


def _snapshot_key(snapshot: dict[str, Any]) -> tuple[str, str, str]:
    return str(snapshot.get("pool", "")), str(snapshot.get("volume", "")), str(snapshot.get("snapshot", ""))


def format_snapshot_list(snapshots: Sequence[dict[str, Any]]) -> RenderableType:
    if not snapshots:
        return "No snapshots found."
    return table(["Name", "Volume", "Pool"],
                 ([s.get("snapshot", ""), s.get("volume", ""), s.get("pool", "")]
                  for s in sorted(snapshots, key=_snapshot_key)))


SNAPSHOT_LIST_FORMATS = {
    "pretty": format_snapshot_list,
    "raw": lambda snapshots: "\n".join(f"{s.get('pool')}/{s.get('volume')}@{s.get('snapshot')}"
                                       for s in sorted(snapshots, key=_snapshot_key)),
    **json_formatters(),
}


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
        kib = _number(overall.get("bandwidth"))
        metrics["bandwidth"] = kib * 1024 if kib is not None else None
        metrics["iops"] = _number(overall.get("iops"))
        return metrics
    preferred = ("write", "read") if "write" in test else ("read", "write")
    sides = [entry[io] for io in preferred if isinstance(entry.get(io), dict)]
    active = [s for s in sides if _number(s.get("bw_bytes")) or _number(s.get("iops"))]
    side: dict[str, Any] = (active or sides or [{}])[0]
    bandwidth = _number(side.get("bw_bytes"))
    if bandwidth is None and _number(side.get("bw")) is not None:
        bandwidth = cast(float, _number(side.get("bw"))) * 1024  # fio's "bw" is KiB/s
    metrics["bandwidth"] = bandwidth
    metrics["iops"] = _number(side.get("iops"))
    lat = side.get("lat_ns") if isinstance(side.get("lat_ns"), dict) else {}
    clat = side.get("clat_ns") if isinstance(side.get("clat_ns"), dict) else {}
    metrics["lat_mean"] = _number(lat.get("mean", clat.get("mean")))
    percentiles = lat.get("percentile") if isinstance(lat.get("percentile"), dict) else \
        clat.get("percentile") if isinstance(clat.get("percentile"), dict) else {}
    metrics["lat_p50"] = _number(percentiles.get("50.000000"))
    metrics["lat_p99"] = _number(percentiles.get("99.000000"))
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
        items.append(("Test format", _plain(bench.get("test_format"))))
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
        return [bench.get("job", ""), _plain(bench.get("test_format")),
                *([str(bench.get("benchmark_result") or "Running")] * 4)]

    def pair(read: str, write: str, key: str, fmt: Callable[[Any], str]) -> str:
        return (f"{fmt(benchmark_metrics(read, tests.get(read))[key])} / "
                f"{fmt(benchmark_metrics(write, tests.get(write))[key])}")

    return [bench.get("job", ""), _plain(bench.get("test_format")),
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


# -- command plumbing --------------------------------------------------------------------------------

def wait_flag(function: F) -> F:
    """`--wait/--no-wait` for task commands (long form only: `-w` is `--weight` on OSD commands)."""
    return click.option("--wait/--no-wait", "wait", default=True, show_default=True,
                        help="Wait for the task to finish, showing progress.")(function)


def _size_arg(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse sizes that are not sizes before asking the API; the API gets the text as typed."""
    if value is None:
        return None
    try:
        parse_size(value, param.name or "size")
    except InvalidInput as exc:
        raise click.BadParameter(f"'{value}' is not a size (e.g. 10G, 512M)") from exc
    return value


def _replcfg_arg(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not REPLCFG_RE.match(value.replace(" ", "")):
        raise click.BadParameter(f"'{value}' is not of the form copies=N,mincopies=M")
    return value.replace(" ", "")


def _say(method: str, path: str, params: dict[str, Any] | None = None) -> None:
    """A call answered with `{"message": ...}`: print the message."""
    state = get_state()
    state.out(state.api().message(method, path, params=params))


def _task(method: str, path: str, params: dict[str, Any], wait: bool) -> None:
    """A call that starts a task (202): follow it or print where it runs; a 200 is printed as is."""
    state = get_state()
    response = state.api().call(method, path, params=params, ok=(200, 202))
    body = decode(response)
    if response.status_code == 202:
        run_task(state, body, wait)
    else:
        state.out(_message(body))


def _list(path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A list GET (an empty, 404 answer is an empty list)."""
    return [item for item in get_state().api().get_list(path, params=params) if isinstance(item, dict)]


# -- storage -----------------------------------------------------------------------------------------

@click.group(name="storage", short_help="Manage PVC storage.")
def group() -> None:
    """Manage and view the storage system (Ceph) of a PVC cluster."""


@group.command(name="status", short_help="Show storage cluster status.")
@format_option(CEPH_TEXT_FORMATS)
def status(formatter: Any) -> None:
    """Show the detailed status of the storage cluster (`ceph status` on the primary)."""
    state = get_state()
    state.emit(state.api().get_json(f"{BASE}/status"), formatter)


@group.command(name="util", short_help="Show storage cluster utilization.")
@format_option(CEPH_TEXT_FORMATS)
def util(formatter: Any) -> None:
    """Show the utilization of the storage cluster (`ceph df` on the primary)."""
    state = get_state()
    state.emit(state.api().get_json(f"{BASE}/utilization"), formatter)


# -- benchmark ---------------------------------------------------------------------------------------

@group.group(name="benchmark", short_help="Run or view cluster storage benchmarks.")
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
    _task("POST", f"{BASE}/benchmark", {"pool": pool, "name": name}, wait)


@benchmark.command(name="info", short_help="Show detailed storage benchmark results.")
@click.argument("jobs", metavar="JOB...", nargs=-1, required=True)
@format_option(BENCHMARK_INFO_FORMATS)
def benchmark_info(jobs: tuple[str, ...], formatter: Any) -> None:
    """Show the full results of the storage benchmark JOB(s): bandwidth, IOPS and latency per test."""
    state = get_state()
    results: list[dict[str, Any]] = []
    for job in jobs:
        found = _list(f"{BASE}/benchmark", {"job": job})
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
    state.emit(_list(f"{BASE}/benchmark", {"job": job}), formatter)


# -- osd ---------------------------------------------------------------------------------------------

@group.group(name="osd", short_help="Manage OSDs in the PVC storage cluster.")
def osd() -> None:
    """Manage the Ceph OSDs of the PVC cluster."""


@osd.command(name="create-db-vg", short_help="Create new OSD database volume group.")
@click.argument("node")
@click.argument("device")
@wait_flag
@confirm_option("Destroy all data on and create a new OSD database volume group on node {node} "
                "device {device}")
def osd_create_db_vg(node: str, device: str, wait: bool) -> None:
    """Create the OSD database volume group "osd-db" on node NODE with block device DEVICE.

    DEVICE is a block device path (e.g. /dev/nvme0n1) or a "detect:<NAME>:<HUMAN-SIZE>:<ID>" string.
    OSDs added later with --ext-db-ratio/--ext-db-size put their RocksDB/WAL on a logical volume
    there; it should be a very fast, high-endurance device, as all of those OSDs depend on it.
    """
    _task("POST", f"{BASE}/osddb", {"node": node, "device": device}, wait)


group.add_command(osd_create_db_vg)  # upstream offers it as `pvc storage create-db-vg` too


def _ext_db(ratio: float | None, size: str | None) -> None:
    if ratio is not None and size is not None:
        raise click.UsageError("Give either -r/--ext-db-ratio or -s/--ext-db-size, not both.")


@osd.command(name="add", short_help="Add new OSD.")
@click.argument("node")
@click.argument("device")
@click.option("-w", "--weight", "weight", type=float, default=1.0, show_default=True,
              help="Weight of the OSD(s) within the CRUSH map.")
@click.option("-r", "--ext-db-ratio", "ext_db_ratio", type=DB_RATIO,
              default=None, help="Put the OSD database on an external LV of this ratio of the OSD size "
                                 "(e.g. 0.05).")
@click.option("-s", "--ext-db-size", "ext_db_size", default=None, callback=_size_arg, metavar="SIZE",
              help="Put the OSD database on an external LV of this size (e.g. 20G).")
@click.option("-c", "--osd-count", "osd_count", type=click.IntRange(min=1), default=None,
              help="Split the device into this many OSDs (fast NVMe devices).")
@wait_flag
@confirm_option("Destroy all data on and create new OSD(s) on node {node} device {device}")
def osd_add(node: str, device: str, weight: float, ext_db_ratio: float | None, ext_db_size: str | None,
            osd_count: int | None, wait: bool) -> None:
    """Add a new Ceph OSD on node NODE with block device DEVICE (all data on it is destroyed).

    DEVICE is a block device path (e.g. /dev/sdb, /dev/disk/by-path/...; no partitions) or a
    "detect:<NAME>:<HUMAN-SIZE>:<ID>" string matched on the node (lsscsi, nvme list; ±3 % size).
    With -c/--osd-count the weight and any external DB size apply to each of the split OSDs.
    """
    _ext_db(ext_db_ratio, ext_db_size)
    _task("POST", f"{BASE}/osd", {"node": node, "device": device, "weight": weight,
                                  "ext_db_ratio": ext_db_ratio, "ext_db_size": ext_db_size,
                                  "osd_count": osd_count}, wait)


@osd.command(name="replace", short_help="Replace OSD block device.")
@click.argument("osdid")
@click.argument("new_device")
@click.option("-o", "--old-device", "old_device", default=None, metavar="DEVICE",
              help="The old block device, if known and valid (it is zapped).")
@click.option("-w", "--weight", "weight", type=float, default=None,
              help="New CRUSH weight of the OSD(s) [default: the old weight].")
@click.option("-r", "--ext-db-ratio", "ext_db_ratio", type=DB_RATIO,
              default=None, help="New external DB LV with this ratio of the OSD size [default: as before].")
@click.option("-s", "--ext-db-size", "ext_db_size", default=None, callback=_size_arg, metavar="SIZE",
              help="New external DB LV of this size [default: as before].")
@wait_flag
@confirm_option("Destroy all data on and replace OSD {osdid} (and peer split OSDs) with new device "
                "{new_device}")
def osd_replace(osdid: str, new_device: str, old_device: str | None, weight: float | None,
                ext_db_ratio: float | None, ext_db_size: str | None, wait: bool) -> None:
    """Replace the block device of OSD OSDID (and its split peers on the same device) with NEW_DEVICE.

    This is a removal and re-creation of the OSD(s): make sure the cluster is otherwise healthy.
    """
    _ext_db(ext_db_ratio, ext_db_size)
    _task("POST", f"{BASE}/osd/{osdid}", {"new_device": new_device, "old_device": old_device,
                                          "weight": weight, "ext_db_ratio": ext_db_ratio,
                                          "ext_db_size": ext_db_size, "yes-i-really-mean-it": "yes"}, wait)


@osd.command(name="refresh", short_help="Refresh (reimport) OSD device.")
@click.argument("osdid")
@click.argument("device")
@wait_flag
@confirm_option("Refresh OSD {osdid} (and peer split OSDs) on device {device}")
def osd_refresh(osdid: str, device: str, wait: bool) -> None:
    """Re-import the existing OSD OSDID from block DEVICE (e.g. into a rebuilt node); data is kept."""
    _task("PUT", f"{BASE}/osd/{osdid}", {"device": device}, wait)


@osd.command(name="remove", short_help="Remove OSD.")
@click.argument("osdid")
@click.option("-f", "--force", "force", is_flag=True, default=False,
              help="Carry on even if steps fail (e.g. the OSD is gone after a node rebuild).")
@wait_flag
@confirm_option("Remove and destroy data on OSD {osdid}")
def osd_remove(osdid: str, force: bool, wait: bool) -> None:
    """Remove the Ceph OSD OSDID from the cluster and destroy it.

    Set it out first ('pvc storage osd out') and let the cluster rebalance, or data is at risk.
    """
    _task("DELETE", f"{BASE}/osd/{osdid}", {"force": force, "yes-i-really-mean-it": "yes"}, wait)


@osd.command(name="in", short_help="Online OSD.")
@click.argument("osdid")
def osd_in(osdid: str) -> None:
    """Set the Ceph OSD OSDID in: data is placed on it again."""
    _say("POST", f"{BASE}/osd/{osdid}/state", {"state": "in"})


@osd.command(name="out", short_help="Offline OSD.")
@click.argument("osdid")
def osd_out(osdid: str) -> None:
    """Set the Ceph OSD OSDID out: its data moves to other OSDs."""
    _say("POST", f"{BASE}/osd/{osdid}/state", {"state": "out"})


@osd.command(name="set", short_help="Set OSD property.")
@click.argument("option", metavar="OPTION")
def osd_set(option: str) -> None:
    """Set (enable) the cluster-wide OSD flag OPTION, e.g. noout before maintenance.

    \b
    Flags: noout, noin, noup, nodown, pause, nobackfill, norebalance, norecover, noscrub,
           nodeep-scrub, notieragent, nosnaptrim, full
    """
    _say("POST", f"{BASE}/option", {"option": option, "action": "set"})


@osd.command(name="unset", short_help="Unset OSD property.")
@click.argument("option", metavar="OPTION")
def osd_unset(option: str) -> None:
    """Unset (disable) the cluster-wide OSD flag OPTION (see 'pvc storage osd set --help')."""
    _say("POST", f"{BASE}/option", {"option": option, "action": "unset"})


@osd.command(name="list", short_help="List cluster OSDs.")
@click.argument("limit", required=False, default=None)
@format_option(OSD_LIST_FORMATS)
def osd_list(limit: str | None, formatter: Any) -> None:
    """List the Ceph OSDs; optionally only those whose ID matches the regex LIMIT.

    Formats: pretty, raw (id:node:device), json, json-pretty.
    """
    state = get_state()
    state.emit(_list(f"{BASE}/osd", {"limit": limit}), formatter)


# -- pool --------------------------------------------------------------------------------------------

@group.group(name="pool", short_help="Manage RBD pools in the PVC storage cluster.")
def pool() -> None:
    """Manage the Ceph RBD pools of the PVC cluster."""


@pool.command(name="add", short_help="Add new RBD pool.")
@click.argument("name")
@click.argument("pgs", type=click.IntRange(min=1))
@click.option("-t", "--tier", "tier", type=click.Choice(TIERS), default="default", show_default=True,
              help="Device class of the OSDs the pool is limited to (default: all).")
@click.option("--replcfg", "replcfg", default="copies=3,mincopies=2", show_default=True,
              callback=_replcfg_arg,
              help="Replication: total copies, and the minimum of active copies to allow I/O.")
def pool_add(name: str, pgs: int, tier: str, replcfg: str) -> None:
    """Add a new Ceph RBD pool NAME with PGS placement groups (a power of 2, e.g. 64, 128, 256)."""
    _say("POST", f"{BASE}/pool", {"pool": name, "pgs": pgs, "replcfg": replcfg, "tier": tier})


@pool.command(name="remove", short_help="Remove RBD pool.")
@click.argument("name")
@confirm_option("Remove and destroy all data in RBD pool {name}")
def pool_remove(name: str) -> None:
    """Remove the Ceph RBD pool NAME and all volumes in it."""
    _say("DELETE", f"{BASE}/pool/{name}", {"yes-i-really-mean-it": "yes"})


@pool.command(name="set-pgs", short_help="Set PGs of an RBD pool.")
@click.argument("name")
@click.argument("pgs", type=click.IntRange(min=1))
@confirm_option("Adjust PG count of pool {name} to {pgs}")
def pool_set_pgs(name: str, pgs: int) -> None:
    """Set the placement group count of pool NAME to PGS (a power of 2); data is remapped."""
    _say("PUT", f"{BASE}/pool/{name}", {"pgs": pgs})


@pool.command(name="list", short_help="List cluster RBD pools.")
@click.argument("limit", required=False, default=None)
@format_option(POOL_LIST_FORMATS)
def pool_list(limit: str | None, formatter: Any) -> None:
    """List the Ceph RBD pools; optionally only those whose name matches the regex LIMIT.

    Formats: pretty, raw (names), json, json-pretty.
    """
    state = get_state()
    state.emit(_list(f"{BASE}/pool", {"limit": limit}), formatter)


# -- volume ------------------------------------------------------------------------------------------

@group.group(name="volume", short_help="Manage RBD volumes in the PVC storage cluster.")
def volume() -> None:
    """Manage the Ceph RBD volumes of the PVC cluster."""


@volume.command(name="add", short_help="Add new RBD volume.")
@click.argument("pool")
@click.argument("name")
@click.argument("size", callback=_size_arg)
@click.option("-f", "--force", "force", is_flag=True, default=False,
              help="Create it even if the pool would be more than 80% full.")
def volume_add(pool: str, name: str, size: str, force: bool) -> None:
    """Add a new RBD volume NAME of size SIZE (e.g. 1024M, 20G) in pool POOL."""
    _say("POST", f"{BASE}/volume", {"volume": name, "pool": pool, "size": size, "force": force})


class _UploadReader:
    """A binary file that reports progress as httpx reads it, chunk by chunk (never all at once)."""

    def __init__(self, handle: BinaryIO, advance: Callable[[int], None]) -> None:
        self.handle = handle
        self.name = handle.name
        self.advance = advance

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.advance(len(chunk))
        return chunk

    def fileno(self) -> int:  # lets httpx size the body from fstat, so it is sent with Content-Length
        return self.handle.fileno()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()


def open_image(path: str) -> BinaryIO:
    """Open the image to upload (a seam for tests)."""
    return open(path, "rb")


def upload_file(state: Any, filename: str, url: str, params: dict[str, Any]) -> Any:
    """POST the file streamed as the multipart field `file`, with a progress bar on a terminal;
    the API's response."""
    size = os.path.getsize(filename)
    show = not (state.quiet or state.silent) and sys.stderr.isatty()
    progress = Progress(BarColumn(), DownloadColumn(binary_units=True), TransferSpeedColumn(),
                        console=state.stderr_console(), disable=not show, transient=False)
    with open_image(filename) as handle, progress:
        bar = progress.add_task("upload", total=size)
        reader = _UploadReader(handle, lambda n: progress.advance(bar, n))
        files = {"file": (os.path.basename(filename), cast(IO[bytes], reader), "application/octet-stream")}
        return state.api().call("POST", url, params=params, files=files)


@volume.command(name="upload", short_help="Upload a local image file to RBD volume.")
@click.argument("pool")
@click.argument("name")
@click.argument("image_file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("-f", "--format", "image_format", type=click.Choice(IMAGE_FORMATS), default="raw",
              show_default=True, help="The format of the image file.")
@click.option("--file-size", "file_size", default=None, callback=_size_arg, metavar="SIZE",
              help="Size of the image data [default: the file's size, sent for non-raw formats].")
def volume_upload(pool: str, name: str, image_file: str, image_format: str, file_size: str | None) -> None:
    """Upload the disk image IMAGE_FILE into the existing RBD volume NAME in pool POOL.

    A raw image is written as is and must fit the volume; other formats are converted to raw
    with qemu-img on the cluster side. The file is streamed, never read whole into memory.
    """
    state = get_state()
    size = os.path.getsize(image_file)
    if file_size is not None:
        sent_size: int | None = parse_size(file_size)
    else:
        sent_size = size if image_format != "raw" else None
    response = upload_file(state, image_file, f"{BASE}/volume/{pool}/{name}/upload",
                           {"image_format": image_format, "file_size": sent_size})
    state.out(_message(decode(response)))


@volume.command(name="remove", short_help="Remove RBD volume.")
@click.argument("pool")
@click.argument("name")
@confirm_option("Remove and delete data of RBD volume {name} in pool {pool}")
def volume_remove(pool: str, name: str) -> None:
    """Remove the RBD volume NAME, with its snapshots and all data, from pool POOL."""
    _say("DELETE", f"{BASE}/volume/{pool}/{name}")


@volume.command(name="resize", short_help="Resize RBD volume.")
@click.argument("pool")
@click.argument("name")
@click.argument("size", callback=_size_arg)
@click.option("-f", "--force", "force", is_flag=True, default=False,
              help="Resize even if the pool would be more than 80% full.")
@confirm_option("Resize volume {name} in pool {pool} to size {size}")
def volume_resize(pool: str, name: str, size: str, force: bool) -> None:
    """Resize the RBD volume NAME in pool POOL to SIZE (e.g. 20G); a running VM sees it live."""
    _say("PUT", f"{BASE}/volume/{pool}/{name}", {"new_size": size, "force": force})


@volume.command(name="rename", short_help="Rename RBD volume.")
@click.argument("pool")
@click.argument("name")
@click.argument("new_name")
@confirm_option("Rename volume {name} in pool {pool} to {new_name}")
def volume_rename(pool: str, name: str, new_name: str) -> None:
    """Rename the RBD volume NAME in pool POOL to NEW_NAME."""
    _say("PUT", f"{BASE}/volume/{pool}/{name}", {"new_name": new_name})


@volume.command(name="clone", short_help="Clone RBD volume.")
@click.argument("pool")
@click.argument("name")
@click.argument("new_name")
@click.option("-f", "--force", "force", is_flag=True, default=False,
              help="Clone even if the pool would be more than 80% full.")
def volume_clone(pool: str, name: str, new_name: str, force: bool) -> None:
    """Copy the RBD volume NAME in pool POOL to a new, independent volume NEW_NAME in POOL."""
    _say("POST", f"{BASE}/volume/{pool}/{name}/clone", {"new_volume": new_name, "force": force})


@volume.command(name="list", short_help="List cluster RBD volumes.")
@click.argument("limit", required=False, default=None)
@click.option("-p", "--pool", "pool", default=None, help="Only volumes in this pool.")
@format_option(VOLUME_LIST_FORMATS)
def volume_list(limit: str | None, pool: str | None, formatter: Any) -> None:
    """List the RBD volumes; optionally only those whose name matches the regex LIMIT.

    Formats: pretty, raw (pool/name), json, json-pretty.
    """
    state = get_state()
    state.emit(_list(f"{BASE}/volume", {"limit": limit, "pool": pool}), formatter)


# -- volume snapshot ---------------------------------------------------------------------------------

@volume.group(name="snapshot", short_help="Manage RBD volume snapshots in the PVC storage cluster.")
def snapshot() -> None:
    """Manage the Ceph RBD volume snapshots of the PVC cluster."""


def _snapshot_question(verb: str) -> Callable[[dict[str, Any]], str]:
    return lambda kw: f'{verb} snapshot "{kw["name"]}" of volume "{kw["pool"]}/{kw["volume"]}"'


@snapshot.command(name="add", short_help="Add new RBD volume snapshot.")
@click.argument("pool")
@click.argument("volume")
@click.argument("name")
def snapshot_add(pool: str, volume: str, name: str) -> None:
    """Take a snapshot NAME of the RBD volume VOLUME in pool POOL.

    RBD snapshots are crash-consistent, not filesystem-aware: rolling back to a snapshot of a
    running VM's disk is like having pulled its power at that moment.
    """
    _say("POST", f"{BASE}/snapshot", {"snapshot": name, "volume": volume, "pool": pool})


@snapshot.command(name="rename", short_help="Rename RBD volume snapshot.")
@click.argument("pool")
@click.argument("volume")
@click.argument("name")
@click.argument("new_name")
def snapshot_rename(pool: str, volume: str, name: str, new_name: str) -> None:
    """Rename the snapshot NAME of RBD volume VOLUME in pool POOL to NEW_NAME."""
    _say("PUT", f"{BASE}/snapshot/{pool}/{volume}/{name}", {"new_name": new_name})


@snapshot.command(name="remove", short_help="Remove RBD volume snapshot.")
@click.argument("pool")
@click.argument("volume")
@click.argument("name")
@confirm_option(_snapshot_question("Remove"))
def snapshot_remove(pool: str, volume: str, name: str) -> None:
    """Remove the snapshot NAME of RBD volume VOLUME in pool POOL."""
    _say("DELETE", f"{BASE}/snapshot/{pool}/{volume}/{name}")


@snapshot.command(name="rollback", short_help="Roll back RBD volume to snapshot.")
@click.argument("pool")
@click.argument("volume")
@click.argument("name")
@confirm_option(_snapshot_question("Roll back to"))
def snapshot_rollback(pool: str, volume: str, name: str) -> None:
    """Roll the RBD volume VOLUME in pool POOL back to its snapshot NAME.

    Everything written since the snapshot is lost. Stop the VMs using the volume first: a rollback
    under active I/O corrupts it.
    """
    _say("POST", f"{BASE}/snapshot/{pool}/{volume}/{name}/rollback")


@snapshot.command(name="list", short_help="List cluster RBD volume snapshots.")
@click.argument("limit", required=False, default=None)
@click.option("-p", "--pool", "pool", default=None, help="Only snapshots of volumes in this pool.")
@click.option("-o", "--volume", "volume", default=None, help="Only snapshots of this volume.")
@format_option(SNAPSHOT_LIST_FORMATS)
def snapshot_list(limit: str | None, pool: str | None, volume: str | None, formatter: Any) -> None:
    """List the RBD volume snapshots; optionally only those whose name matches the regex LIMIT.

    Formats: pretty, raw (pool/volume@snapshot), json, json-pretty.
    """
    state = get_state()
    state.emit(_list(f"{BASE}/snapshot", {"limit": limit, "pool": pool, "volume": volume}), formatter)

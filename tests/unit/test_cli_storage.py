"""`pvc storage` against a scripted API (httpx.MockTransport): what each command sends (method,
path, query parameters, multipart body) and what it shows (tables, JSON, task progress, errors).

The real API is exercised by the integration tests; these pin the client's side of the protocol.
"""

# ruff: noqa: F811 - the fixtures imported from test_cli_flows are (by pytest's design) re-bound as arguments

from __future__ import annotations

import json
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
from click.testing import Result

from pvc.cli import upload
from pvc.cli.commands import storage as storagecli
from pvc.cli.output import render
from tests.unit.test_cli_flows import FakeApi, api, env, no_sleep, pvc, task_sequence  # noqa: F401

BASE = "/storage/ceph"


def run(api: FakeApi, env: dict[str, str], *args: str, input: str | None = None) -> Result:
    return pvc(api, env, "-q", "storage", *args, input=input)


def params(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


def accepted(task_name: str, run_on: str = "hv1") -> httpx.Response:
    return httpx.Response(202, json={"task_id": "ab12cd34", "task_name": task_name, "run_on": run_on},
                          headers={"Location": "/api/v1/tasks/ab12cd34"})


def succeed(api: FakeApi, status: str = "done") -> None:
    api.on("GET", "/tasks/ab12cd34", task_sequence([
        {"state": "PENDING", "current": 0, "total": 1, "status": "Pending job start"},
        {"state": "RUNNING", "current": 2, "total": 5, "status": "Zapping device"},
        {"state": "SUCCESS", "current": 5, "total": 5, "status": status},
    ]))


def fio_side(bw: int, iops: float, mean: float, p50: int, p99: int) -> dict[str, Any]:
    return {"bw_bytes": bw, "iops": iops,
            "lat_ns": {"mean": mean, "percentile": {"50.000000": p50, "99.000000": p99}}}


IDLE = {"bw_bytes": 0, "iops": 0.0, "lat_ns": {"mean": 0.0}}


def benchmark(job: str = "2024-05-01T10:00:00_hv1") -> dict[str, Any]:
    return {"id": "1", "job": job, "pool": "vms", "test_format": 2, "benchmark_result": {
        "seq_read": {"read": fio_side(1610612736, 384.0, 166_000_000, 160_000_000, 250_000_000),
                     "write": IDLE},
        "seq_write": {"read": IDLE,
                      "write": fio_side(524288000, 125.0, 500_000_000, 480_000_000, 900_000_000)},
        "rand_read_4K": {"read": fio_side(41943040, 10240.0, 6_200_000, 5_800_000, 12_000_000),
                         "write": IDLE},
        "rand_write_4K": {"read": IDLE,
                          "write": fio_side(8388608, 2048.0, 31_000_000, 29_000_000, 80_000_000)},
        "rand_read_4K_lowdepth": {"read": {"bw_bytes": 4096000, "iops": 1000.0, "lat_ns": {"mean": 950_000}}},
        "rand_write_4K_lowdepth": {"write": {"iops": 250.0}},  # incomplete on purpose: shown as N/A
    }}


# -- status / util -----------------------------------------------------------------------------------

def test_status_and_util_print_ceph_text(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", f"{BASE}/status", {"type": "status", "primary_node": "hv1",
                                     "ceph_data": "  cluster:\n    id: abc\n    health: HEALTH_OK\n"})
    api.on("GET", f"{BASE}/utilization", {"type": "utilization", "primary_node": "hv1",
                                          "ceph_data": "--- RAW STORAGE ---\nCLASS  SIZE\n"})
    result = run(api, env, "status")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Ceph cluster status (primary node hv1)\n\n  cluster:\n    id: abc\n" \
                            "    health: HEALTH_OK\n"
    result = run(api, env, "util")
    assert result.stdout.startswith("Ceph cluster utilization (primary node hv1)\n\n--- RAW STORAGE ---")
    assert json.loads(run(api, env, "util", "-f", "json").stdout)["type"] == "utilization"


def test_api_error_is_message_and_nonzero_exit(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", f"{BASE}/status", httpx.Response(500, json={"message": "Ceph cluster is unreachable"}))
    result = run(api, env, "status")
    assert result.exit_code == 1 and result.stderr == "Ceph cluster is unreachable\n"


# -- benchmark ---------------------------------------------------------------------------------------

def test_benchmark_run_confirms_then_waits(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", f"{BASE}/benchmark", accepted("storage.benchmark", "hv1 (primary)"))
    succeed(api, "SUCCESS: benchmark job 2024-05-01T10:00:00_hv1 completed")
    result = run(api, env, "benchmark", "run", "vms", input="n\n")
    assert result.exit_code == 1 and "significant load" in result.stderr and api.requests == []

    result = run(api, env, "benchmark", "run", "vms", "--name", "nightly", "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout == "SUCCESS: SUCCESS: benchmark job 2024-05-01T10:00:00_hv1 completed\n"
    post = api.sent("POST", f"{BASE}/benchmark")[0]
    assert params(post) == {"pool": "vms", "name": "nightly"} and post.content == b""
    assert len(api.sent("GET", "/tasks/ab12cd34")) == 3


def test_benchmark_run_no_wait(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", f"{BASE}/benchmark", accepted("storage.benchmark", "hv1 (primary)"))
    result = pvc(api, env, "-q", "-u", "storage", "benchmark", "run", "vms", "--no-wait")
    assert result.stdout == "Task ID: ab12cd34 assigned to node hv1 (primary)\n"
    assert params(api.requests[0]) == {"pool": "vms"} and api.sent("GET", "/tasks/ab12cd34") == []


def test_benchmark_info_table(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", f"{BASE}/benchmark", [benchmark()])
    result = run(api, env, "benchmark", "info", "2024-05-01T10:00:00_hv1")
    assert result.exit_code == 0, result.output
    assert params(api.requests[0]) == {"job": "2024-05-01T10:00:00_hv1"}
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Job:", "2024-05-01T10:00:00_hv1"]
    assert lines[2].split() == ["Test", "format:", "2"]
    assert lines[4].split() == ["Test", "Bandwidth", "IOPS", "Lat", "mean", "Lat", "p50", "Lat", "p99"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[5:]}
    assert list(rows) == ["seq_read", "seq_write", "rand_read_4K", "rand_write_4K", "rand_read_4K_lowdepth",
                          "rand_write_4K_lowdepth"]
    assert rows["seq_read"] == ["1.5G/s", "384", "166ms", "160ms", "250ms"]
    assert rows["seq_write"] == ["500M/s", "125", "500ms", "480ms", "900ms"]
    assert rows["rand_read_4K"] == ["40M/s", "10.2K", "6.2ms", "5.8ms", "12ms"]
    assert rows["rand_read_4K_lowdepth"] == ["3.9M/s", "1K", "950us", "N/A", "N/A"]
    assert rows["rand_write_4K_lowdepth"] == ["N/A", "250", "N/A", "N/A", "N/A"]


def test_benchmark_info_formats_and_errors(api: FakeApi, env: dict[str, str]) -> None:
    jobs = {"a": benchmark("a"), "b": {**benchmark("b"), "benchmark_result": json.dumps(
        benchmark("b")["benchmark_result"])}}  # stored results may come back as a JSON string
    api.on("GET", f"{BASE}/benchmark",
           lambda r: httpx.Response(200, json=[jobs[r.url.params["job"]]]) if r.url.params["job"] in jobs
           else httpx.Response(404, json={"message": "No benchmark found."}))
    data = json.loads(run(api, env, "benchmark", "info", "a", "b", "-f", "json").stdout)
    assert [d["job"] for d in data] == ["a", "b"]
    pretty = run(api, env, "benchmark", "info", "a", "b").stdout
    assert pretty.count("seq_read") == 2 and "1.5G/s" in pretty
    result = run(api, env, "benchmark", "info", "missing")
    assert result.exit_code == 1 and result.stderr == "Benchmark job missing not found.\n"
    assert run(api, env, "benchmark", "info").exit_code == 2  # JOB is required


def test_benchmark_list(api: FakeApi, env: dict[str, str]) -> None:
    running = {"id": "2", "job": "2024-06-01T10:00:00_hv1", "test_format": 2, "benchmark_result": "Running"}
    api.on("GET", f"{BASE}/benchmark", [benchmark(), running])
    result = run(api, env, "benchmark", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["Job", "Format"]
    assert lines[1].startswith("2024-06-01T10:00:00_hv1") and "Running" in lines[1]  # newest first
    assert lines[2].split() == ["2024-05-01T10:00:00_hv1", "2", "1.5G/s", "/", "500M/s", "384", "/", "125",
                                "40M/s", "/", "8M/s", "10.2K", "/", "2K"]
    assert params(api.requests[0]) == {}
    run(api, env, "benchmark", "list", "2024-06-01T10:00:00_hv1")
    assert params(api.requests[-1]) == {"job": "2024-06-01T10:00:00_hv1"}
    api.on("GET", f"{BASE}/benchmark", httpx.Response(404, json={"message": "No benchmark found."}))
    result = run(api, env, "benchmark", "list")
    assert result.exit_code == 0 and result.stdout == "No benchmarks found.\n"


# -- osd ---------------------------------------------------------------------------------------------

def test_osd_add_sends_query_and_waits(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", f"{BASE}/osd", accepted("osd.add", "hv2"))
    succeed(api, "Successfully created OSD(s) on device /dev/sdb")
    result = pvc(api, env, "storage", "osd", "add", "hv2", "/dev/sdb", "-w", "0.5", "-s", "20G", "-c", "2",
                 "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout == "SUCCESS: Successfully created OSD(s) on device /dev/sdb\n"
    assert "Task ID: ab12cd34 (osd.add) assigned to node hv2" in result.stderr
    post = api.sent("POST", f"{BASE}/osd")[0]
    assert params(post) == {"node": "hv2", "device": "/dev/sdb", "weight": "0.5", "ext_db_size": "20G",
                            "osd_count": "2"}


def test_osd_add_refuses_bad_input_without_calling_api(api: FakeApi, env: dict[str, str]) -> None:
    result = run(api, env, "osd", "add", "hv2", "/dev/sdb", "-r", "0.05", "-s", "20G", "--yes")
    assert result.exit_code == 2 and "not both" in result.stderr
    result = run(api, env, "osd", "add", "hv2", "/dev/sdb", "-c", "two", "--yes")
    assert result.exit_code == 2 and "'two' is not a valid integer" in result.stderr
    result = run(api, env, "osd", "add", "hv2", "/dev/sdb", "-s", "lots", "--yes")
    assert result.exit_code == 2 and "'lots' is not a size" in result.stderr
    result = run(api, env, "osd", "add", "hv2", "/dev/sdb", input="n\n")
    assert result.exit_code == 1 and 'Destroy all data on and create new OSD(s) on node "hv2" device ' \
                                     '"/dev/sdb"' in result.stderr
    assert api.requests == []


def test_osd_task_failure_exits_nonzero(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", f"{BASE}/osd", accepted("osd.add"))
    api.on("GET", "/tasks/ab12cd34", {"state": "FAILURE", "current": 1, "total": 1,
                                     "status": "ValueError: Device /dev/sdb has a partition table"})
    result = run(api, env, "osd", "add", "hv1", "/dev/sdb", "--yes")
    assert result.exit_code == 1
    assert result.stderr == "FAILURE: ValueError: Device /dev/sdb has a partition table\n"


def test_osd_add_rejected_by_api(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", f"{BASE}/osd", httpx.Response(400, json={"message": "Node hv9 is not present."}))
    result = run(api, env, "osd", "add", "hv9", "/dev/sdb", "--yes")
    assert result.exit_code == 1 and result.stderr == "Node hv9 is not present.\n"


def test_create_db_vg_at_both_places(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", f"{BASE}/osddb", accepted("osd.add_db_vg", "hv1"))
    for where in (["create-db-vg"], ["osd", "create-db-vg"]):
        result = run(api, env, *where, "hv1", "/dev/nvme0n1", "--yes", "--no-wait")
        assert result.stdout == "Task ID: ab12cd34 assigned to node hv1\n"
    expected = {"node": "hv1", "device": "/dev/nvme0n1"}
    assert [params(r) for r in api.sent("POST", f"{BASE}/osddb")] == [expected, expected]


def test_osd_replace_refresh_remove(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", f"{BASE}/osd/3", accepted("osd.replace"))
    api.on("PUT", f"{BASE}/osd/3", accepted("osd.refresh"))
    api.on("DELETE", f"{BASE}/osd/3", accepted("osd.remove"))
    succeed(api)
    result = run(api, env, "osd", "replace", "3", "/dev/sdc", "-o", "/dev/sdb", "-r", "0.05", "--yes")
    assert result.exit_code == 0 and result.stdout == "SUCCESS: done\n"
    assert params(api.sent("POST", f"{BASE}/osd/3")[0]) == {
        "new_device": "/dev/sdc", "old_device": "/dev/sdb", "ext_db_ratio": "0.05",
        "yes-i-really-mean-it": "yes"}

    result = run(api, env, "osd", "refresh", "3", "/dev/sdc", "--yes", "--no-wait")
    assert result.stdout == "Task ID: ab12cd34 assigned to node hv1\n"
    assert params(api.sent("PUT", f"{BASE}/osd/3")[0]) == {"device": "/dev/sdc"}

    result = run(api, env, "osd", "remove", "3", input="n\n")
    assert result.exit_code == 1 and api.sent("DELETE", f"{BASE}/osd/3") == []
    result = run(api, env, "osd", "remove", "3", "--force", "--no-wait", input="y\n")
    assert result.exit_code == 0 and "Task ID: ab12cd34" in result.stdout
    assert params(api.sent("DELETE", f"{BASE}/osd/3")[0]) == {"force": "true", "yes-i-really-mean-it": "yes"}
    run(api, env, "osd", "remove", "3", "--yes")
    assert params(api.sent("DELETE", f"{BASE}/osd/3")[1])["force"] == "false"


def test_osd_state_and_flags(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", f"{BASE}/osd/3/state", lambda r: {"message": f"Set OSD 3 {r.url.params['state']}."})
    api.on("POST", f"{BASE}/option",
           lambda r: {"message": f"{r.url.params['action']} {r.url.params['option']}"})
    assert run(api, env, "osd", "in", "3").stdout == "Set OSD 3 in.\n"
    assert run(api, env, "osd", "out", "3").stdout == "Set OSD 3 out.\n"
    assert run(api, env, "osd", "set", "noout").stdout == "set noout\n"
    assert run(api, env, "osd", "unset", "noout").stdout == "unset noout\n"
    assert [params(r) for r in api.sent("POST", f"{BASE}/option")] == [
        {"option": "noout", "action": "set"}, {"option": "noout", "action": "unset"}]
    api.on("POST", f"{BASE}/option", httpx.Response(400, json={"message": "Invalid option 'bogus'."}))
    result = run(api, env, "osd", "set", "bogus")
    assert result.exit_code == 1 and result.stderr == "Invalid option 'bogus'.\n"


OSDS = [
    {"id": "10", "node": "hv2", "device": "/dev/nvme0n1", "is_split": True, "db_device": "",
     "stats": {"node": "hv2", "up": 1, "in": 0, "kb": 104857600, "pgs": 33, "weight": 0.5, "reweight": 1.0,
               "used": 1610612736, "avail": "98.5G", "utilization": 1.5312, "var": 1.0, "rd_ops": 1234567,
               "rd_data": 5368709120, "wr_ops": 999, "wr_data": 2048}},
    {"id": "2", "node": "hv1", "device": "/dev/sdb", "is_split": False, "db_device": "",
     "stats": {"node": "|", "up": "|", "in": "|", "kb": "|", "pgs": "|", "weight": "|", "reweight": "|",
               "used": "|", "avail": "|", "utilization": "|", "rd_ops": "|", "rd_data": "|", "wr_ops": "|",
               "wr_data": "|"}},
]


def test_osd_list_table_raw_json(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", f"{BASE}/osd", OSDS)
    result = run(api, env, "osd", "list", "1")
    assert result.exit_code == 0, result.output
    assert params(api.requests[0]) == {"limit": "1"}
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[0] == ["ID", "Node", "Device", "Up", "In", "Size", "PGs", "Weight", "Reweight", "Used",
                        "Free", "Util%", "Read", "OPS", "Read", "Data", "Write", "OPS", "Write", "Data"]
    assert lines[1] == ["2", "hv1", "/dev/sdb", *["N/A"] * 13]  # not reported yet; sorted numerically
    assert lines[2] == ["10", "hv2", "/dev/nvme0n1", "[s]", "Yes", "No", "100G", "33", "0.5", "1", "1.5G",
                        "98.5G", "1.5%", "1.2M", "5G", "999", "2K"]
    assert run(api, env, "osd", "list", "-f", "raw").stdout == "2:hv1:/dev/sdb\n10:hv2:/dev/nvme0n1\n"
    assert json.loads(run(api, env, "osd", "list", "-f", "json").stdout) == OSDS
    api.on("GET", f"{BASE}/osd", httpx.Response(404, json={"message": "OSD not found."}))
    assert run(api, env, "osd", "list").stdout == "No OSDs found.\n"


# -- pool --------------------------------------------------------------------------------------------

def test_pool_add_params_and_validation(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", f"{BASE}/pool", {"message": "Created RBD pool 'vms' with 64 PGs"})
    result = run(api, env, "pool", "add", "vms", "64", "--tier", "ssd")
    assert result.exit_code == 0 and result.stdout == "Created RBD pool 'vms' with 64 PGs\n"
    assert params(api.requests[0]) == {"pool": "vms", "pgs": "64", "replcfg": "copies=3,mincopies=2",
                                       "tier": "ssd"}
    run(api, env, "pool", "add", "vms", "64", "--replcfg", "copies=2,mincopies=1")
    assert params(api.requests[-1])["replcfg"] == "copies=2,mincopies=1"
    assert params(api.requests[-1])["tier"] == "default"
    sent = len(api.requests)
    result = run(api, env, "pool", "add", "vms", "sixty")
    assert result.exit_code == 2 and "'sixty' is not a valid integer" in result.stderr
    result = run(api, env, "pool", "add", "vms", "64", "--replcfg", "three")
    assert result.exit_code == 2 and "copies=N,mincopies=M" in result.stderr
    result = run(api, env, "pool", "add", "vms", "64", "--tier", "tape")
    assert result.exit_code == 2 and "'tape' is not one of" in result.stderr
    assert len(api.requests) == sent
    api.on("POST", f"{BASE}/pool", httpx.Response(400, json={"message": "PGs must be a power of 2."}))
    result = run(api, env, "pool", "add", "vms", "63")
    assert result.exit_code == 1 and result.stderr == "PGs must be a power of 2.\n"


def test_pool_remove_and_set_pgs(api: FakeApi, env: dict[str, str]) -> None:
    api.on("DELETE", f"{BASE}/pool/vms", {"message": "Removed RBD pool 'vms' and all volumes."})
    api.on("PUT", f"{BASE}/pool/vms", {"message": "Set PGs of pool 'vms' to 128."})
    result = run(api, env, "pool", "remove", "vms", input="n\n")
    assert result.exit_code == 1 and 'Remove and destroy all data in RBD pool "vms"' in result.stderr
    assert api.requests == []
    result = run(api, env, "pool", "remove", "vms", "-y")
    assert result.exit_code == 0 and "Removed RBD pool" in result.stdout
    assert params(api.requests[0]) == {"yes-i-really-mean-it": "yes"}
    result = run(api, env, "pool", "set-pgs", "vms", "128", "--yes")
    assert result.stdout == "Set PGs of pool 'vms' to 128.\n"
    assert params(api.sent("PUT", f"{BASE}/pool/vms")[0]) == {"pgs": "128"}
    api.on("DELETE", f"{BASE}/pool/nope", httpx.Response(404, json={"message": "Pool nope not found."}))
    result = run(api, env, "pool", "remove", "nope", "--yes")
    assert result.exit_code == 1 and result.stderr == "Pool nope not found.\n"


POOLS = [
    {"name": "vms", "volume_count": 3, "tier": "default", "pgs": 64, "stats": {
        "id": 2, "stored_bytes": 1610612736, "free_bytes": 107374182400, "used_bytes": 4831838208,
        "used_percent": 0.0148, "num_objects": 412, "num_object_clones": 0, "num_object_copies": 1236,
        "num_objects_degraded": 5, "num_objects_missing_on_primary": 0, "num_objects_unfound": 0,
        "read_ops": 1500, "read_bytes": 1048576, "write_ops": 2500000, "write_bytes": 3221225472}},
    {"name": "fast", "volume_count": 0, "tier": "nvme", "pgs": 32, "stats": {"id": 1}},
]


def test_pool_list(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", f"{BASE}/pool", POOLS)
    result = run(api, env, "pool", "list")
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[0] == ["ID", "Name", "Tier", "PGs", "Volumes", "Stored", "Free", "Used%", "Objects",
                        "Clones", "Copies", "Degraded", "Unfound", "Read", "OPS", "Read", "Data", "Write",
                        "OPS", "Write", "Data"]
    assert lines[1] == ["1", "fast", "nvme", "32", "0", *["N/A"] * 12]
    assert lines[2] == ["2", "vms", "default", "64", "3", "1.5G", "100G", "1.5%", "412", "0", "1236", "5",
                        "0", "1.5K", "1M", "2.5M", "3G"]
    assert run(api, env, "pool", "list", "-f", "raw").stdout == "fast\nvms\n"
    assert json.loads(run(api, env, "pool", "list", "v", "-f", "json-pretty").stdout) == POOLS
    assert params(api.requests[-1]) == {"limit": "v"}


# -- volume ------------------------------------------------------------------------------------------

def test_volume_add_resize_rename_clone_remove(api: FakeApi, env: dict[str, str]) -> None:
    api.on("POST", f"{BASE}/volume", {"message": "Created RBD volume 'web1_disk0' of size '10G'."})
    api.on("PUT", f"{BASE}/volume/vms/web1_disk0", {"message": "ok"})
    api.on("POST", f"{BASE}/volume/vms/web1_disk0/clone", {"message": "cloned"})
    api.on("DELETE", f"{BASE}/volume/vms/web1_disk0", {"message": "removed"})
    result = run(api, env, "volume", "add", "vms", "web1_disk0", "10G")
    assert result.exit_code == 0 and result.stdout.startswith("Created RBD volume")
    assert params(api.requests[-1]) == {"volume": "web1_disk0", "pool": "vms", "size": "10G",
                                        "force": "false"}
    run(api, env, "volume", "add", "vms", "web1_disk0", "10G", "--force")
    assert params(api.requests[-1])["force"] == "true"

    assert run(api, env, "volume", "resize", "vms", "web1_disk0", "20G", "-f", "-y").exit_code == 0
    assert params(api.requests[-1]) == {"new_size": "20G", "force": "true"}
    assert run(api, env, "volume", "rename", "vms", "web1_disk0", "web2_disk0", "-y").exit_code == 0
    assert params(api.requests[-1]) == {"new_name": "web2_disk0"}
    assert run(api, env, "volume", "clone", "vms", "web1_disk0", "web1_copy").stdout == "cloned\n"
    assert params(api.requests[-1]) == {"new_volume": "web1_copy", "force": "false"}

    result = run(api, env, "volume", "remove", "vms", "web1_disk0", input="n\n")
    assert result.exit_code == 1
    assert 'Remove and delete data of RBD volume "web1_disk0" in pool "vms"' in result.stderr
    assert api.sent("DELETE", f"{BASE}/volume/vms/web1_disk0") == []
    assert run(api, env, "volume", "remove", "vms", "web1_disk0", "--yes").stdout == "removed\n"

    sent = len(api.requests)
    result = run(api, env, "volume", "add", "vms", "x", "big")
    assert result.exit_code == 2 and "'big' is not a size" in result.stderr
    assert len(api.requests) == sent
    api.on("POST", f"{BASE}/volume", httpx.Response(400, json={
        "message": "Error: Requested volume size is greater than the available free space in the pool"}))
    result = run(api, env, "volume", "add", "vms", "huge", "100T")
    assert result.exit_code == 1 and "greater than the available free space" in result.stderr


def multipart_parts(request: httpx.Request) -> dict[str, Message]:
    raw = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode() + request.content
    return {part.get_param("name", header="content-disposition"): part
            for part in message_from_bytes(raw).get_payload()}  # type: ignore[union-attr]


class SpyFile:
    """Records how the upload is read: chunk sizes, never the whole file at once."""

    def __init__(self, handle: BinaryIO, reads: list[int]) -> None:
        self.handle, self.reads, self.name = handle, reads, handle.name

    def read(self, size: int = -1) -> bytes:
        self.reads.append(size)
        return self.handle.read(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    def __enter__(self) -> SpyFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def test_volume_upload_streams_the_file(api: FakeApi, env: dict[str, str], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    image = tmp_path / "disk.qcow2"
    data = bytes(range(256)) * 1024 + b"tail"  # 256 KiB + 4: several chunks
    image.write_bytes(data)
    reads: list[int] = []
    monkeypatch.setattr(upload, "open_image",
                        lambda path: SpyFile(Path(path).open("rb"), reads))  # noqa: SIM115 - SpyFile closes
    api.on("POST", f"{BASE}/volume/vms/web1_disk0/upload",
           {"message": "Converted and uploaded file 'disk.qcow2' to volume 'vms/web1_disk0'."})
    result = run(api, env, "volume", "upload", "vms", "web1_disk0", str(image), "-f", "qcow2")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Converted and uploaded file 'disk.qcow2' to volume 'vms/web1_disk0'.\n"
    request = api.requests[0]
    assert params(request) == {"image_format": "qcow2", "file_size": str(len(data))}
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert int(request.headers["content-length"]) == len(request.content)  # sized, not chunked
    part = multipart_parts(request)["file"]
    assert part.get_filename() == "disk.qcow2" and part.get_payload(decode=True) == data
    assert reads and all(0 < size <= 64 * 1024 for size in reads)  # streamed in chunks
    assert len(reads) >= len(data) // (64 * 1024)


def test_volume_upload_raw_and_errors(api: FakeApi, env: dict[str, str], tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 4096)
    api.on("POST", f"{BASE}/volume/vms/web1_disk0/upload",
           httpx.Response(400, json={"message": "Image size 4096 does not match volume size 10737418240."}))
    result = run(api, env, "volume", "upload", "vms", "web1_disk0", str(image))
    assert result.exit_code == 1
    assert result.stderr == "Image size 4096 does not match volume size 10737418240.\n"
    assert params(api.requests[0]) == {"image_format": "raw"}  # raw: the volume size is the check
    run(api, env, "volume", "upload", "vms", "web1_disk0", str(image), "--file-size", "1M")
    assert params(api.requests[-1]) == {"image_format": "raw", "file_size": "1048576"}
    sent = len(api.requests)
    result = run(api, env, "volume", "upload", "vms", "web1_disk0", str(tmp_path / "missing.img"))
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = run(api, env, "volume", "upload", "vms", "web1_disk0", str(image), "-f", "iso")
    assert result.exit_code == 2 and "'iso' is not one of" in result.stderr
    assert len(api.requests) == sent


VOLUMES = [
    {"name": "web1_disk0", "pool": "vms", "stats": {
        "name": "web1_disk0", "id": "1f2e", "size": 10737418240, "objects": 2560, "order": 22,
        "object_size": 4194304, "snapshot_count": 2, "block_name_prefix": "rbd_data.1f2e", "format": 2,
        "features": ["layering", "exclusive-lock"], "op_features": [], "flags": []}},
    {"name": "db_disk0", "pool": "vms", "stats": {"size": "1536M", "objects": 384, "order": 22, "format": 2,
                                                  "features": []}},
]


def test_volume_list(api: FakeApi, env: dict[str, str]) -> None:
    api.on("GET", f"{BASE}/volume", VOLUMES)
    result = run(api, env, "volume", "list", "disk", "--pool", "vms")
    assert result.exit_code == 0, result.output
    assert params(api.requests[0]) == {"limit": "disk", "pool": "vms"}
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[0] == ["Name", "Pool", "Size", "Objects", "Order", "Format", "Features", "Snapshots"]
    assert lines[1] == ["db_disk0", "vms", "1.5G", "384", "22", "2", "N/A", "0"]
    assert lines[2] == ["web1_disk0", "vms", "10G", "2560", "22", "2", "layering,exclusive-lock", "2"]
    assert run(api, env, "volume", "list", "-f", "raw").stdout == "vms/db_disk0\nvms/web1_disk0\n"
    assert json.loads(run(api, env, "volume", "list", "-f", "json").stdout) == VOLUMES
    api.on("GET", f"{BASE}/volume", httpx.Response(404, json={"message": "Volume not found."}))
    assert run(api, env, "volume", "list").stdout == "No volumes found.\n"


# -- volume snapshot ---------------------------------------------------------------------------------

def test_snapshot_commands(api: FakeApi, env: dict[str, str]) -> None:
    path = f"{BASE}/snapshot/vms/web1_disk0/snap1"
    api.on("POST", f"{BASE}/snapshot", {"message": "Created snapshot 'snap1'."})
    api.on("PUT", path, {"message": "Renamed."})
    api.on("DELETE", path, {"message": "Removed."})
    api.on("POST", f"{path}/rollback", {"message": "Rolled back."})
    assert run(api, env, "volume", "snapshot", "add", "vms", "web1_disk0", "snap1").stdout == \
        "Created snapshot 'snap1'.\n"
    assert params(api.requests[-1]) == {"snapshot": "snap1", "volume": "web1_disk0", "pool": "vms"}
    assert run(api, env, "volume", "snapshot", "rename", "vms", "web1_disk0", "snap1", "snap2").stdout == \
        "Renamed.\n"
    assert params(api.requests[-1]) == {"new_name": "snap2"}

    result = run(api, env, "volume", "snapshot", "remove", "vms", "web1_disk0", "snap1", input="n\n")
    assert result.exit_code == 1 and 'Remove snapshot "snap1" of volume "vms/web1_disk0"' in result.stderr
    result = run(api, env, "volume", "snapshot", "rollback", "vms", "web1_disk0", "snap1", input="n\n")
    assert result.exit_code == 1 and 'Roll back to snapshot "snap1"' in result.stderr
    assert api.sent("DELETE", path) == [] and api.sent("POST", f"{path}/rollback") == []
    assert run(api, env, "volume", "snapshot", "remove", "vms", "web1_disk0", "snap1", "-y").stdout == \
        "Removed.\n"
    assert pvc(api, env, "-q", "-u", "storage", "volume", "snapshot", "rollback", "vms", "web1_disk0",
               "snap1").stdout == "Rolled back.\n"
    api.on("DELETE", path, httpx.Response(404, json={"message": "Snapshot 'snap1' does not exist."}))
    result = run(api, env, "volume", "snapshot", "remove", "vms", "web1_disk0", "snap1", "-y")
    assert result.exit_code == 1 and result.stderr == "Snapshot 'snap1' does not exist.\n"


def test_snapshot_list(api: FakeApi, env: dict[str, str]) -> None:
    snapshots = [{"pool": "vms", "volume": "web1_disk0", "snapshot": "b"},
                 {"pool": "vms", "volume": "web1_disk0", "snapshot": "a"},
                 {"pool": "backup", "volume": "x", "snapshot": "z"}]
    api.on("GET", f"{BASE}/snapshot", snapshots)
    result = run(api, env, "volume", "snapshot", "list", "-p", "vms", "-o", "web1_disk0")
    assert params(api.requests[0]) == {"pool": "vms", "volume": "web1_disk0"}
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines == [["Name", "Volume", "Pool"], ["z", "x", "backup"], ["a", "web1_disk0", "vms"],
                     ["b", "web1_disk0", "vms"]]
    assert run(api, env, "volume", "snapshot", "list", "-f", "raw").stdout == \
        "backup/x@z\nvms/web1_disk0@a\nvms/web1_disk0@b\n"
    assert json.loads(run(api, env, "volume", "snapshot", "list", "-f", "json").stdout) == snapshots
    api.on("GET", f"{BASE}/snapshot", httpx.Response(404, json={"message": "Snapshot not found."}))
    assert run(api, env, "volume", "snapshot", "list").stdout == "No snapshots found.\n"


# -- pure formatters ---------------------------------------------------------------------------------

def test_human_units() -> None:
    sizes = (0, 1536, 1610612736, "98.5G", "1536M", "2 GiB", "?", None)
    assert [storagecli.human_size(v) for v in sizes] == \
        ["0B", "1.5K", "1.5G", "98.5G", "1.5G", "2G", "?", "N/A"]
    assert [storagecli.human_count(v) for v in (999, 1000, 1234567, 2.5e9)] == ["999", "1K", "1.2M", "2.5G"]
    assert [storagecli.human_latency(v) for v in (850, 950_000, 1_250_000, 2e9, None)] == \
        ["850ns", "950us", "1.25ms", "2s", "N/A"]


def test_benchmark_metrics_is_lenient() -> None:
    whole_fio = {"jobs": [{"read": fio_side(1024, 1.0, 10, 9, 20), "write": IDLE}]}
    assert storagecli.benchmark_metrics("seq_read", whole_fio)["lat_p99"] == 20
    clat = {"write": {"bw_bytes": 2048, "iops": 2.0, "lat_ns": {"mean": 5},
                      "clat_ns": {"percentile": {"50.000000": 4, "99.000000": 8}}}}
    assert storagecli.benchmark_metrics("seq_write", clat) == {
        "bandwidth": 2048, "iops": 2.0, "lat_mean": 5, "lat_p50": 4, "lat_p99": 8}
    legacy = {"overall": {"bandwidth": "1000", "iops": "250"}}
    assert storagecli.benchmark_metrics("rand_read_4K", legacy)["bandwidth"] == 1024000
    assert storagecli.benchmark_metrics("seq_read", None)["iops"] is None
    assert storagecli.benchmark_metrics("seq_read", {"read": "garbage"})["bandwidth"] is None
    running = render(storagecli.format_benchmark_info([{"job": "j", "benchmark_result": "Running"}]))
    assert "Result: Running" in " ".join(running.split())

"""The storage benchmark: upstream PVC's fio tests against an RBD image, with resource averages.

fio needs its `rbd` ioengine (Debian's fio has it) and reads the cluster and the key from
CEPH_CONF/CEPH_KEYRING in its environment. Where fio lacks the engine (`fio --enghelp` does not
list it) the benchmark fails at once with a message saying so; there is no fallback that would
measure something else under the same name.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from pvc.adapters.osd.base import OsdError, Runner, run_command, tail
from pvc.core import vocabulary

BENCHMARK_VOLUME = "pvcbenchmark"
# upstream PVC's 8 tests (daemon-common/benchmark.py, test format 2)
BENCHMARK_TESTS: dict[str, dict[str, str]] = {
    "seq_read": {"direction": "read", "iodepth": "64", "bs": "4M", "rw": "read"},
    "seq_write": {"direction": "write", "iodepth": "64", "bs": "4M", "rw": "write"},
    "rand_read_4M": {"direction": "read", "iodepth": "64", "bs": "4M", "rw": "randread"},
    "rand_write_4M": {"direction": "write", "iodepth": "64", "bs": "4M", "rw": "randwrite"},
    "rand_read_4K": {"direction": "read", "iodepth": "64", "bs": "4K", "rw": "randread"},
    "rand_write_4K": {"direction": "write", "iodepth": "64", "bs": "4K", "rw": "randwrite"},
    "rand_read_4K_lowdepth": {"direction": "read", "iodepth": "1", "bs": "4K", "rw": "randread"},
    "rand_write_4K_lowdepth": {"direction": "write", "iodepth": "1", "bs": "4K", "rw": "randwrite"},
}
assert tuple(BENCHMARK_TESTS) == vocabulary.BENCHMARK_TESTS, "fio jobs must follow the vocabulary's tests"


def fio_argv(test: str, pool: str, volume: str, client: str, runtime: int) -> list[str]:
    spec = BENCHMARK_TESTS[test]
    return ["fio", f"--name={test}", "--ioengine=rbd", f"--clientname={client}", f"--pool={pool}",
            f"--rbdname={volume}", "--output-format=json", "--direct=1", "--randrepeat=1", "--numjobs=1",
            "--time_based", f"--runtime={runtime}", "--group_reporting", f"--iodepth={spec['iodepth']}",
            f"--bs={spec['bs']}", f"--readwrite={spec['rw']}"]


def fio_env(conffile: str, keyring: str) -> dict[str, str]:
    """librados inside fio finds the cluster and the key through these, not through argv."""
    return {**os.environ, "CEPH_CONF": conffile, "CEPH_KEYRING": keyring}


def fio_engines(enghelp: str) -> set[str]:
    """The ioengines `fio --enghelp` lists."""
    return {line.strip() for line in enghelp.splitlines()[1:] if line.strip()}


def parse_fio_output(stdout: str) -> dict[str, Any]:
    """fio's JSON report; it may print warnings before the JSON starts."""
    start = stdout.find("{")
    if start < 0:
        raise OsdError(f"fio printed no JSON report: {tail(stdout) or 'no output'}")
    try:
        data = json.loads(stdout[start:])
    except json.JSONDecodeError as exc:
        raise OsdError(f"fio's report is not JSON ({exc})") from None
    if not isinstance(data, dict) or not data.get("jobs"):
        raise OsdError("fio's report has no jobs")
    return data


class ResourceSampler:
    """Average CPU, memory and network use while a test runs (upstream's test format 2 fields)."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.ticks = 0
        self.sums: dict[str, float] = {}
        self.cpus = psutil.cpu_count(logical=True) or 1
        self.last_net = self._net()
        self.last_time = time.monotonic()
        self.procs: dict[int, Any] = {}

    def _net(self) -> tuple[int, int]:
        counters = self.psutil.net_io_counters(pernic=True)
        sent = sum(c.bytes_sent for name, c in counters.items() if name != "lo")
        recv = sum(c.bytes_recv for name, c in counters.items() if name != "lo")
        return sent, recv

    def sample(self) -> None:
        ps = self.psutil
        values = {"total_cpu": ps.cpu_percent(interval=None), "total_mem": ps.virtual_memory().percent}
        for name in ("ceph-osd", "ceph-mon"):
            values[f"{name}_cpu"] = values[f"{name}_mem"] = 0.0
        for proc in ps.process_iter(["name"]):
            name = proc.info.get("name")
            if name not in ("ceph-osd", "ceph-mon"):
                continue
            tracked = self.procs.setdefault(proc.pid, proc)   # cpu_percent needs the same object
            with contextlib.suppress(ps.Error):
                values[f"{name}_cpu"] += tracked.cpu_percent(interval=None)
                values[f"{name}_mem"] += tracked.memory_percent()
        now, net = time.monotonic(), self._net()
        elapsed = max(1e-3, now - self.last_time)
        values["sent"] = (net[0] - self.last_net[0]) * 8 / elapsed
        values["recv"] = (net[1] - self.last_net[1]) * 8 / elapsed
        self.last_net, self.last_time = net, now
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.ticks += 1

    def result(self) -> dict[str, Any]:
        n = max(1, self.ticks)

        def avg(key: str, per_cpu: bool = False) -> float:
            return round(self.sums.get(key, 0.0) / n / (self.cpus if per_cpu else 1), 2)

        return {
            "avg_cpu_util_percent": {"total": avg("total_cpu"), "ceph-mon": avg("ceph-mon_cpu", True),
                                     "ceph-osd": avg("ceph-osd_cpu", True)},
            "avg_memory_util_percent": {"total": avg("total_mem"), "ceph-mon": avg("ceph-mon_mem"),
                                        "ceph-osd": avg("ceph-osd_mem")},
            "avg_network_util_bps": {"sent": avg("sent"), "recv": avg("recv"),
                                     "total": round(avg("sent") + avg("recv"), 2)},
        }


class FioRunner:
    """Runs the benchmark's fio jobs against an RBD image on this node."""

    def __init__(self, conffile: str, keyring: str, client: str = "admin", run: Runner = run_command) -> None:
        self.conffile = conffile
        self.keyring = keyring
        self.client = client
        self.run = run

    def check(self) -> None:
        """Fail early and clearly where fio cannot benchmark RBD."""
        result = self.run(["fio", "--enghelp"], 30)
        if "rbd" not in fio_engines(result.stdout):
            raise OsdError("fio on this node has no rbd ioengine (fio --enghelp does not list it): install a "
                           "fio built with librbd (Debian's fio package is) to run storage benchmarks")

    def run_test(self, test: str, pool: str, volume: str, runtime: int,
                 poll: Callable[[], None] | None = None) -> dict[str, Any]:
        """One test; poll() is called about every second and may raise to abort (fio is killed).
        Returns the resource averages merged with fio's JSON report."""
        argv = fio_argv(test, pool, volume, self.client, runtime)
        try:
            child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL, env=fio_env(self.conffile, self.keyring))
        except FileNotFoundError:
            raise OsdError("fio is not installed on this node") from None
        sampler = ResourceSampler()
        out: dict[str, str] = {}
        reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), child.communicate(),
                                                                strict=True)),
                                  name=f"fio-{test}", daemon=True)
        reader.start()
        deadline = time.monotonic() + runtime + 300
        try:
            while reader.is_alive():
                reader.join(1.0)
                if reader.is_alive():
                    sampler.sample()
                    if poll is not None:
                        poll()
                    if time.monotonic() > deadline:
                        raise OsdError(f"fio test {test} did not finish within {runtime + 300}s")
        except BaseException:
            child.terminate()           # fio closes the image on SIGTERM: no watch left behind
            reader.join(10)
            if reader.is_alive():
                child.kill()
                reader.join(5)
            raise
        if child.returncode != 0:
            raise OsdError(f"fio test {test} failed (exit {child.returncode}): "
                           f"{tail(out.get('stderr', '') or out.get('stdout', ''))}")
        return {**sampler.result(), **parse_fio_output(out.get("stdout", ""))}

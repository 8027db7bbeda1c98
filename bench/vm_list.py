"""pvcapid VM list and define latency with 1,000 and 10,000 defined VMs.

Targets: `GET /api/v1/vm` p50 < 50 ms at 1,000 VMs and < 300 ms at 10,000 (issue 4); at 10,000 VMs
with 2,000 VM stats changes a second, p99 < 150 ms (issue 12); pvcapid's first complete list after
it starts, 10,000 VMs: < 2 s; `POST /api/v1/vm` (define one VM, checks included) p50 < 20 ms at both
sizes (issue 12). For each size, a fresh
cluster root on a private ZooKeeper gets 3 ready nodes and the VMs: the first 50 through
`pvc.cluster.vms.define` (the real path, checks included), the rest as the same VMRecord
documents (plus name index) in pipelined multi-op transactions, so set-up takes seconds. Every VM
also gets a running VMStatus and its stats in its node's stats shards (schema 5:
/vmstats/<node>/<shard>, schema.VM_STATS_SHARD = 50 VMs a shard), as a node reports for a running
VM. pvcapid then runs as a process (its own interpreter, uvicorn, the watched caches of /nodes,
/vms and /vmstats) and we time sequential list requests on one keep-alive connection; single-VM
GETs are shown for comparison.

With `--churn N`, N VMs' stats change per second during the timing, the way nodes write them: a
node's keepalive (every 5 s) rewrites all its stats shards in one pipelined burst, and leaves the
status documents alone. So each node rewrites all its shards every count/N seconds (10,000 VMs and
N = 2,000: 3 nodes x 67 shards every 5 s, the nodes staggered), and the list must re-render every
item whose shard changed. (Before schema 5 the same churn was N status documents a second under
/vms.) Run: `.venv/bin/python bench/vm_list.py [--sizes 1000 10000] [--churn 2000]`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import time
import uuid as uuidlib
from typing import Any

import httpx
import yaml

from _common import Daemon, ZooKeeperServer, free_port, percentile, table, wait_up, workdir, write_config
from pvc.cluster import vms
from pvc.core import domainxml, schema
from pvc.core.records import Memory, NodeRecord, Tag, VMRecord, VMStatus
from pvc.core.zk import ZK, encode

TARGETS_MS = {1000: 50.0, 10000: 300.0}
P99_CHURN_TARGET_MS = {10000: 150.0}     # with --churn 2000
FIRST_LIST_TARGET_S = {10000: 2.0}
DEFINE_TARGET_MS = 20.0
DEFINES = 100
SPAWN = multiprocessing.get_context("spawn")
SETTLE_S = 15.0
BATCH = 100
FILTERED = "/api/v1/vm?limit=^vm0010&state=start"   # vm00100..vm00109: 10 of the bulk-written VMs


def vm_xml(name: str, uuid: str) -> str:
    """A provisioner-like domain: 2 RBD disks, 2 NICs, serial console, VNC."""
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <description>Benchmark VM {name}</description>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  <cpu mode='host-model'><topology sockets='1' cores='2' threads='1'/></cpu>
  <os><type arch='x86_64' machine='pc-i440fx-2.7'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/><pae/></features>
  <clock offset='utc'/>
  <devices>
    <emulator>/usr/bin/kvm</emulator>
    <console type='pty'/>
    <serial type='pty'><log file='/var/log/libvirt/{name}.log' append='on'/></serial>
    <controller type='usb' index='0'/>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <disk type='network' device='disk'>
      <driver name='qemu' discard='unmap' cache='none'/>
      <source protocol='rbd' name='vms/{name}_sda'><host name='hv1' port='6789'/></source>
      <target dev='sda' bus='scsi'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' discard='unmap' cache='none'/>
      <source protocol='rbd' name='vms/{name}_sdb'><host name='hv1' port='6789'/></source>
      <target dev='sdb' bus='scsi'/>
    </disk>
    <interface type='bridge'><mac address='52:54:00:3a:7b:c1'/><source bridge='vmbr1001'/>
      <model type='virtio'/></interface>
    <interface type='bridge'><mac address='52:54:00:3a:7b:c2'/><source bridge='vmbr101'/>
      <model type='virtio'/></interface>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
  </devices>
</domain>"""


def status_doc(node: str) -> dict:
    doc = VMStatus(node=node, running=True, libvirt_state="running", vnc="127.0.0.1:5900",
                   updated=time.time()).doc()
    doc.pop("stats")                      # nodes write stats to their shards (schema 5)
    return doc


def stats_doc(tick: int = 0) -> dict:
    return {
        "mem_stats": {"actual": 1048576, "rss": 524288 + tick, "unused": 100000},
        "cpu_stats": {"cpu_time": 123456789 + tick, "user_time": 1000, "system_time": 500},
        "net_stats": [{"mac": "52:54:00:3a:7b:c1", "rd_bytes": tick, "wr_bytes": 2 * tick},
                      {"mac": "52:54:00:3a:7b:c2", "rd_bytes": tick, "wr_bytes": tick}],
        "disk_stats": [{"name": "vms/x_sda", "rd_req": tick, "wr_req": tick}],
    }


def shards(pairs: list[tuple[str, str]], tick: int) -> dict[str, dict[int, dict]]:
    """{node: {shard: {uuid: stats}}} as each node's keepalive lays them out (schema.vm_stats)."""
    size = schema.VM_STATS_SHARD
    out: dict[str, dict[int, dict]] = {}
    for node in sorted({n for _u, n in pairs}):
        uuids = sorted(u for u, n in pairs if n == node)
        out[node] = {i // size: {u: stats_doc(tick) for u in uuids[i:i + size]}
                     for i in range(0, len(uuids), size)}
    return out


def write_shards(zk: ZK, node: str, docs: dict[int, dict]) -> None:
    """One node's keepalive: all its shards in one pipelined burst."""
    pending = [zk.client.set_async(schema.vm_stats(node, i), encode(doc)) for i, doc in docs.items()]
    for result in pending:
        result.get(timeout=30)


def populate(zk: ZK, count: int) -> list[tuple[str, str]]:
    """Define `count` VMs; returns (uuid, node) pairs."""
    nodes = ["hv1", "hv2", "hv3"]
    for name in nodes:
        zk.put(schema.node(name), NodeRecord(
            name=name, daemon_state="run", domain_state="ready", cpu_count=64,
            memory=Memory(total=512000, free=400000, used=112000)).doc())
    zk.put(schema.PRIMARY_NODE, "hv1")
    out = []
    for index in range(min(50, count)):
        uuid = str(uuidlib.uuid4())
        record = vms.define(zk, vm_xml(f"vm{index:05d}", uuid), limit="hv1,hv2,hv3", user_tags=["bench"])
        out.append((record.uuid, record.node))
    pending = []
    for start in range(len(out), count, BATCH):
        tx = zk.transaction()
        for index in range(start, min(count, start + BATCH)):
            uuid, name, node = str(uuidlib.uuid4()), f"vm{index:05d}", nodes[index % 3]
            xml = vm_xml(name, uuid)
            record = VMRecord(uuid=uuid, name=name, xml=xml, state="start", node=node,
                              node_limit=nodes, tags=[Tag(name="bench")],
                              rbd_volumes=[f"vms/{name}_sda", f"vms/{name}_sdb"],
                              **vms.derived(domainxml.parse(xml), xml))   # as define writes it
            tx.create(schema.vm(uuid), encode(record.doc()))
            tx.create(schema.vm_name(name), encode(uuid))
            out.append((uuid, node))
        pending.append(tx.commit_async())
    for result in pending:
        for item in result.get(timeout=60):
            if isinstance(item, Exception):
                raise SystemExit(f"populate failed: {item!r}")
    statuses = [zk.client.create_async(schema.vm_status(uuid), encode(status_doc(node)))
                for uuid, node in out]
    for result in statuses:
        result.get(timeout=60)
    for node, docs in shards(out, 0).items():
        for shard, doc in docs.items():
            zk.create(schema.vm_stats(node, shard), doc, makepath=True)
    return out


def timed(client: httpx.Client, path: str, count: int, expect: int) -> list[float]:
    """Milliseconds per request (body fully read and parsed); a wrong answer stops the run."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200 or len(response.json()) != expect:
            raise SystemExit(f"GET {path}: {response.status_code} {response.text[:200]}")
    return samples


def timed_defines(client: httpx.Client, count: int) -> list[float]:
    """Milliseconds per `POST /vm` of a new VM (form fields, as PVC's CLI sends them)."""
    samples = []
    for index in range(count):
        uuid = str(uuidlib.uuid4())
        form = {"xml": vm_xml(f"new{index:04d}", uuid), "limit": "hv1,hv2,hv3", "user_tags": "bench"}
        start = time.perf_counter()
        response = client.post("/api/v1/vm", data=form)
        samples.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"POST /vm: {response.status_code} {response.text[:200]}")
    return samples


def wait_listed(client: httpx.Client, count: int) -> float:
    """Seconds until the API lists every VM (its cache has caught up), first answer included."""
    start = time.perf_counter()
    while time.perf_counter() - start < 120:
        response = client.get("/api/v1/vm")
        if response.status_code == 200 and len(response.json()) == count:
            return time.perf_counter() - start
        time.sleep(0.05)
    raise SystemExit("pvcapid did not list every VM within 120 s")


def churn(zk: ZK, pairs: list[tuple[str, str]], rate: int, stop: Any) -> None:
    """`rate` VMs' stats a second, as node keepalives write them: every node rewrites all its
    shards once per len(pairs)/rate seconds (its keepalive interval), the nodes staggered."""
    interval = len(pairs) / rate
    nodes = sorted({n for _u, n in pairs})
    step = interval / len(nodes)
    tick, turn = 0, 0
    started = time.monotonic()
    while not stop.is_set():
        node = nodes[turn % len(nodes)]
        if turn % len(nodes) == 0:
            tick += 1
            layout = shards(pairs, tick)
        write_shards(zk, node, layout[node])
        turn += 1
        stop.wait(max(0.0, started + turn * step - time.monotonic()))


def churn_process(address: str, root: str, pairs: list[tuple[str, str]], rate: int, stop: Any) -> None:
    """churn() in a process of its own, as the nodes are: its encoding work must not share the
    timing client's interpreter (it did, and showed as the client's p99)."""
    zk = ZK([address], root).start()
    try:
        churn(zk, pairs, rate, stop)
    finally:
        zk.stop()


Row = tuple[str, str, str, bool]


def run(server: ZooKeeperServer, count: int, requests: int, churn_rate: int) -> list[Row]:
    root = f"/bench-vm-{count}"
    base_dir = workdir(f"vm{count}")
    zk = ZK([server.address], root).start()
    daemon: Daemon | None = None
    stop = SPAWN.Event()
    try:
        schema.migrate(zk)
        started = time.perf_counter()
        pairs = populate(zk, count)
        setup_s = time.perf_counter() - started
        config = write_config(base_dir / "pvc.conf", [server.address], root, node="hv1",
                              logging={"level": "warning"})
        daemon = Daemon("pvc.api.daemon", config, base_dir / "pvcapid.log").start()
        api_settings = yaml.safe_load(config.read_text())["api"]
        port, token = api_settings["listen"]["port"], api_settings["token"][0]["token"]
        base = f"http://127.0.0.1:{port}"
        wait_up(daemon, base)
        with httpx.Client(base_url=base, headers={"X-Api-Key": token}, timeout=120) as client:
            first_s = wait_listed(client, count)
            # Steady state for the timings below: pvcapid's caches set their watches after their
            # snapshot (a few seconds at 10,000 VMs); the start-up itself is the figure above.
            time.sleep(SETTLE_S)
            timed(client, "/api/v1/vm", 5, count)  # warm-up
            size = len(client.get("/api/v1/vm").content)
            writer = None
            if churn_rate:
                writer = SPAWN.Process(target=churn_process, daemon=True,
                                       args=(server.address, root, pairs, churn_rate, stop))
                writer.start()
            lists = timed(client, "/api/v1/vm", requests, count)
            ones = timed(client, "/api/v1/vm/vm00025", max(requests, 100), 1)
            filtered = timed(client, FILTERED, requests, 10)
            defines = timed_defines(client, DEFINES)
            stop.set()
            if writer is not None:
                writer.join(30)
                if writer.is_alive():
                    writer.kill()
    finally:
        stop.set()
        if daemon is not None:
            daemon.stop()
        zk.delete(root)
        zk.stop()
        shutil.rmtree(base_dir, ignore_errors=True)

    target = TARGETS_MS.get(count)
    p50, p99 = percentile(lists, 50), percentile(lists, 99)
    p99_target = P99_CHURN_TARGET_MS.get(count) if churn_rate >= 2000 else None
    first_target = FIRST_LIST_TARGET_S.get(count)
    define_p50 = percentile(defines, 50)
    label = f"{count} VMs" + (f", {churn_rate} VM stats/s in shards" if churn_rate else "")
    print(f"  [{label}] set-up {setup_s:.1f} s; pvcapid's first full list after start {first_s:.2f} s; "
          f"list body {size / 1048576:.1f} MiB")
    return [
        (f"GET /vm p50 (ms) [{label}]", f"{p50:.1f}", f"< {target:.0f}" if target else "-",
         p50 < target if target else True),
        (f"GET /vm p99 (ms) [{label}]", f"{p99:.1f}", f"< {p99_target:.0f}" if p99_target else "-",
         p99 < p99_target if p99_target else True),
        (f"first complete list after start (s) [{count} VMs]", f"{first_s:.2f}",
         f"< {first_target:.0f}" if first_target else "-", first_s < first_target if first_target else True),
        (f"POST /vm define p50 / p99 (ms) [{label}]", f"{define_p50:.1f} / {percentile(defines, 99):.1f}",
         f"< {DEFINE_TARGET_MS:.0f} (p50)", define_p50 < DEFINE_TARGET_MS),
        (f"GET /vm mean / max (ms) [{label}]", f"{statistics.fmean(lists):.1f} / {max(lists):.1f}", "-",
         True),
        (f"GET {FILTERED.removeprefix('/api/v1')} p50 (ms) [{label}]", f"{percentile(filtered, 50):.1f}",
         "-", True),
        (f"GET /vm/vm00025 p50 / p99 (ms) [{label}]",
         f"{percentile(ones, 50):.2f} / {percentile(ones, 99):.2f}", "< 5 (p50)", percentile(ones, 50) < 5),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description="pvcapid VM list latency")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--churn", type=int, default=0,
                        help="VM stats refreshed per second while timing (written as node stats shards)")
    args = parser.parse_args()
    base_dir = workdir("vmzk")
    # 10,000 VM documents in pipelined transactions need more than the 128 MiB test default heap.
    server = ZooKeeperServer(base_dir / "zk", free_port(), heap_mb=512).start()
    rows: list[Row] = []
    try:
        for count in args.sizes:
            rows += run(server, count, args.requests, args.churn)
    finally:
        server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)
    table(f"pvcapid GET /api/v1/vm, {args.requests} sequential requests per size, one keep-alive connection",
          rows)
    return 0 if all(met for *_rest, met in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

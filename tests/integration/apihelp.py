"""Helpers for the API tests: fake node documents and a stand-in for the node daemons' reactions."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from pvc.adapters.ceph.fake import FakeStorage
from pvc.api.app import create_app
from pvc.core import schema
from pvc.core.config import load_config
from pvc.core.records import NodeRecord
from pvc.core.zk import ZK
from tests.conftest import API_TOKEN, Api, wait_for

HEADERS = {"X-Api-Key": API_TOKEN}


def node_record(name: str, **fields: Any) -> NodeRecord:
    defaults: dict[str, Any] = {"mode": "coordinator", "daemon_state": "run",
                                "coordinator_state": "secondary", "domain_state": "ready",
                                "pvc_version": "1.0.3", "cpu_count": 4,
                                "kernel": "6.1.0", "os": "linux", "arch": "x86_64", "keepalive": 1.7e9}
    return NodeRecord(name=name, **{**defaults, **fields})


def register_nodes(zk: ZK, api: Api | None, *records: NodeRecord) -> None:
    """Write node documents as node daemons would; wait until the API's node cache has them."""
    for record in records:
        zk.put(schema.node(record.name), record.doc())
    if api is None:
        return
    wanted = {r.name: r.doc() for r in records}

    def cached() -> bool:
        response = api.get("/node")
        if response.status_code != 200:
            return False
        seen = {n["name"]: n for n in response.json()}
        return all(name in seen and seen[name]["domain_state"] == doc["domain_state"]
                   for name, doc in wanted.items())

    wait_for(cached, 10, 0.02, "the API's node cache to show the registered nodes")


def standard_cluster(zk: ZK, api: Api | None) -> list[NodeRecord]:
    """hv1 primary, hv2/hv3 secondary coordinators, hv4 a hypervisor that is flushed, hv5 dead."""
    records = [
        node_record("hv1", coordinator_state="primary"),
        node_record("hv2"),
        node_record("hv3"),
        node_record("hv4", mode="hypervisor", coordinator_state="client", domain_state="flushed"),
        node_record("hv5", mode="hypervisor", coordinator_state="client", daemon_state="dead",
                    domain_state="flushed", health=None),
    ]
    zk.put(schema.PRIMARY_NODE, "hv1")
    register_nodes(zk, api, *records)
    return records


@contextmanager
def node_daemons_react(zk: ZK, interval: float = 0.05) -> Iterator[None]:
    """Stand in for node daemons: finish flush -> flushed and unflush -> ready requests."""
    done = {"flush": "flushed", "unflush": "ready"}
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            for name in zk.children(schema.NODES):
                doc = zk.get(schema.node(name), None)
                if isinstance(doc, dict) and doc.get("domain_state") in done:
                    zk.update(schema.node(name), lambda d: {**d, "domain_state": done.get(
                        d.get("domain_state"), d.get("domain_state"))})

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def raw_request(api: Api, method: str, path: str) -> tuple[int, Any]:
    """Send path exactly as given (httpx would resolve `..` segments itself); (status, JSON body)."""
    connection = http.client.HTTPConnection(api.base.removeprefix("http://"), timeout=10)
    try:
        connection.request(method, "/api/v1" + path, headers=HEADERS)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def message_text(message: Any) -> str:
    """A message as text: argument errors (`{"<argument>": "<what>"}`) as '<argument>: <what>; ...'."""
    if isinstance(message, dict):
        return "; ".join(f"{name}: {what}" for name, what in message.items())
    return str(message)


def refused(response: httpx.Response, status: int, *words: str) -> str:
    """The refusal's message (as text), which must name every one of `words`."""
    assert response.status_code == status, response.text
    text = message_text(response.json()["message"])
    for word in words:
        assert word in text, text
    return text


@contextmanager
def storage_client(config_factory: Callable[..., Path], zk: ZK, storage: FakeStorage,
                   pool: bool = False) -> Iterator[TestClient]:
    """The API in-process over a FakeStorage, on the standard cluster; with `pool`, pool `vms`
    (32 PGs, 3 copies) exists."""
    standard_cluster(zk, None)
    app = create_app(load_config(str(config_factory())), zk, storage=storage)
    with TestClient(app, headers={"X-Api-Key": API_TOKEN}) as client:
        if pool:
            ok(client.post("/api/v1/storage/ceph/pool", params={"pool": "vms", "pgs": 32,
                                                                "replcfg": "copies=3,mincopies=2"}))
        yield client

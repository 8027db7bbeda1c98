"""Live pages: server-sent events that push re-rendered fragments when ZooKeeper changes.

A page that updates itself names a *view*: a function reading its data through the same
pvc.cluster functions the API routes call, and the fragment templates (by element id) that show
it. Its browser opens an EventSource on `/events/...`; every browser on the same URL shares one
*channel*, which renders the view once for all of them and sends only the fragments whose HTML
changed, as one `fragments` event `{element id: html}`.

A channel renders again when ZooKeeper tells pvcapid something changed: the watch caches the API
already keeps (nodes, VMs, VM stats, fencing) and the ones the hub adds (faults, tasks, OSDs), the
cluster and primary documents, and the paths a view names itself (a node's or a task's log).
Watches only wake it (DESIGN D2); it also renders every PERIOD seconds, and never more often than
every MIN_INTERVAL (longer when a render is slow), so a burst of changes costs one render.

A stream re-checks its session every AUTH_RECHECK seconds without counting as use (an open tab
does not keep a session from idling out) and says `expired` when it has ended; it closes itself
after STREAM_LIFETIME and the browser reconnects, so no stream outlives its checks for long.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from markupsafe import escape

from pvc.api.auth import Authenticator
from pvc.api.web import render
from pvc.api.web.guard import UIUser
from pvc.core import schema
from pvc.core.errors import PVCError
from pvc.core.zk import ZK

log = logging.getLogger(__name__)

PERIOD = 5.0                 # seconds between renders when nothing woke the channel
MIN_INTERVAL = 0.25          # seconds between two renders of one channel, at least
SLOW_FACTOR = 4              # ... or this many times the last render's duration
HEARTBEAT = 15.0             # a comment line this often keeps proxies and dead peers honest
AUTH_RECHECK = 30.0
STREAM_LIFETIME = 300.0
RETRY_MS = 3000
# Trees whose watch caches wake channels: made by pvcapid's daemon already, listened to when present.
SHARED_MIRRORS = (schema.NODES, schema.VMS, schema.VM_STATS, schema.FENCING)
# Trees the hub caches itself (only their change notices are used; readers still read directly).
OWN_MIRRORS = (schema.FAULTS, schema.TASKS, schema.CEPH_OSDS)
WATCHED_DOCS = (schema.CLUSTER, schema.PRIMARY_NODE)


@dataclass(frozen=True)
class View:
    """What a live page shows: `data()` reads it (in a worker thread), `fragments` maps element
    ids to the fragment templates that show it, `watch` names znodes whose changes matter too."""

    data: Callable[[], Mapping[str, Any]]
    fragments: Mapping[str, str]
    watch: tuple[str, ...] = ()

    def render(self) -> dict[str, str]:
        context = self.data()
        return {element: render.fragment(template, context) for element, template in self.fragments.items()}


@dataclass(eq=False)
class Subscriber:
    pending: dict[str, str] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, fragments: Mapping[str, str]) -> None:
        self.pending.update(fragments)
        self.ready.set()

    async def next(self, timeout: float) -> dict[str, str]:
        """The fragments changed since the last call ({} after `timeout` without any)."""
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            return {}
        self.ready.clear()
        out, self.pending = self.pending, {}
        return out


@dataclass(eq=False)
class Channel:
    key: str
    view: View
    subscribers: set[Subscriber] = field(default_factory=set)
    snapshot: dict[str, str] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    closed: bool = False


class Hub:
    """One per pvcapid: the channels, and the ZooKeeper watches that wake them."""

    def __init__(self, zk: ZK) -> None:
        self.zk = zk
        self.generation = 0
        self.renders = 0                     # renders done (tests and benchmarks read it)
        self._channels: dict[str, Channel] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._started = False
        self._start_lock = threading.Lock()

    # -- change notices (any thread) ------------------------------------------------------------

    def notify(self, *_args: Any) -> None:
        self.generation += 1
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = asyncio.Event()

    async def changed(self, since: int, timeout: float) -> None:
        """Return when anything changed after generation `since`, or after `timeout`."""
        if self.generation != since or self._event is None:
            return
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass

    def _start_watches(self) -> None:
        """Listen to the watch caches and documents (once; they live as long as pvcapid). A watch
        that cannot be set now (ZooKeeper away) is logged; the periodic renders still come."""
        with self._start_lock:
            if self._started:
                return
            self._started = True
        for path in OWN_MIRRORS:
            self.zk.cache(path)
        for path in SHARED_MIRRORS + OWN_MIRRORS:
            mirror = self.zk.mirror(path)
            if mirror is not None:
                mirror.listen(self.notify)
        for path in WATCHED_DOCS:
            try:
                self.zk.watch_data(path, self.notify)
            except Exception as exc:
                log.warning("live updates: no watch on %s (%s); pages still refresh every %.0f s",
                            path, exc, PERIOD)

    def _watch_path(self, channel: Channel, path: str) -> None:
        def changed(*_args: Any) -> bool:
            if channel.closed:
                return False          # kazoo stops this watch
            self.notify()
            return True

        self.zk.watch_data(path, changed)

    # -- channels (event loop) --------------------------------------------------------------------

    async def subscribe(self, key: str, view: View) -> tuple[Subscriber, Channel]:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
        if not self._started:
            await run_in_threadpool(self._start_watches)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = Channel(key, view)
            for path in view.watch:
                try:
                    await run_in_threadpool(self._watch_path, channel, path)
                except Exception as exc:
                    log.warning("live updates: no watch on %s (%s); the page still refreshes every "
                                "%.0f s", path, exc, PERIOD)
        subscriber = Subscriber()
        channel.subscribers.add(subscriber)
        if channel.snapshot:
            subscriber.offer(channel.snapshot)
        if channel.task is None:
            channel.task = asyncio.get_running_loop().create_task(self._run(channel))
        return subscriber, channel

    def unsubscribe(self, channel: Channel, subscriber: Subscriber) -> None:
        channel.subscribers.discard(subscriber)

    async def _run(self, channel: Channel) -> None:
        try:
            while channel.subscribers:
                generation = self.generation
                began = time.monotonic()
                try:
                    fragments = await run_in_threadpool(channel.view.render)
                except PVCError as exc:          # ZooKeeper away, the object gone: say so, keep trying
                    fragments = {"live-problem": str(escape(exc.message))}
                except Exception:
                    log.exception("live view %s failed to render", channel.key)
                    fragments = {"live-problem": "This page could not be updated; see the pvcapid log."}
                else:
                    fragments["live-problem"] = ""
                self.renders += 1
                cost = time.monotonic() - began
                changed = {k: v for k, v in fragments.items() if channel.snapshot.get(k) != v}
                if changed:
                    channel.snapshot.update(changed)
                    for subscriber in channel.subscribers:
                        subscriber.offer(changed)
                await self.changed(generation, PERIOD)
                await asyncio.sleep(max(MIN_INTERVAL, SLOW_FACTOR * cost))
        finally:
            channel.task = None
            if not channel.subscribers:
                channel.closed = True
                self._channels.pop(channel.key, None)


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def stream(request: Request, user: UIUser, view: View) -> StreamingResponse:
    """The SSE answer for `view`, shared by every browser on this URL."""
    hub: Hub = request.app.state.live
    auth: Authenticator = request.app.state.auth
    key = request.url.path

    async def events() -> AsyncIterator[str]:
        subscriber, channel = await hub.subscribe(key, view)
        try:
            yield f"retry: {RETRY_MS}\n\n"
            started = next_check = time.monotonic()
            next_check += AUTH_RECHECK
            while True:
                fragments = await subscriber.next(HEARTBEAT)
                yield _event("fragments", fragments) if fragments else ": keep-alive\n\n"
                now = time.monotonic()
                if user.session_id is not None and now >= next_check:
                    next_check = now + AUTH_RECHECK
                    if not await run_in_threadpool(auth.session_valid, user.session_id, False):
                        yield _event("expired", {"login": "/login"})
                        return
                if now - started >= STREAM_LIFETIME:
                    return
        finally:
            hub.unsubscribe(channel, subscriber)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

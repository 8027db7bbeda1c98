"""The consoles' websockets: the handshake's checks and the two relays (docs/webui.md, "Consoles").

**Handshake.** A browser opens a websocket with its cookies but without CSRF protection of its own
(any site may open one to us), so before accepting, pvcapid checks: the `Origin` is present and is
this site (a cross-site page is refused even with the user's cookie), `Sec-Fetch-Site` (when sent)
is same-origin, the session is valid (the API's sessions; with authentication off, the pre-session
cookie), and the `csrf` query parameter is the session's CSRF token (only our own page knows it). A
refusal closes the handshake (the browser sees HTTP 403) and is logged with its reason. Then the VM
must exist and run; if not, the socket is accepted and closed at once with a 44xx code whose reason
names the refusal (the page shows it).

**Never an open proxy.** The client names only a VM. Where to connect comes from ZooKeeper: the
VM's status (its node, its VNC `listen:port`) and the node's document (its libvirt URI).

**Serial**: libvirt's console stream on the VM's node (pvc.adapters.serialconsole), bytes both ways.
**VNC**: a TCP relay to the VM's VNC listener; binary frames both ways (noVNC speaks RFB itself).
**Migration**: the serial relay watches the VM's node and reopens the console on the new node;
the VNC relay ends with code 4000 when the VM's listener moves or closes, and the page reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import WebSocket
from fastapi.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from pvc.adapters.serialconsole import ConsoleUnavailable, SerialConsole
from pvc.api.auth import SESSION_COOKIE, Authenticator
from pvc.api.web.guard import ALLOWED_FETCH_SITES, CSRF_COOKIE, csrf_token
from pvc.cluster.vms import get_entry, is_running
from pvc.core import schema
from pvc.core.errors import NotFound
from pvc.core.records import VMStatus
from pvc.core.zk import ZK

log = logging.getLogger("pvcapid.console")

MAX_INPUT = 16 * 1024          # bytes of one keystroke/paste message from the browser
READ_SIZE = 16 * 1024
WATCH_INTERVAL = 1.0           # seconds between looks at the VM's node (migration, stop)
MOVED = 4000                   # close codes: the VM moved or its console ended (reconnect)
NOT_FOUND = 4404
NOT_RUNNING = 4409
NO_CONSOLE = 4503
OPEN_TRIES = 10               # attempts to open a console (1 s apart) before giving up


def _own_origin(ws: WebSocket) -> str | None:
    host = ws.headers.get("host")
    if not host:
        return None
    scheme = "https" if ws.url.scheme in ("wss", "https") else "http"
    return f"{scheme}://{host}".lower()


async def handshake_refusal(ws: WebSocket) -> str | None:
    """Why this websocket handshake is refused (None: it passes). Checks Origin first, as the UI's
    guard does for actions, then the session, then the CSRF token in the query."""
    path = ws.url.path
    origin = ws.headers.get("origin")
    if origin is None:
        return f"Refused websocket {path}: no Origin header (browsers always send one)"
    if origin.lower() != _own_origin(ws):
        return f"Refused websocket {path}: a cross-site request from the origin {origin[:120]}"
    site = ws.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in ALLOWED_FETCH_SITES:
        return f"Refused websocket {path}: the browser marked it as {site[:40]} (Sec-Fetch-Site)"
    auth: Authenticator = ws.app.state.auth
    if auth.enabled:
        subject = ws.cookies.get(SESSION_COOKIE)
        if not subject or not await run_in_threadpool(auth.session_valid, subject):
            return f"Refused websocket {path}: no valid session (log in first)"
    else:
        subject = ws.cookies.get(CSRF_COOKIE)
        if not subject:
            return f"Refused websocket {path}: no pvc_csrf cookie (load the console page first)"
    given = ws.query_params.get("csrf", "")
    expected = csrf_token(subject).encode()
    if not given or not hmac.compare_digest(given.encode(errors="surrogateescape"), expected):
        what = "missing" if not given else "not this session's"
        return f"Refused websocket {path}: the csrf parameter is {what}"
    return None


async def running_vm(ws: WebSocket, vm: str) -> tuple[str, str, VMStatus] | None:
    """(uuid, name, status) of a running VM, or None after closing the socket with the reason."""
    zk: ZK = ws.app.state.zk
    try:
        entry = await run_in_threadpool(get_entry, zk, vm)
    except NotFound:
        await _close(ws, NOT_FOUND, f"VM {vm[:80]} not found")
        return None
    if not is_running(entry.status) or entry.status is None or not entry.status.node:
        await _close(ws, NOT_RUNNING, f"VM {entry.record.name} is not running")
        return None
    return entry.record.uuid, entry.record.name, entry.status


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    """Accept (so the browser gets the reason) and close with `code`."""
    with contextlib.suppress(Exception):
        if ws.client_state.name == "CONNECTING":
            await ws.accept(subprotocol=_subprotocol(ws))
        await ws.close(code=code, reason=reason[:120])


def _subprotocol(ws: WebSocket) -> str | None:
    offered = list(ws.scope.get("subprotocols") or [])     # uvicorn parses the header into the scope
    offered += [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    return "binary" if "binary" in offered else None


def _status(zk: ZK, uuid: str) -> VMStatus | None:
    data = zk.get(schema.vm_status(uuid), None)
    return VMStatus.model_validate(data) if isinstance(data, dict) else None


def _node_uri(zk: ZK, node: str) -> str:
    doc = zk.get(schema.node(node), None)
    uri = doc.get("libvirt_migration_uri") if isinstance(doc, dict) else None
    if not isinstance(uri, str) or not uri:
        raise ConsoleUnavailable(f"node {node} publishes no libvirt URI (libvirt_migration_uri)")
    return uri


async def _pump_browser(ws: WebSocket, sink: Callable[[bytes], Awaitable[None]]) -> None:
    """Browser -> sink, message by message, until the browser goes."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        data: bytes = message.get("bytes") or (message.get("text") or "").encode()
        if len(data) > MAX_INPUT:
            data = data[:MAX_INPUT]
        if data:
            await sink(data)


async def serial(ws: WebSocket, vm: str) -> None:
    """Relay a running VM's serial console; follow it to another node."""
    found = await running_vm(ws, vm)
    if found is None:
        return
    uuid, name, status = found
    zk: ZK = ws.app.state.zk
    await ws.accept(subprotocol=_subprotocol(ws))
    node = status.node
    browser: asyncio.Task[None] | None = None
    console: SerialConsole | None = None

    async def to_guest(data: bytes) -> None:
        if console is not None:
            with contextlib.suppress(ConsoleUnavailable):
                await run_in_threadpool(console.send, data)

    try:
        browser = asyncio.ensure_future(_pump_browser(ws, to_guest))
        while not browser.done():
            console = await _open_console(zk, uuid, name, node, browser)
            if console is None:
                if not browser.done():
                    await _close(ws, NO_CONSOLE, f"no console of VM {name} on {node}")
                return
            await ws.send_bytes(f"\r\n[pvc: console of {name} on {node}]\r\n".encode())
            moved = await _relay_console(ws, zk, uuid, node, console, browser)
            await run_in_threadpool(console.close)
            console = None
            if browser.done():
                return
            if moved is None:
                await _close(ws, MOVED, f"VM {name} stopped or its console ended")
                return
            node = moved
            await ws.send_bytes(f"\r\n[pvc: VM {name} moved to {node}; reconnecting]\r\n".encode())
    except (WebSocketDisconnect, RuntimeError, OSError) as exc:     # the browser went mid-send
        log.debug("serial console of %s: %s", name, exc)
    finally:
        if browser is not None:
            browser.cancel()
        if console is not None:
            await run_in_threadpool(console.close)


async def _open_console(zk: ZK, uuid: str, name: str, node: str, browser: asyncio.Task[None],
                        tries: int = OPEN_TRIES) -> SerialConsole | None:
    """The console on `node`, tried a few times (just after a migration the domain may not take a
    console yet); None when it cannot be opened or the VM left that node."""
    for attempt in range(tries):
        try:
            uri = await run_in_threadpool(_node_uri, zk, node)
            return await run_in_threadpool(SerialConsole, uri, uuid)
        except ConsoleUnavailable as exc:
            log.warning("serial console of %s (try %d of %d): %s", name, attempt + 1, tries, exc)
        status = await run_in_threadpool(_status, zk, uuid)
        if browser.done() or status is None or not status.running or status.node != node:
            return None
        await asyncio.sleep(1.0)
    return None


async def _relay_console(ws: WebSocket, zk: ZK, uuid: str, node: str, console: SerialConsole,
                         browser: asyncio.Task[None]) -> str | None:
    """Guest -> browser until the browser goes (returns the same node), the VM moves (the new
    node, once it runs there) or stops (None)."""
    reader = asyncio.ensure_future(run_in_threadpool(console.recv, READ_SIZE))
    watch = asyncio.ensure_future(asyncio.sleep(WATCH_INTERVAL))
    try:
        while True:
            done, _ = await asyncio.wait({reader, watch, browser}, return_when=asyncio.FIRST_COMPLETED)
            if browser in done:
                return node
            if reader in done:
                try:
                    data = reader.result()
                except ConsoleUnavailable:
                    data = b""
                if data:
                    await ws.send_bytes(data)
                    reader = asyncio.ensure_future(run_in_threadpool(console.recv, READ_SIZE))
                    continue
                return await _next_node(zk, uuid, node, browser)   # ended: stopped or moved
            if watch in done:
                status = await run_in_threadpool(_status, zk, uuid)
                if status is None or not status.running:
                    return None
                if status.node and status.node != node:
                    return status.node
                watch = asyncio.ensure_future(asyncio.sleep(WATCH_INTERVAL))
    finally:
        watch.cancel()
        if not reader.done():
            console.close()      # unblocks the reading thread
            with contextlib.suppress(Exception):
                await reader


async def _next_node(zk: ZK, uuid: str, node: str, browser: asyncio.Task[None],
                     wait: float = 30.0) -> str | None:
    """After the console ended: the VM's node once it runs somewhere (a migration ends the
    source's stream before the status moves), None if it stopped or did not settle."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while loop.time() < deadline and not browser.done():
        status = await run_in_threadpool(_status, zk, uuid)
        if status is None:
            return None
        if status.running and status.node and status.node != node:
            return status.node
        if not status.running and status.libvirt_state not in ("migrating", "paused"):
            return None
        await asyncio.sleep(0.5)
    return None


def vnc_target(zk: ZK, status: VMStatus) -> tuple[str, int] | None:
    """Where the VM's VNC listener is, from ZooKeeper only: its `listen:port`; a wildcard listener
    is reached at the node's migration (cluster) address."""
    host, _, port = status.vnc.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    host = host.strip("[]")
    if host in ("0.0.0.0", "::"):
        doc = zk.get(schema.node(status.node), None)
        address = doc.get("migration_address") if isinstance(doc, dict) else None
        if not isinstance(address, str) or not address:
            return None
        host = address
    return host, int(port)


async def vnc(ws: WebSocket, vm: str) -> None:
    """Relay a running VM's VNC listener (RFB in binary frames) until either side ends."""
    found = await running_vm(ws, vm)
    if found is None:
        return
    _uuid, name, status = found
    zk: ZK = ws.app.state.zk
    target = await run_in_threadpool(vnc_target, zk, status)
    if target is None:
        await _close(ws, NO_CONSOLE, f"VM {name} has no VNC display")
        return
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*target), 5)
    except (OSError, TimeoutError) as exc:
        log.warning("VNC of %s at %s:%d: %s", name, target[0], target[1], exc)
        await _close(ws, NO_CONSOLE, f"VNC of VM {name} on {status.node} cannot be reached")
        return
    await ws.accept(subprotocol=_subprotocol(ws))

    async def to_vnc(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    async def from_vnc() -> None:
        while data := await reader.read(READ_SIZE):
            await ws.send_bytes(data)

    tasks: list[asyncio.Task[Any]] = [asyncio.ensure_future(_pump_browser(ws, to_vnc)),
                                      asyncio.ensure_future(from_vnc())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[1] in done:
            await _close(ws, MOVED, f"VNC of VM {name} ended (stopped or moved)")
    except (WebSocketDisconnect, OSError):
        pass
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            writer.close()

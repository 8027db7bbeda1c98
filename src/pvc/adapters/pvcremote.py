"""HTTP client for another PVC cluster's API (the destination of a snapshot send or mirror).

The only place the worker talks HTTP: to a *remote* cluster, never to its own (DESIGN: daemons
never call their own API). The key travels in the X-Api-Key header only; it never appears in a
URL, an error message or a log line. Timeouts as upstream's sender: 3.05 s to connect, up to
48 h for an answer (a receiver writes a whole volume before it answers).

TLS: the certificate is checked against the system's CAs, or, when the destination's CA is given
(PEM text), against that CA only; `verify_ssl=False` turns the check off (upstream's option).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

CONNECT_TIMEOUT = 3.05
READ_TIMEOUT = 48 * 3600.0


class RemoteError(Exception):
    """The remote API could not be reached or refused a request; `status` is its HTTP status
    (0 when there was no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class RemoteAPI:
    """One remote API base (e.g. https://pvc2:7370/api/v1) with its key; counts bytes sent."""

    def __init__(self, uri: str, key: str, verify_ssl: bool = True,
                 transport: httpx.BaseTransport | None = None, ca: str | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.bytes_sent = 0
        timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT, pool=60.0)
        self._client = httpx.Client(base_url=self.uri, headers={"X-Api-Key": key},
                                    verify=verify_context(verify_ssl, ca), timeout=timeout,
                                    transport=transport, follow_redirects=False)

    def __repr__(self) -> str:
        return f"RemoteAPI({self.uri!r})"

    def close(self) -> None:
        self._client.close()

    def _fail(self, method: str, path: str, exc: Exception) -> RemoteError:
        kind = type(exc).__name__
        return RemoteError(f"{method} {self.uri}{path}: no answer ({kind}: {str(exc)[:200]})")

    def request(self, method: str, path: str, params: dict[str, Any] | None = None,
                json: Any = None, content: Iterable[bytes] | bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """(status, parsed JSON body or text); RemoteError only when there was no answer."""
        body: Any = content
        if content is not None and not isinstance(content, bytes):
            body = self._counted(content)
        elif isinstance(content, bytes):
            self.bytes_sent += len(content)
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._client.request(method, path, params=clean, json=json, content=body,
                                            headers=headers)
        except httpx.HTTPError as exc:
            raise self._fail(method, path, exc) from None
        try:
            data = response.json()
        except ValueError:
            data = response.text
        return response.status_code, data

    def _counted(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            self.bytes_sent += len(piece)
            yield piece

    def call(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        """The answer's body if its status is in `ok`; else RemoteError with the remote's message."""
        status, data = self.request(method, path, **kwargs)
        if status not in ok:
            raise RemoteError(f"{method} {path}: {status} {message_of(data)}", status)
        return data


def verify_context(verify_ssl: bool, ca: str | None) -> ssl.SSLContext | bool:
    """What httpx verifies against: the given CA only (PEM text), the system's CAs, or nothing.
    RemoteError if the CA text holds no certificate."""
    if not verify_ssl:
        return False
    if not ca:
        return True
    try:
        return ssl.create_default_context(cadata=ca)
    except (ssl.SSLError, ValueError) as exc:
        raise RemoteError(f"the destination CA holds no usable PEM certificate ({exc})") from None


def message_of(data: Any) -> str:
    """The text of a PVC error answer ({message: ...} or upstream's {message: {arg: text}})."""
    if isinstance(data, dict) and "message" in data:
        text = data["message"]
        if isinstance(text, dict):
            return "; ".join(f"{k}: {v}" for k, v in text.items())
        return str(text)
    return str(data)[:300]

"""HTTP access to the PVC API v1: one place for auth, timeouts, retries and error messages.

Every command goes through `ApiClient.call`, so every command fails the same way: the API's own
message on one line, or one line saying the API could not be reached.
"""

from __future__ import annotations

import ssl
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from pvc import __version__
from pvc.cli.connections import Connection
from pvc.cli.errors import ApiError, ApiUnreachable, CLIError

USER_AGENT = f"pvc-client-cli/{__version__}"
CONNECT_TIMEOUT = 2.05
READ_TIMEOUT = 172800.0  # some calls (flush with wait) legitimately block server-side for a long time
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
GET_RETRIES = 3
BACKOFF = 0.3

Params = Mapping[str, Any]


def encode_params(params: Params | None) -> dict[str, Any]:
    """Query parameters as PVC expects them: booleans as true/false, lists as repeated keys."""
    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, list | tuple):
            out[key] = [("true" if v else "false") if isinstance(v, bool) else str(v) for v in value]
        else:
            out[key] = str(value)
    return out


def error_message(response: httpx.Response) -> str:
    """The human message of an error response, whatever shape the server used."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text.splitlines()[0] if text else f"HTTP {response.status_code} {response.reason_phrase}"
    return _message_of(body) or f"HTTP {response.status_code} {response.reason_phrase}"


def _message_of(body: Any) -> str:
    if isinstance(body, str):
        return body
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            if key in body:
                return _message_of(body[key])
        return _field_messages(body)
    if isinstance(body, list):
        # FastAPI validation errors: [{"loc": [...], "msg": ...}]; flask-restful: {"field": "help"}
        parts = []
        for item in body:
            if isinstance(item, dict) and "msg" in item:
                loc = [str(p) for p in item.get("loc", []) if p not in ("query", "body", "path")]
                parts.append(f"{'.'.join(loc)}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(_message_of(item))
        return "; ".join(parts)
    if body is None:
        return ""
    return str(body)


def _field_messages(body: dict[str, Any]) -> str:
    """flask-restful's `{"message": {"<arg>": "<help>"}}` as `arg: help`."""
    return "; ".join(f"{k}: {_message_of(v) if not isinstance(v, str) else v}" for k, v in body.items())


class ApiClient:
    """A connection to one cluster's API."""

    def __init__(self, connection: Connection, *, debug: bool = False,
                 transport: httpx.BaseTransport | None = None, retries: int = GET_RETRIES,
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                 log: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.connection = connection
        self.debug = debug
        self.retries = retries
        self._log = log or (lambda line: print(line, file=sys.stderr))
        self._sleep = sleep or time.sleep
        headers = {"User-Agent": USER_AGENT}
        if connection.api_key:
            headers["X-Api-Key"] = connection.api_key
        self.http = httpx.Client(
            base_url=connection.base_url,
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            verify=tls_verify(connection),
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, params: Params | None = None,
                data: Mapping[str, Any] | None = None, files: Mapping[str, Any] | None = None,
                retry: bool | None = None, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """Send one request (retrying idempotent GETs) and return the response, whatever its status."""
        method = method.upper()
        attempts = 1 + (self.retries if (retry if retry is not None else method == "GET") else 0)
        query = encode_params(params)
        form = encode_params(data) if data is not None else None
        last_error: httpx.HTTPError | None = None
        for attempt in range(attempts):
            if attempt:
                self._sleep(BACKOFF * (2 ** (attempt - 1)))
            if self.debug:
                self._log(f"API request: {method} {self.connection.base_url}{path} params={query}"
                          + (f" form={sorted(form)}" if form else "")
                          + (f" headers={dict(headers)}" if headers else ""))
            try:
                response = self.http.request(method, path, params=query, data=form, files=files,
                                             headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                    httpx.ReadError) as exc:
                if _tls_failure(exc):      # retrying cannot fix a certificate
                    raise ApiUnreachable(self._unreachable(exc)) from None
                last_error = exc
                if self.debug:
                    self._log(f"API request failed: {exc!r}")
                continue
            except httpx.HTTPError as exc:
                raise ApiUnreachable(self._unreachable(exc)) from None
            if self.debug:
                self._log(f"API response: {response.status_code} {response.text[:2000]}")
            if response.status_code in RETRY_STATUSES and attempt + 1 < attempts:
                continue
            return response
        assert last_error is not None
        raise ApiUnreachable(self._unreachable(last_error))

    def _unreachable(self, exc: httpx.HTTPError) -> str:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError) and "refused" in reason.lower():
            reason = "connection refused"
        elif isinstance(exc, httpx.TimeoutException):
            reason = "timed out"
        elif _tls_failure(exc) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
            conn = self.connection
            against = f"the CA file {conn.ca_file}" if conn.ca_file else "the system CA store"
            hint = "" if conn.ca_file else (f"; give the cluster's CA with \"pvc connection add "
                                             f'{conn.name} ... --ca-file PATH"')
            return (f'TLS verification of the PVC API of connection "{conn.name}" (host {conn.host}) '
                    f"failed against {against}: {reason}{hint}")
        elif _tls_failure(exc):
            reason += " (is the API serving plain HTTP? then add the connection with --no-ssl)"
        elif self.connection.scheme == "http" and isinstance(exc, httpx.RemoteProtocolError
                                                             | httpx.ReadError):
            reason += " (does the API use TLS? then add the connection with --ca-file or --ssl)"
        return (f'Cannot reach the PVC API of connection "{self.connection.name}" at '
                f"{self.connection.base_url}: {reason}")

    def call(self, method: str, path: str, params: Params | None = None,
             data: Mapping[str, Any] | None = None, files: Mapping[str, Any] | None = None,
             ok: tuple[int, ...] = (200, 201, 202, 204),
             headers: Mapping[str, str] | None = None) -> httpx.Response:
        """Like `request`, but an unexpected status raises ApiError carrying the API's message."""
        response = self.request(method, path, params=params, data=data, files=files, headers=headers)
        if response.status_code not in ok:
            raise ApiError(error_message(response), response.status_code)
        return response

    def get_json(self, path: str, params: Params | None = None) -> Any:
        return decode(self.call("GET", path, params=params))

    def get_list(self, path: str, params: Params | None = None) -> list[Any]:
        """A list GET; PVC answers an empty (filtered) list with 404 + message, which is no error."""
        response = self.request("GET", path, params=params)
        if response.status_code == 404 and _is_pvc_not_found(response):
            return []
        if response.status_code != 200:
            raise ApiError(error_message(response), response.status_code)
        body = decode(response)
        if body is None:
            return []
        if not isinstance(body, list):
            raise ApiError(f"Unexpected answer from the API for {path}: not a list", response.status_code)
        return body

    def get_one(self, path: str, params: Params | None = None, what: str = "Object") -> dict[str, Any]:
        """An element GET; PVC wraps the element in a one-element array."""
        return _element(self.get_json(path, params=params), path, what)

    def get_versioned(self, path: str, what: str = "Object") -> tuple[dict[str, Any], str | None]:
        """An element GET and its ETag (the version it was read at), None if the API sent none.

        An edit that sends the ETag back as If-Match is refused (412) if the element changed
        meanwhile, instead of silently overwriting someone else's change.
        """
        response = self.call("GET", path)
        return _element(decode(response), path, what), response.headers.get("ETag")

    def message(self, method: str, path: str, params: Params | None = None,
                data: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> str:
        """A call whose answer is `{"message": ...}`; returns the message."""
        body = decode(self.call(method, path, params=params, data=data, headers=headers))
        return _message_of(body) if body is not None else ""


def tls_verify(connection: Connection) -> ssl.SSLContext | bool:
    """How the server's certificate is checked: against the connection's CA file, else the
    system's CA store; False only for plain HTTP, PVC_CLIENT_VERIFY_SSL=false, or a `local`
    connection whose node CA is unreadable (upstream never verifies `local`)."""
    if connection.scheme != "https" or not connection.verify_ssl:
        return False
    try:
        return ssl.create_default_context(cafile=connection.ca_file)
    except OSError as exc:      # ssl.SSLError included: not PEM
        raise CLIError(f'Cannot use the CA file {connection.ca_file} of connection "{connection.name}": '
                       f"{exc.strerror if type(exc) is not ssl.SSLError and exc.strerror else exc}") from None


def _tls_failure(exc: BaseException) -> bool:
    """Whether a transport error is a TLS handshake or certificate failure (anywhere in its chain)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "[SSL:" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _element(body: Any, path: str, what: str) -> dict[str, Any]:
    """The element of an element GET's body (PVC wraps it in a one-element array)."""
    if isinstance(body, list):
        if len(body) != 1 or not isinstance(body[0], dict):
            raise ApiError(f"{what} not found.", 404)
        return body[0]
    if not isinstance(body, dict):
        raise ApiError(f"Unexpected answer from the API for {path}", 200)
    return body


def _is_pvc_not_found(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("message"), str)


def decode(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise ApiError(f"The API answered with something that is not JSON (HTTP {response.status_code})",
                       response.status_code) from None


def message_text(body: Any) -> str:
    """The `message` of a decoded answer body, or the body itself as text (nothing for no body)."""
    if isinstance(body, dict) and "message" in body:
        message = body["message"]
        if isinstance(message, dict):      # argument errors, as upstream: {"<argument>": "<text>"}
            return "; ".join(f"{name}: {text}" for name, text in message.items())
        return str(message)
    return "" if body is None else str(body)

"""The CLI's connection store: named API endpoints in `pvc.json`, plus the implicit `local` one.

The file format is upstream PVC's, so a store written by the original client keeps working:
`{name: {description, host, port, scheme, api_key}}`, where an entry may instead be
`{"cfgfile": path}` meaning "read the API settings from this node configuration file".
Everything here is pure file/dict logic so it can be tested without a network.
"""

from __future__ import annotations

import json
import os
import re
import ssl as tlslib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pvc.cli.errors import CLIError

STORE_FILENAME = "pvc.json"
DEFAULT_PORT = 7370
DEFAULT_CONFIG_FILE = "/etc/pvc/pvc.conf"
DEFAULT_TOKEN_FILE = "/etc/pvc/api-token"     # api.token_file's default
DEFAULT_CA_FILE = "/etc/pvc/ssl/ca.crt"      # api.ssl.ca_certificate's default
LOCAL = "local"
API_PREFIX = "/api/v1"


class ConnectionStoreError(CLIError):
    """A connection cannot be used (unknown name, unreadable store or config); one clear line."""


@dataclass(frozen=True)
class Connection:
    """One resolved API endpoint."""

    name: str
    description: str
    host: str
    port: int
    scheme: str
    api_key: str | None
    verify_ssl: bool = True
    cfgfile: str | None = None
    # The CA file the server's certificate is verified against (None: the system store).
    ca_file: str | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{self.scheme}://{host}:{self.port}{API_PREFIX}"

    def store_entry(self) -> dict[str, Any]:
        entry = {"description": self.description, "host": self.host, "port": self.port,
                 "scheme": self.scheme, "api_key": self.api_key}
        if self.ca_file:      # only when set, so the store stays readable by upstream's client
            entry["ca_file"] = self.ca_file
        return entry

    def public(self, show_key: bool = False) -> dict[str, Any]:
        """The `connection list` item (upstream field names: address, not host)."""
        return {"name": self.name, "description": self.description, "address": self.host,
                "port": self.port, "scheme": self.scheme,
                "api_key": self.api_key if show_key else mask_key(self.api_key)}


def mask_key(key: str | None) -> str | None:
    """Hide a key in listings but keep its length visible, as upstream does."""
    return re.sub(r"[A-Za-z0-9]", "x", key) if key else key


def _environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    """Functions take an explicit environment (tests) or read the process's own."""
    return os.environ if env is None else env


def parse_bool(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "n", "off", "f")


def store_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$PVC_CLIENT_DIR`, else `~/.config/pvc`, else `/tmp/pvc` (no home at all)."""
    env = _environ(env)
    if env.get("PVC_CLIENT_DIR"):
        return Path(env["PVC_CLIENT_DIR"])
    if env.get("HOME"):
        return Path(env["HOME"]) / ".config" / "pvc"
    return Path("/tmp/pvc")


def store_path(env: Mapping[str, str] | None = None) -> Path:
    return store_dir(env) / STORE_FILENAME


def load_store(path: Path) -> dict[str, dict[str, Any]]:
    """The stored connections; a missing file is an empty store, a corrupt one is an error."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConnectionStoreError(f"Cannot read the connection store {path}: {exc.strerror}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConnectionStoreError(f"The connection store {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConnectionStoreError(f"The connection store {path} is not a JSON object")
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


def save_store(path: Path, data: dict[str, dict[str, Any]], perms: int | None = None) -> None:
    """Write atomically with owner-only permissions: the file holds API keys."""
    if perms is None:
        perms = int(os.environ.get("PVC_CLIENT_DB_PERMS", "600"), 8)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".pvc.json.", dir=path.parent)
    try:
        os.fchmod(fd, perms)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, sort_keys=True, indent=4)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_connection(data: dict[str, dict[str, Any]], name: str, description: str | None = None,
                   host: str = "127.0.0.1", port: int = DEFAULT_PORT, api_key: str | None = None,
                   ssl: bool = False, ca_file: str | None = None) -> Connection:
    """Add or replace `name` in the store dict (in place) and return it.

    `ca_file` (implies https) is the CA the server certificate must be signed by; it is checked
    to be a readable PEM certificate now, so a typo fails here and not at the first command."""
    if not name or not name.strip() or "/" in name:
        raise ConnectionStoreError(f'Invalid connection name "{name}"')
    if not host:
        raise ConnectionStoreError("An address is required")
    if not 0 < port < 65536:
        raise ConnectionStoreError(f"Invalid port {port}")
    if ca_file:
        ca_file = check_ca_file(ca_file)
    conn = Connection(name=name, description=description or name, host=host, port=port,
                      scheme="https" if ssl or ca_file else "http", api_key=api_key or None,
                      ca_file=ca_file or None)
    data[name] = conn.store_entry()
    return conn


def check_ca_file(path: str) -> str:
    """The absolute path of a CA file that holds at least one PEM certificate."""
    absolute = os.path.abspath(os.path.expanduser(path))
    try:
        tlslib.create_default_context(cafile=absolute)
    except FileNotFoundError:
        raise ConnectionStoreError(f"The CA file {absolute} does not exist") from None
    except tlslib.SSLError:       # an OSError too: first
        raise ConnectionStoreError(f"The CA file {absolute} holds no PEM certificate") from None
    except OSError as exc:
        raise ConnectionStoreError(f"Cannot read the CA file {absolute}: {exc.strerror}") from None
    return absolute


def remove_connection(data: dict[str, dict[str, Any]], name: str) -> None:
    if name not in data:
        raise ConnectionStoreError(f'No connection found with name "{name}" in local database')
    del data[name]


def config_file_path(env: Mapping[str, str] | None = None) -> str:
    env = _environ(env)
    return env.get("PVC_CONFIG_FILE") or DEFAULT_CONFIG_FILE


def read_config_file(cfgfile: str, name: str = LOCAL) -> Connection:
    """The API endpoint a node's pvc.conf describes (how `local` works on a cluster node)."""
    try:
        with open(cfgfile) as handle:
            config = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise ConnectionStoreError(f"Cannot read the PVC configuration {cfgfile}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConnectionStoreError(f"The PVC configuration {cfgfile} is not valid YAML: {exc}") from None
    api = config.get("api") if isinstance(config, dict) else None
    if not isinstance(api, dict):
        api = {}
    listen = api.get("listen") or {}
    ssl = api.get("ssl") or {}
    auth = api.get("authentication") or {}
    tokens = api.get("token") or []
    host = str(listen.get("address") or "127.0.0.1")
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"  # a wildcard listener is reachable on loopback
    try:
        port = int(listen.get("port") or DEFAULT_PORT)
    except (TypeError, ValueError):
        raise ConnectionStoreError(f"api.listen.port in {cfgfile} is not a number") from None
    api_key = None
    # Authentication is on unless the file says otherwise (pvc.core.config's default).
    if _truthy(auth.get("enabled", True)) and auth.get("source", "token") == "token":
        if tokens:
            first = tokens[0]
            api_key = str(first.get("token")) if isinstance(first, dict) and first.get("token") else None
        else:
            api_key = _token_from_file(str(api.get("token_file") or DEFAULT_TOKEN_FILE))
    cluster = config.get("cluster") if isinstance(config, dict) else None
    cluster_name = cluster.get("name") if isinstance(cluster, dict) else None
    # TLS is on unless the file turns it off (pvcapid's default). Upstream never verifies `local`;
    # we verify against the node's cluster CA when it is readable, as upstream does otherwise.
    tls = _truthy(ssl.get("enabled", True))
    ca_file = str(ssl.get("ca_certificate", DEFAULT_CA_FILE) or "")
    ca_file = ca_file if tls and ca_file and os.access(ca_file, os.R_OK) else ""
    return Connection(name=name, description=f"Local cluster {cluster_name}" if cluster_name else cfgfile,
                      host=host, port=port, scheme="https" if tls else "http",
                      api_key=api_key, verify_ssl=bool(ca_file), cfgfile=cfgfile, ca_file=ca_file or None)


def _token_from_file(path: str) -> str | None:
    """The first token of pvcapid's token file, when this user can read it (root-only by
    default: other users then have no key and get the API's 401)."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return next((line.strip() for line in lines if line.strip() and not line.startswith("#")), None)


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "yes", "on", "1", "y")


def resolve_entry(name: str, entry: dict[str, Any], verify_ssl: bool) -> Connection:
    """A stored entry as a Connection; `cfgfile` entries are read from the node configuration."""
    if entry.get("cfgfile"):
        return read_config_file(str(entry["cfgfile"]), name)
    try:
        port = int(entry.get("port") or DEFAULT_PORT)
    except (TypeError, ValueError):
        raise ConnectionStoreError(
            f'Connection "{name}" has an invalid port: {entry.get("port")!r}') from None
    host = entry.get("host") or entry.get("address")
    if not host:
        raise ConnectionStoreError(f'Connection "{name}" has no host')
    return Connection(name=name, description=str(entry.get("description") or name), host=str(host),
                      port=port, scheme=str(entry.get("scheme") or "http"),
                      api_key=entry.get("api_key") or None, verify_ssl=verify_ssl,
                      ca_file=str(entry["ca_file"]) if entry.get("ca_file") else None)


def all_connections(data: dict[str, dict[str, Any]], env: Mapping[str, str] | None = None,
                    strict: bool = False) -> dict[str, Connection]:
    """Stored connections plus the implicit `local` one when a node configuration exists.

    Entries that cannot be resolved (a `cfgfile` that vanished) are skipped unless `strict`.
    """
    env = _environ(env)
    verify = parse_bool(env.get("PVC_CLIENT_VERIFY_SSL"), True)
    out: dict[str, Connection] = {}
    for name, entry in data.items():
        try:
            out[name] = resolve_entry(name, entry, verify)
        except ConnectionStoreError:
            if strict:
                raise
    if LOCAL not in data:
        cfgfile = config_file_path(env)
        if os.path.isfile(cfgfile):
            try:
                out[LOCAL] = read_config_file(cfgfile)
            except ConnectionStoreError:
                if strict:
                    raise
    return out


def select_connection(data: dict[str, dict[str, Any]], requested: str | None,
                      env: Mapping[str, str] | None = None) -> Connection:
    """The connection a command uses: the requested one, else the only one, else `local`."""
    env = _environ(env)
    if requested:
        if requested in data:
            return resolve_entry(requested, data[requested],
                                 parse_bool(env.get("PVC_CLIENT_VERIFY_SSL"), True))
        if requested == LOCAL:
            cfgfile = config_file_path(env)
            if os.path.isfile(cfgfile):
                return read_config_file(cfgfile)
        known = sorted(all_connections(data, env))
        hint = f" (known: {', '.join(known)})" if known else ' (add one with "pvc connection add")'
        raise ConnectionStoreError(f'Invalid connection "{requested}" specified{hint}.')
    conns = all_connections(data, env)
    if len(conns) == 1:
        return next(iter(conns.values()))
    if LOCAL in conns:
        return conns[LOCAL]
    if not conns:
        raise ConnectionStoreError(
            'No connection specified and no local API configuration found; '
            'use "pvc connection add" to add a connection.'
        )
    raise ConnectionStoreError(
        f"No connection specified and several are defined ({', '.join(sorted(conns))}); "
        "choose one with -c/--connection or PVC_CONNECTION."
    )


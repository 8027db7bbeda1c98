"""Secrets at rest and in logs (DESIGN D14).

Secrets PVC must keep in ZooKeeper (a node's IPMI password, which the primary needs to fence it)
are stored encrypted with the *cluster key*: a Fernet key (AES-128-CBC + HMAC-SHA256) in a
root-only file that only node configurations hold (`cluster.key_file`, the same file on every
node, distributed by the installer or the lab). A sealed value is the JSON object
`{"fernet": "<token>"}`, so a reader can tell it from plaintext without the key.

The API, backups and task arguments never carry secrets; `redact()` masks secret-looking keys of
any document shown to someone. Daemons also mask every secret value they know in every log line
(`for_daemon`), whatever logger or handler the line goes through.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from pvc.core.config import Settings
from pvc.core.errors import ConfigError

SEALED = "fernet"               # the one key of a sealed value: {"fernet": "<token>"}
MASK = "***"
# Keys whose values redact() hides: passwords, secrets, tokens, keys (not "keepalive", "monkey").
SECRET_KEY_RE = re.compile(r"pass(word|wd|phrase)?|secret|token|credential|keyring|(^|[_-])key$|^key[_-]",
                           re.IGNORECASE)
MIN_MASKED = 4                  # shorter values would mask ordinary words in every line


class SecretError(ConfigError):
    """The cluster key is missing, unreadable or wrong, or a sealed value cannot be opened."""


# -- the cluster key ---------------------------------------------------------------------------------


class ClusterKey:
    """The loaded cluster key; `path` names it in every error."""

    def __init__(self, key: bytes, path: str = "<memory>") -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise SecretError(f"cluster key {path}: not a Fernet key (32 url-safe base64-encoded "
                              "bytes, as `pvc.core.secrets.generate_key()` writes)") from None
        self.path = path

    def seal(self, plaintext: str) -> dict[str, str]:
        """The sealed form of a secret, as stored in ZooKeeper."""
        return {SEALED: self._fernet.encrypt(plaintext.encode()).decode()}

    def open(self, value: Any) -> str:
        """The plaintext of a sealed value; a plain string passes through (stored before sealing
        existed: the node republishes it sealed at its next start)."""
        if isinstance(value, str):
            return value
        if not is_sealed(value):
            raise SecretError("not a sealed secret (expected {\"fernet\": \"<token>\"})")
        try:
            plaintext = self._fernet.decrypt(str(value[SEALED]).encode()).decode()
        except InvalidToken:
            raise SecretError(f"a sealed secret does not open with the cluster key {self.path}: it was "
                              "sealed with another key (every node needs the same key file) or "
                              "was altered") from None
        remember(plaintext)
        return plaintext


def generate_key() -> bytes:
    return Fernet.generate_key()


def write_key_file(path: str | Path, key: bytes | None = None) -> bytes:
    """Create a root-only (0600) key file; refuse to overwrite one (nodes must keep one key)."""
    key = key or generate_key()
    ClusterKey(key, str(path))          # validate before writing anything
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SecretError(f"cluster key {path}: already exists; refusing to replace it (secrets "
                          "sealed with it would no longer open)") from None
    with os.fdopen(fd, "wb") as out:
        out.write(key + b"\n")
    return key


def load_key(path: str | Path) -> ClusterKey:
    """The key in `path`; SecretError naming the file when it is missing, unreadable, open to
    other users or not a key."""
    path = str(path)
    try:
        info = os.stat(path)
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SecretError(f"cluster key {path} (cluster.key_file): missing; this node has secrets to "
                          "seal or open. Copy the cluster's key file to every node (root-only, mode "
                          "0600); a new cluster makes one with `python3 -m pvc.core.secrets keygen "
                          f"{path}`") from None
    except OSError as exc:
        raise SecretError(f"cluster key {path} (cluster.key_file): cannot read it: "
                          f"{exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"cluster key {path} (cluster.key_file): readable by other users "
                          f"(mode {stat.S_IMODE(info.st_mode):04o}); make it root-only: chmod 600 {path}")
    key = ClusterKey(data.strip(), path)
    remember(data.strip().decode(errors="replace"))
    return key


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED} and isinstance(value[SEALED], str)


# -- fence info -------------------------------------------------------------------------------------

FENCE_SECRETS = ("password",)           # keys of a node's fence info that are secrets


def seal_fence_info(info: dict[str, Any], key_file: str) -> dict[str, Any]:
    """The fence info a node publishes: its secrets sealed (the key is needed only when there is
    a secret to seal, so nodes without IPMI fencing need no key file)."""
    present = [k for k in FENCE_SECRETS if isinstance(info.get(k), str) and info[k]]
    if not present:
        return info
    key = load_key(key_file)
    return {**info, **{k: key.seal(info[k]) for k in present}}


def open_fence_info(info: dict[str, Any], key_file: str | None) -> dict[str, Any]:
    """The fence info with its secrets opened, for the fence agent only (never stored or shown)."""
    sealed = [k for k in FENCE_SECRETS if is_sealed(info.get(k))]
    if not sealed:
        for k in FENCE_SECRETS:
            if isinstance(info.get(k), str):
                remember(info[k])
        return info
    if not key_file:
        raise SecretError("fence info holds sealed secrets but this node has no cluster.key_file")
    key = load_key(key_file)
    return {**info, **{k: key.open(info[k]) for k in sealed}}


# -- redaction --------------------------------------------------------------------------------------


def is_secret_key(name: str) -> bool:
    return bool(SECRET_KEY_RE.search(name))


def redact(value: Any) -> Any:
    """A copy of a document with every secret-looking key's value, and every sealed value, masked."""
    if is_sealed(value):
        return MASK
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and is_secret_key(k) and v not in (None, "")
                    else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


# -- logs -------------------------------------------------------------------------------------------

_known: set[str] = set()
_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()
_installed = False


def remember(*values: str | None) -> None:
    """Mask these values in every later log line of this process."""
    global _pattern
    new = {v for v in values if v and len(v) >= MIN_MASKED} - _known
    if not new:
        return
    with _lock:
        _known.update(new)
        # Longest first, so a secret containing another is masked whole.
        _pattern = re.compile("|".join(re.escape(v) for v in sorted(_known, key=len, reverse=True)))


def mask(text: str) -> str:
    pattern = _pattern
    return pattern.sub(MASK, text) if pattern is not None and text else text


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value a configuration holds (read from files where it names them)."""
    values: list[str | None] = []
    if settings.zookeeper.auth is not None:
        values.append(settings.zookeeper.auth.password)
    values += [t.token for t in settings.api.token]
    values.append(settings.api.authentication.secret_key)
    ipmi = settings.fencing.ipmi
    values.append(ipmi.password)
    automirror = getattr(settings, "automirror", None)
    if automirror is not None:
        values += [dest.key for dest in automirror.destinations.values()]
    for path in (ipmi.password_file, settings.cluster.key_file, getattr(settings.api, "token_file", None)):
        if path:
            try:
                values += Path(path).read_text().split()
            except (OSError, UnicodeDecodeError):
                pass                # a missing file is reported where it is needed
    return [v for v in values if v]


def _mask_arg(value: Any) -> Any:
    """A log argument with known secrets masked; numbers and clean values keep their type."""
    if isinstance(value, str):
        return mask(value)
    if value is None or isinstance(value, int | float):
        return value
    try:
        text = str(value)
    except Exception:
        return value
    masked = mask(text)
    return value if masked == text else masked


def install_log_masking(values: Iterable[str] = ()) -> None:
    """Mask known secrets in every log record this process creates, before any handler (stream,
    file, the node's ZooKeeper log) sees it: message, arguments and traceback alike."""
    global _installed
    remember(*values)
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _pattern is None:
            return record
        # Message and arguments masked apart, keeping the arguments' shape: filters further on
        # read them (the API's access-log filter rewrites the request path in args[2]).
        if isinstance(record.msg, str):
            record.msg = mask(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_mask_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _mask_arg(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = mask(formatter.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return record

    logging.setLogRecordFactory(factory)


def for_daemon(settings: Settings) -> Settings:
    """A daemon's start: mask every secret it knows in its logs, and check the cluster key when
    this node has a secret to seal (IPMI fencing), so a missing or bad key stops the daemon at
    once with a message naming the file, not at the first fence. A key file that exists is
    always checked. Returns `settings`, so it wraps `load_config()`."""
    install_log_masking(settings_secrets(settings))
    key_file = settings.cluster.key_file
    if settings.fencing.agent == "ipmi" or os.path.lexists(key_file):
        load_key(key_file)
    return settings


def main(argv: list[str] | None = None) -> int:
    """`python3 -m pvc.core.secrets keygen PATH`: make a cluster's key once (0600, never over an
    existing one), then copy that file to every node."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "keygen":
        print("usage: python3 -m pvc.core.secrets keygen PATH", file=sys.stderr)
        return 2
    try:
        write_key_file(args[1])
    except (SecretError, OSError) as exc:
        print(f"keygen: {exc}", file=sys.stderr)
        return 1
    print(f"cluster key written to {args[1]} (mode 0600): copy it to every node, as cluster.key_file")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One generated API token for the whole cluster (DESIGN D14: authentication on by default).

A new cluster whose configuration names no `api.token` still has authentication on: pvcapid
accepts the tokens of `api.token_file`, a root-only file. pvcapid runs on whichever coordinator is
primary, so that file must hold the same token on every coordinator, or the administrator's token
stops working at the first primary change. The token is therefore kept in ZooKeeper, sealed with
the cluster key (`/config/api_token`), and each coordinator's pvcapid writes its local token file
from there:

- a token file already on this node is the administrator's: it is used as it is, and if the
  cluster has no token yet, its first token is sealed into ZooKeeper for the other coordinators;
- otherwise the cluster's token is written into the file (mode 0600);
- otherwise (a new cluster) one is generated, sealed into ZooKeeper (the first coordinator to
  create the document wins a race) and written into the file.

Without a readable cluster key the token stays local (pvcapid warns): the installer then has to
copy the file to every coordinator itself. The sealed token is never backed up (see backup.py).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

from kazoo.exceptions import NodeExistsError

from pvc.core import schema
from pvc.core import secrets as cluster_secrets
from pvc.core.config import Settings
from pvc.core.errors import ConfigError
from pvc.core.zk import ZK

log = logging.getLogger(__name__)

GENERATED_TOKEN_BYTES = 32          # secrets.token_urlsafe(32): 43 characters, 256 bits


def _first_token(path: Path) -> str | None:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"api.token_file {path}: cannot read it: {exc.strerror}") from None
    return next((line.strip() for line in lines if line.strip() and not line.startswith("#")), None)


def _write_token_file(path: Path, token: str) -> None:
    """Create the file root-only with one token; never replace one that appeared meanwhile."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(f"api.token_file {path}: cannot create it: {exc.strerror}") from None
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(token + "\n")


def ensure_token_file(zk: ZK, settings: Settings) -> str:
    """Make `api.token_file` hold the cluster's token; what was done, for the log (no token)."""
    path = Path(settings.api.token_file)
    local = _first_token(path)
    try:
        key = cluster_secrets.load_key(settings.cluster.key_file)
    except cluster_secrets.SecretError as exc:
        if local:
            return f"using {path} (not shared through the cluster: {exc})"
        token = secrets.token_urlsafe(GENERATED_TOKEN_BYTES)
        _write_token_file(path, token)
        return (f"generated a new API token in {path} (mode 0600), for this node only ({exc}); "
                "copy the file to every coordinator so the token survives a primary change")
    doc = zk.get(schema.API_TOKEN, None)
    if local:
        if doc is None:
            try:
                zk.create_doc(schema.API_TOKEN, {"token": key.seal(local), "created": time.time()})
            except NodeExistsError:
                pass          # another coordinator sealed its own first; this file still counts here
            return f"using {path}; its first token is now the cluster's (sealed in ZooKeeper)"
        return f"using {path}"
    if doc is None:
        token = secrets.token_urlsafe(GENERATED_TOKEN_BYTES)
        try:
            zk.create_doc(schema.API_TOKEN, {"token": key.seal(token), "created": time.time()})
            made = True
        except NodeExistsError:
            doc, made = zk.get(schema.API_TOKEN), False
        if made:
            _write_token_file(path, token)
            cluster_secrets.remember(token)
            return f"generated the cluster's API token in {path} (mode 0600; sealed in ZooKeeper for " \
                   "the other coordinators)"
    assert doc is not None
    try:
        token = key.open(doc.get("token"))
    except cluster_secrets.SecretError as exc:
        raise ConfigError(f"the cluster's API token ({schema.API_TOKEN}) cannot be opened: {exc}") from None
    _write_token_file(path, token)
    return f"wrote the cluster's API token into {path} (mode 0600)"

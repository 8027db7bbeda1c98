"""pvcapid: the stateless HTTP API daemon (`pvcapid`, `python -m pvc.api.daemon`).

Loads the configuration (PVC_CONFIG_FILE), connects to ZooKeeper, brings the schema up to date,
keeps a watched cache of the node list (the hottest list) and serves API v1 with uvicorn,
over TLS when api.ssl is enabled. SIGTERM/SIGINT finish open requests and exit 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import uvicorn
from fastapi import FastAPI

from pvc.adapters.ceph.base import set_image_guard
from pvc.api import tls, warmup
from pvc.api.app import create_app
from pvc.api.auth import configured_tokens, read_token_file
from pvc.cluster import apitoken
from pvc.cluster.storage import imagelock
from pvc.core import schema, secrets
from pvc.core.config import Settings, load_config
from pvc.core.errors import ClusterUnavailable, ConfigError
from pvc.core.logs import file_handler
from pvc.core.zk import ZK

log = logging.getLogger("pvcapid")


def _setup_logging(settings: Settings) -> None:
    handlers: list[logging.Handler] = []
    if settings.logging.stdout:
        handlers.append(logging.StreamHandler(sys.stdout))
    if settings.logging.file:
        handlers.append(file_handler(settings))
    logging.basicConfig(
        level=settings.logging.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers or [logging.NullHandler()],
        force=True,
    )
    logging.getLogger("kazoo").setLevel(logging.WARNING)


def insecure_listen(settings: Settings) -> str | None:
    """Why pvcapid must not start: no authentication on an address other hosts can reach."""
    api = settings.api
    if api.authentication.enabled or api.listen.is_loopback or api.authentication.allow_insecure_listen:
        return None
    return (f"pvcapid: refusing to listen on {api.listen.address} without authentication: anyone who "
            f"can reach it would control the cluster. Enable api.authentication.enabled, listen on "
            f"a loopback address, or set api.authentication.allow_insecure_listen: true")


def uvicorn_config(settings: Settings, app: object) -> uvicorn.Config:
    listen, ssl = settings.api.listen, settings.api.ssl
    return uvicorn.Config(
        app,
        host=listen.address,
        port=listen.port,
        ssl_certfile=ssl.certificate if ssl.enabled else None,
        ssl_keyfile=ssl.private_key if ssl.enabled else None,
        log_config=None,  # keep our logging set-up
        access_log=settings.logging.level == "debug",
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
        # uvicorn's 5 s default closes idle keep-alive connections while clients (the CLI's
        # session, scripts) may still reuse them: a POST sent on a just-closed connection fails
        # with "connection aborted" and is not retried. 75 s is the common server default.
        timeout_keep_alive=75,
    )


def main() -> int:
    try:
        settings = secrets.for_daemon(load_config())   # masks secrets in logs; checks the cluster key
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    refusal = insecure_listen(settings)
    if refusal:
        print(refusal, file=sys.stderr)
        sys.exit(1)
    _setup_logging(settings)
    if settings.api.authentication.enabled and not settings.api.token \
            and os.path.exists(settings.api.token_file):
        try:
            read_token_file(settings.api.token_file, generate=False)   # a bad file stops us early
        except ConfigError as exc:
            print(f"pvcapid: {exc}", file=sys.stderr)
            sys.exit(1)
    try:
        tls.ensure(settings)     # check the API certificate, or make one for a lone node
    except (tls.TLSSetupError, OSError) as exc:
        log.error("pvcapid: %s", exc)
        print(f"pvcapid: {exc}", file=sys.stderr)
        sys.exit(1)
    try:
        zk = ZK.from_settings(settings).start()
    except ClusterUnavailable as exc:
        print(f"pvcapid: {exc.message}", file=sys.stderr)
        sys.exit(1)
    app: FastAPI | None = None
    try:
        schema.migrate(zk)
        # no two of PVC's maintenance operations on one RBD image at once, cluster-wide (imagelock)
        set_image_guard(imagelock.guard(zk, f"pvcapid on {settings.node_name}"))
        if settings.api.authentication.enabled and not settings.api.token:
            try:
                # the cluster's one generated token (sealed in ZooKeeper) into api.token_file
                log.info("api token: %s", apitoken.ensure_token_file(zk, settings))
                configured_tokens(settings.api)
            except ConfigError as exc:
                log.error("pvcapid: %s", exc)
                print(f"pvcapid: {exc}", file=sys.stderr)
                return 1
        zk.cache(schema.NODES)                 # node documents
        zk.cache(schema.VM_STATS, depth=2)     # stats shards, apart from /vms so they do not churn it
        zk.cache(schema.VMS, depth=2,          # each VM and its status; the list is rendered once
                 before_watch=lambda: warmup.warm_list(zk))   # its snapshot is in, before watches
        zk.cache(schema.FENCING)               # fencing records, shown with every node
        app = create_app(settings, zk)
        warmup.start(zk)
        server = uvicorn.Server(uvicorn_config(settings, app))
        # uvicorn re-raises the signal it caught after its graceful shutdown; make that a no-op
        # so we can close the ZooKeeper session and exit 0.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_args: None)
        log.info("pvcapid listening on %s:%d (tls %s)", settings.api.listen.address,
                 settings.api.listen.port, "on" if settings.api.ssl.enabled else "off")
        server.run()
        if not server.started:
            log.error("pvcapid could not start listening on %s:%d", settings.api.listen.address,
                      settings.api.listen.port)
            return 1
    finally:
        storage = getattr(app.state, "storage", None) if app is not None else None
        if storage is not None:
            storage.close()          # the Ceph session, if a storage route opened one
        zk.stop()
    log.info("pvcapid stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

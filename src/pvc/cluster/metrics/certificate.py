"""The API's TLS certificate as metrics (PVC extensions, for the shipped PVCCertificateExpiry*
alerts and the dashboard's panel):

- pvc_api_certificate_expiry_timestamp_seconds: notAfter, in Unix seconds, of the certificate
  pvcapid SERVES. uvicorn loads api.ssl.certificate once, when pvcapid starts, and never again, so
  this is the file as this process first read it (once per process, at its first request), not
  the file as it is now: a renewal on disk must not clear the expiry alert while the old
  certificate is still what clients get.
- pvc_api_certificate_pending_restart: 1 when the certificate in the file now is not the served
  one (renewed on disk, pvcapid not restarted yet), else 0.

Both are absent while api.ssl is off. The file is read again only when its mtime, size or inode
(a renewal written by rename) changes, so a scrape costs one stat().
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from pvc.cluster.metrics.expo import Family, sample

log = logging.getLogger(__name__)

NAME = "pvc_api_certificate_expiry_timestamp_seconds"
PENDING = "pvc_api_certificate_pending_restart"
NAMES: frozenset[str] = frozenset({NAME, PENDING})
FAMILY = Family(
    NAME,
    "Expiry (notAfter) of the TLS certificate the API serves (api.ssl.certificate as pvcapid loaded "
    "it at start), Unix seconds; absent when api.ssl is off",
)
PENDING_FAMILY = Family(
    PENDING,
    "1 when api.ssl.certificate on disk is not the certificate the API serves (renewed since "
    "pvcapid started: restart pvcapid to serve it), else 0; absent when api.ssl is off",
)


@dataclass(frozen=True)
class Certificate:
    fingerprint: bytes  # SHA-256 of the DER: tells a renewed certificate from the served one
    not_after: int  # Unix seconds


def parse(pem: bytes) -> Certificate:
    """The first certificate of a PEM text; ValueError when the text is not one."""
    cert = x509.load_pem_x509_certificate(pem)
    when = getattr(cert, "not_valid_after_utc", None)  # cryptography >= 42
    if when is None:  # Debian 12's 38: naive UTC
        when = cert.not_valid_after.replace(tzinfo=datetime.UTC)
    return Certificate(cert.fingerprint(hashes.SHA256()), int(when.timestamp()))


def not_after(pem: bytes) -> int:
    """The first certificate's notAfter in Unix seconds; ValueError when the text is not one."""
    return parse(pem).not_after


def _process() -> int:
    """The process the served certificate belongs to (a separate function so tests can stand in
    a restarted pvcapid)."""
    return os.getpid()


# (process, certificate path) -> the certificate that process serves: read once, never refreshed
_served: dict[tuple[int, str], Certificate] = {}
_served_lock = threading.Lock()


def _problem(exc: OSError | ValueError) -> str:
    return (exc.strerror or str(exc)) if isinstance(exc, OSError) else "not a PEM certificate"


class CertificateExpiry:
    """The two families' text for one certificate file (None: api.ssl off, nothing rendered).

    Made when pvcapid's metrics start (its first request), which reads the served certificate;
    if that read fails (the file vanished since uvicorn loaded it), each scrape tries again.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._key: tuple[object, ...] | None = None  # (served, disk file's stat) the text is for
        self._text = b""
        self._disk: Certificate | None = None  # the file's certificate at self._disk_stat
        self._disk_problem: str | None = None
        self._disk_stat: tuple[int, int, int] | None = None
        self._logged: str | None = None  # the last problem logged (not one line per scrape)
        if self.path is not None:
            with self._lock:
                self._refresh_disk(self.path)
                self._served()

    def _warn_once(self, message: str, *args: object) -> None:
        text = message % args
        if text != self._logged:
            self._logged = text
            log.warning("%s", text)

    def _refresh_disk(self, path: Path) -> None:
        """Read the file again when stat() says it changed (missing: re-checked every scrape)."""
        try:
            st = os.stat(path)
            stat: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stat = None
        if stat is not None and stat == self._disk_stat:
            return
        self._disk_stat = stat
        try:
            self._disk, self._disk_problem = parse(path.read_bytes()), None
        except (OSError, ValueError) as exc:
            self._disk, self._disk_problem = None, _problem(exc)
            self._disk_stat = None  # broken or gone: read again at the next scrape

    def _served(self) -> Certificate | None:
        """This process's served certificate: the file's first good reading in this process."""
        assert self.path is not None
        key = (_process(), str(self.path))
        with _served_lock:
            served = _served.get(key)
            if served is None and self._disk is not None:
                served = _served[key] = self._disk
                log.info("metrics: the API serves %s, expiring %s", self.path, _iso(served.not_after))
            return served

    def render(self) -> bytes:
        path = self.path
        if path is None:
            return b""
        with self._lock:
            self._refresh_disk(path)
            served = self._served()
            key = (served, self._disk, self._disk_problem)
            if key != self._key:
                self._text = self._make(path, served)
                self._key = key
            return self._text

    def _make(self, path: Path, served: Certificate | None) -> bytes:
        """Both families; a comment names a problem instead of a sample (one bad file must not
        fail a scrape; the missing sample is what an alert on absence sees)."""
        if served is None:
            self._warn_once("metrics: cannot read the API certificate %s: %s", path, self._disk_problem)
            comment = f"# PVC: cannot read the API certificate {path}: {self._disk_problem}\n"
            return (FAMILY.header() + comment + PENDING_FAMILY.header() + comment).encode()
        expiry = FAMILY.header() + sample(NAME, served.not_after)
        if self._disk is None:
            self._warn_once("metrics: cannot read the API certificate %s on disk: %s (pvcapid still "
                            "serves the one it loaded at start)", path, self._disk_problem)
            return (expiry + PENDING_FAMILY.header()
                    + f"# PVC: cannot read the API certificate {path} on disk: {self._disk_problem}\n"
                    ).encode()
        pending = self._disk.fingerprint != served.fingerprint
        if pending:
            self._warn_once("metrics: the API certificate %s changed on disk (expires %s); pvcapid "
                            "still serves the one it loaded at start (expires %s): restart pvcapid "
                            "to serve the new one", path, _iso(self._disk.not_after),
                            _iso(served.not_after))
        else:
            self._logged = None  # all well: a later problem is logged again
        return (expiry + PENDING_FAMILY.header() + sample(PENDING, int(pending))).encode()


def _iso(when: int) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat()

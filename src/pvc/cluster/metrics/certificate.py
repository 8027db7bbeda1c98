"""pvc_api_certificate_expiry_timestamp_seconds: when the API's TLS certificate expires (a PVC
extension, for the shipped PVCCertificateExpiry* alerts and the dashboard's panel).

The notAfter time of the file api.ssl.certificate names (the one pvcapid hands uvicorn), in Unix
seconds; no family at all while api.ssl is off. The file is parsed once and again only when its
mtime (or size, or inode: a renewal written by rename) changes, so a scrape costs one stat().
uvicorn reads the certificate when pvcapid starts: a renewed file shows here at once but is
served only after pvcapid restarts.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
from pathlib import Path

from cryptography import x509

from pvc.cluster.metrics.expo import Family, sample

log = logging.getLogger(__name__)

NAME = "pvc_api_certificate_expiry_timestamp_seconds"
FAMILY = Family(
    NAME,
    "Expiry (notAfter) of the TLS certificate the API serves (api.ssl.certificate), Unix seconds; "
    "absent when api.ssl is off",
)


def not_after(pem: bytes) -> int:
    """The first certificate's notAfter in Unix seconds; ValueError when the text is not one."""
    cert = x509.load_pem_x509_certificate(pem)
    when = getattr(cert, "not_valid_after_utc", None)  # cryptography >= 42
    if when is None:  # Debian 12's 38: naive UTC
        when = cert.not_valid_after.replace(tzinfo=datetime.UTC)
    return int(when.timestamp())


class CertificateExpiry:
    """The family's text for one certificate file (None: api.ssl off, nothing rendered)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._key: tuple[int, int, int] | None = None
        self._text = b""
        self._lock = threading.Lock()
        self._problem: str | None = None  # the last one logged (a missing file is not logged per scrape)

    def _make(self, path: Path) -> bytes:
        """The family, or its header and a comment naming the problem (one bad file must not
        fail a scrape; the missing sample is what an alert on absence sees)."""
        try:
            expiry = not_after(path.read_bytes())
        except (OSError, ValueError) as exc:
            problem = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "not a PEM certificate"
            if problem != self._problem:
                log.warning("metrics: cannot read the API certificate %s: %s", path, problem)
            self._problem = problem
            return (FAMILY.header() + f"# PVC: cannot read the API certificate {path}: {problem}\n").encode()
        self._problem = None
        return (FAMILY.header() + sample(NAME, expiry)).encode()

    def render(self) -> bytes:
        path = self.path
        if path is None:
            return b""
        try:
            st = os.stat(path)
            key: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            key = None  # missing now: re-checked on every scrape until it is back
        with self._lock:
            if key is None or key != self._key:
                self._text = self._make(path)
                self._key = key
            return self._text

"""pvcapid's TLS material: check the configured certificate, or make one for a lone node (D14).

On a cluster the installer (or the lab) issues one API certificate from the cluster CA, valid for
every coordinator and the floating address, and puts it on every coordinator: whichever node is
primary then serves the same identity. When api.ssl is enabled and the certificate and key do not
exist, pvcapid issues them itself from the configured CA (making the CA first if it does not
exist either) for this host's names and addresses. That keeps a single hand-made node secure by
default; the log says where the files are and the CA's fingerprint, which clients must trust.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from pvc.core import pki
from pvc.core.config import Settings

log = logging.getLogger("pvcapid")
WILDCARDS = ("0.0.0.0", "::", "[::]", "")


class TLSSetupError(Exception):
    """The API's TLS files are unusable or cannot be made; the message names the file."""


@dataclass(frozen=True)
class TLSFiles:
    certificate: Path
    private_key: Path
    ca_certificate: Path | None
    ca_key: Path | None
    generated: bool


def host_names(settings: Settings) -> list[str]:
    """The names a self-made API certificate covers: this host, loopback, the listen address,
    every local address when listening on all of them, and the cluster's floating address."""
    names = ["localhost", socket.gethostname(), socket.getfqdn(), "127.0.0.1", "::1"]
    listen = settings.api.listen.address
    if listen in WILDCARDS:
        names += _local_addresses()
    else:
        names.append(listen)
    floating = getattr(settings.networking, "floating_address", None)
    if floating:
        names.append(str(ipaddress.ip_interface(floating).ip))
    out: list[str] = []
    for name in names:
        try:
            pki.split_names([name])
        except pki.PKIError:
            continue    # e.g. a hostname with characters a DNS name cannot have
        if name not in out:
            out.append(name)
    return out


def _local_addresses() -> list[str]:
    found = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                ip = address.address.split("%")[0]    # drop an IPv6 zone
                if not ipaddress.ip_address(ip).is_link_local:
                    found.append(ip)
    return found


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TLSSetupError(f"cannot read the API {what} {path}: {exc.strerror}") from None


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    tmp.replace(path)


def _ca(settings: Settings) -> pki.KeyPair:
    """The configured CA, made (and written) if neither of its files exists."""
    ssl = settings.api.ssl
    if not (ssl.ca_certificate and ssl.ca_key):
        raise TLSSetupError("api.ssl.ca_certificate and api.ssl.ca_key are needed to issue the missing "
                            f"API certificate {ssl.certificate}")
    cert_path, key_path = Path(ssl.ca_certificate), Path(ssl.ca_key)
    if cert_path.exists() and key_path.exists():
        return pki.KeyPair(_read(cert_path, "CA certificate"), _read(key_path, "CA key"))
    if cert_path.exists() or key_path.exists():
        missing = key_path if cert_path.exists() else cert_path
        raise TLSSetupError(f"cannot issue the API certificate {ssl.certificate}: the CA file "
                            f"{missing} is missing (the other half of the CA exists)")
    ca = pki.make_ca(f"PVC cluster {settings.cluster.name} CA")
    pki.write_private(key_path, ca.key)
    _write_public(cert_path, ca.certificate)
    log.warning("TLS: made a new CA %s (key %s), SHA-256 fingerprint %s: clients must trust this "
                "CA (pvc connection add --ca-file)", cert_path, key_path, pki.fingerprint(ca.certificate))
    return ca


def ensure(settings: Settings, names: Iterable[str] | None = None) -> TLSFiles | None:
    """Check (or make) the files api.ssl names; None when TLS is off. Raises TLSSetupError."""
    ssl = settings.api.ssl
    if not ssl.enabled:
        return None
    assert ssl.certificate and ssl.private_key     # the config validator requires both
    cert_path, key_path = Path(ssl.certificate), Path(ssl.private_key)
    ca_cert_path = Path(ssl.ca_certificate) if ssl.ca_certificate else None
    generated = False
    if not cert_path.exists() and not key_path.exists():
        ca = _ca(settings)
        pair = pki.issue_server(ca, f"pvcapid {settings.cluster.name}",
                                list(names) if names is not None else host_names(settings))
        pki.write_private(key_path, pair.key)
        _write_public(cert_path, pair.certificate)
        generated = True
        log.warning("TLS: no API certificate was installed: made %s (key %s) for %s, signed by %s",
                    cert_path, key_path, ", ".join(pki.alt_names(pair.certificate)), ca_cert_path)
        if len(settings.cluster.coordinator_nodes) > 1:
            log.warning("TLS: this cluster has %d coordinators; each one without the cluster's "
                        "certificate makes its own, so clients will see another identity after a "
                        "primary change: install one CA-signed certificate on every coordinator",
                        len(settings.cluster.coordinator_nodes))
    elif not (cert_path.exists() and key_path.exists()):
        missing = key_path if cert_path.exists() else cert_path
        raise TLSSetupError(f"the API's TLS file {missing} is missing (the other one exists); "
                            "restore it or remove both to have pvcapid make new ones")
    cert, key = _read(cert_path, "certificate"), _read(key_path, "private key")
    try:
        if not pki.key_matches(cert, key):
            raise TLSSetupError(f"the API private key {key_path} does not belong to {cert_path}")
    except pki.PKIError as exc:
        raise TLSSetupError(f"API TLS ({cert_path}): {exc}") from None
    if ca_cert_path is not None and ca_cert_path.exists():
        try:
            pki.verify(cert, _read(ca_cert_path, "CA certificate"))
        except pki.PKIError as exc:     # e.g. a certificate of a public CA, or a chain: say so
            log.warning("TLS: clients verifying against %s will refuse %s: %s", ca_cert_path,
                        cert_path, exc)
    log.info("TLS: serving %s, SHA-256 fingerprint %s", cert_path, pki.fingerprint(cert))
    return TLSFiles(cert_path, key_path, ca_cert_path, Path(ssl.ca_key) if ssl.ca_key else None, generated)

"""A minimal PKI for the cluster's TLS: a CA, server and client certificates, checks (DESIGN D14).

The API (pvcapid) and libvirt's migration listener both need certificates that every node and
client can verify against one cluster CA. The installer (or the lab) makes the CA once and issues
certificates from it; pvcapid uses the same functions for its single-node fallback. Everything
here is pure (PEM bytes in, PEM bytes out) except `write_private`, the one way to put a private
key on disk: created 0600 and renamed into place, so no reader ever sees a partial or
world-readable key.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
CERT_DAYS = 825          # the longest validity clients (browsers) accept for a server certificate
_BACKDATE = datetime.timedelta(minutes=5)   # tolerate small clock differences between nodes

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class PKIError(ValueError):
    """A certificate or key is unusable; the message names which and why."""


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    certificate: bytes
    key: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    if not common_name or len(common_name) > 64:
        raise PKIError(f"invalid certificate common name {common_name!r} (1-64 characters)")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(name: str, days: int = CA_DAYS) -> KeyPair:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = _new_key()
    subject = _name(name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def split_names(names: Iterable[str]) -> tuple[list[str], list[IPAddress]]:
    """Subject alternative names as (DNS names, IP addresses); duplicates dropped, order kept."""
    dns: list[str] = []
    ips: list[IPAddress] = []
    for raw in names:
        name = str(raw).strip().strip("[]")
        if not name:
            raise PKIError("empty name in a certificate's subject alternative names")
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            if not all(part and len(part) <= 63 and part.replace("-", "").replace("_", "").isalnum()
                       for part in name.removeprefix("*.").split(".")):
                raise PKIError(f"invalid DNS name {name!r} for a certificate") from None
            if name.lower() not in (d.lower() for d in dns):
                dns.append(name)
            continue
        if ip not in ips:
            ips.append(ip)
    return dns, ips


def issue(ca: KeyPair, common_name: str, names: Iterable[str] = (), *, server: bool = True,
          client: bool = False, days: int = CERT_DAYS) -> KeyPair:
    """An end-entity certificate signed by `ca`, for DNS names and IP addresses in `names`.

    `server` and `client` set the extended key usages (libvirt's nodes need both: each is a
    migration server and, to its peers, a client).
    """
    if not (server or client):
        raise PKIError("a certificate must be for a server, a client or both")
    ca_cert, ca_key = load_certificate(ca.certificate), load_private_key(ca.key)
    _check_ca(ca_cert)
    dns, ips = split_names(names)
    if server and not (dns or ips):
        raise PKIError(f"a server certificate ({common_name}) needs at least one DNS name or address")
    key = _new_key()
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), _not_after(ca_cert))
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + \
             ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # key_encipherment means nothing to an EC key but libvirt refuses a critical key usage
        # without it (virNetTLSContextCheckCertKeyUsage); OpenSSL and browsers accept it.
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                     key_cert_sign=False, crl_sign=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if dns or ips:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([*(x509.DNSName(d) for d in dns),
                                         *(x509.IPAddress(i) for i in ips)]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_server(ca: KeyPair, common_name: str, names: Iterable[str], days: int = CERT_DAYS) -> KeyPair:
    return issue(ca, common_name, names, server=True, client=False, days=days)


def issue_client(ca: KeyPair, common_name: str, names: Iterable[str] = (),
                 days: int = CERT_DAYS) -> KeyPair:
    return issue(ca, common_name, names, server=False, client=True, days=days)


def load_certificate(pem: bytes, what: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PKIError(f"the {what} is not a PEM certificate: {exc}") from None


def load_private_key(pem: bytes, what: str = "private key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise PKIError(f"the {what} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PKIError(f"the {what} is a {type(key).__name__}, expected an EC or RSA key")
    return key


def _check_ca(cert: x509.Certificate) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise PKIError(f"{subject_of(cert)} is not a CA certificate")


def _not_before(cert: x509.Certificate) -> datetime.datetime:
    # cryptography < 42 (Debian 12 has 38) only has the naive-UTC properties
    return cert.not_valid_before.replace(tzinfo=datetime.UTC)


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    return cert.not_valid_after.replace(tzinfo=datetime.UTC)


def _check_signature(cert: x509.Certificate, ca: x509.Certificate) -> None:
    """The CA's signature over the certificate (by hand: Debian 12's cryptography predates
    Certificate.verify_directly_issued_by)."""
    public = ca.public_key()
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:
        raise ValueError("the certificate has no signature hash algorithm")
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
    elif isinstance(public, rsa.RSAPublicKey):
        public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algorithm)
    else:
        raise ValueError(f"unsupported CA key type {type(public).__name__}")


def subject_of(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"'{names[0].value}'" if names else cert.subject.rfc4514_string()


def fingerprint(pem: bytes) -> str:
    """SHA-256 fingerprint as colon-separated hex, what `openssl x509 -fingerprint` shows."""
    return load_certificate(pem).fingerprint(hashes.SHA256()).hex(":").upper()


def alt_names(pem: bytes) -> list[str]:
    """The certificate's DNS names and IP addresses, as strings."""
    try:
        san = load_certificate(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName),
            *(str(i) for i in san.get_values_for_type(x509.IPAddress))]


def verify(cert_pem: bytes, ca_pem: bytes, names: Iterable[str] = (),
           at: datetime.datetime | None = None) -> None:
    """Check that `ca_pem` signed `cert_pem`, that both are valid now and that the certificate
    covers every name in `names`; raise PKIError naming the first problem."""
    cert, ca = load_certificate(cert_pem), load_certificate(ca_pem, "CA certificate")
    _check_ca(ca)
    now = at or _now()
    for which, item in (("certificate", cert), ("CA certificate", ca)):
        if not _not_before(item) <= now <= _not_after(item):
            raise PKIError(f"the {which} {subject_of(item)} is not valid now (valid "
                           f"{_not_before(item):%Y-%m-%d} to {_not_after(item):%Y-%m-%d})")
    if cert.issuer != ca.subject:
        raise PKIError(f"the certificate {subject_of(cert)} was not issued by the CA {subject_of(ca)}")
    try:
        _check_signature(cert, ca)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise PKIError(f"the certificate {subject_of(cert)} is not signed by the CA "
                       f"{subject_of(ca)}: {exc or 'bad signature'}") from None
    dns, ips = split_names(names)
    covered = alt_names(cert_pem)
    covered_dns = {n.lower() for n in covered}
    for name in [*dns, *(str(i) for i in ips)]:
        if name.lower() not in covered_dns and str(name) not in covered:
            raise PKIError(f"the certificate {subject_of(cert)} does not cover {name} "
                           f"(it covers {', '.join(covered) or 'no names'})")


def key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether the private key belongs to the certificate."""
    def spki(key: object) -> bytes:     # public keys compare by encoding (no __eq__ before 41)
        return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                                serialization.PublicFormat.SubjectPublicKeyInfo)

    return spki(load_private_key(key_pem).public_key()) == spki(load_certificate(cert_pem).public_key())


def write_private(path: str | Path, data: bytes) -> None:
    """Write a secret (a private key) as an owner-only file, atomically: it exists 0600 from its
    first byte and appears at `path` complete or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""pvc.core.pki: CA, server/client certificates, verification, private key files."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from pvc.core import pki


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.make_ca("test cluster CA")


def test_ca_is_a_ca_for_end_entities_only(ca: pki.KeyPair) -> None:
    cert = pki.load_certificate(ca.certificate)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert pki.key_matches(ca.certificate, ca.key)


def test_server_certificate_covers_its_names_and_verifies(ca: pki.KeyPair) -> None:
    server = pki.issue_server(ca, "api", ["pvc.example.org", "10.0.0.1", "127.0.0.1", "::1"])
    assert pki.alt_names(server.certificate) == ["pvc.example.org", "10.0.0.1", "127.0.0.1", "::1"]
    pki.verify(server.certificate, ca.certificate, ["PVC.example.org", "10.0.0.1", "[::1]"])
    usage = pki.load_certificate(server.certificate).extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert pki.key_matches(server.certificate, server.key)
    assert not pki.key_matches(server.certificate, ca.key)


def test_client_and_dual_use_certificates(ca: pki.KeyPair) -> None:
    client = pki.issue_client(ca, "hv1")
    usage = pki.load_certificate(client.certificate).extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    both = pki.issue(ca, "hv1", ["10.0.0.1"], server=True, client=True)
    usage = pki.load_certificate(both.certificate).extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_a_certificate_of_another_ca_is_refused(ca: pki.KeyPair) -> None:
    other = pki.make_ca("test cluster CA")    # same name, different key
    server = pki.issue_server(other, "api", ["127.0.0.1"])
    with pytest.raises(pki.PKIError, match="not signed by the CA"):
        pki.verify(server.certificate, ca.certificate)
    stranger = pki.issue_server(pki.make_ca("someone else"), "api", ["127.0.0.1"])
    with pytest.raises(pki.PKIError, match="not issued by the CA 'test cluster CA'"):
        pki.verify(stranger.certificate, ca.certificate)


def test_uncovered_name_expired_certificate_and_non_ca_are_refused(ca: pki.KeyPair) -> None:
    server = pki.issue_server(ca, "api", ["10.0.0.1"])
    with pytest.raises(pki.PKIError, match=r"does not cover 10.0.0.2 \(it covers 10.0.0.1\)"):
        pki.verify(server.certificate, ca.certificate, ["10.0.0.2"])
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=pki.CERT_DAYS + 1)
    with pytest.raises(pki.PKIError, match="certificate 'api' is not valid now"):
        pki.verify(server.certificate, ca.certificate, at=later)
    with pytest.raises(pki.PKIError, match="'api' is not a CA certificate"):
        pki.issue_server(server, "x", ["10.0.0.3"])


def test_bad_input_is_named() -> None:
    with pytest.raises(pki.PKIError, match="not a PEM certificate"):
        pki.load_certificate(b"garbage")
    with pytest.raises(pki.PKIError, match="invalid DNS name 'bad name'"):
        pki.split_names(["bad name"])
    with pytest.raises(pki.PKIError, match="needs at least one DNS name or address"):
        pki.issue_server(pki.make_ca("c"), "api", [])
    with pytest.raises(pki.PKIError, match="common name"):
        pki.make_ca("")


def test_write_private_is_owner_only_and_atomic(tmp_path: Path) -> None:
    target = tmp_path / "ssl" / "api.key"
    pki.write_private(target, b"secret")
    assert target.read_bytes() == b"secret"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    old_umask = os.umask(0)
    try:
        pki.write_private(target, b"secret2")       # replaced, still 0600 whatever the umask
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"secret2"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["api.key"]   # no temporary left


def test_fingerprint_matches_the_der_hash(ca: pki.KeyPair) -> None:
    import hashlib

    der = ssl.PEM_cert_to_DER_cert(ca.certificate.decode())
    assert pki.fingerprint(ca.certificate) == hashlib.sha256(der).hexdigest().upper()[:2] + \
        ":" + ":".join(hashlib.sha256(der).hexdigest().upper()[i:i + 2] for i in range(2, 64, 2))


def test_openssl_accepts_the_certificates_in_a_real_handshake(ca: pki.KeyPair, tmp_path: Path) -> None:
    """Python's ssl (OpenSSL) serves the server certificate and verifies it against the CA."""
    server = pki.issue_server(ca, "api", ["localhost", "127.0.0.1"])
    (tmp_path / "api.crt").write_bytes(server.certificate)
    pki.write_private(tmp_path / "api.key", server.key)
    (tmp_path / "ca.crt").write_bytes(ca.certificate)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "api.crt", tmp_path / "api.key")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except ssl.SSLError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.recv(2) == b"ok"
    thread.join(5)
    listener.close()

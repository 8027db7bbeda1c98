"""The lab's PKI: one CA per lab, the API certificate, libvirt's migration certificates (D14).

The lab runs with the secure defaults of a real cluster: pvcapid serves HTTPS with a certificate
of the lab's CA valid for every node address, the floating address and 127.0.0.1 (the lab relays
the API there), and libvirtds accept migrations only over TLS with a client certificate of the same
CA. Everything lives under the lab's state directory, root-only; `pvc-lab down` removes it.

Layout: <state>/pki/{ca.crt,ca.key,api.crt,api.key}, <state>/pki/libvirt-client/ (what every
node's libvirtd and pvcnoded present when they dial a peer, through `?pkipath=` in the migration
URI) and <node>/libvirt/pki/ (the node's libvirtd server certificate, as /etc/pki/libvirt is on a
real node).
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterable
from pathlib import Path

import httpx

from pvc.core import pki
from pvc.lab.plan import LabPlan, NodePlan

LIBVIRT_TLS_PORT = 16514
MIGRATION_CLIENT_CN = "pvc-lab-migration"
_CA_LOCK = threading.Lock()      # two threads making the CA at once would sign with different keys


def pki_dir(plan: LabPlan) -> Path:
    return plan.state_dir / "pki"


def ca_file(plan: LabPlan) -> Path:
    return pki_dir(plan) / "ca.crt"


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def _write_pair(cert_path: Path, key_path: Path, pair: pki.KeyPair) -> None:
    pki.write_private(key_path, pair.key)
    cert_path.write_bytes(pair.certificate)


def lab_ca(plan: LabPlan) -> pki.KeyPair:
    """The lab's CA, made once per lab (kept across `pvc-lab up` of the same lab)."""
    directory = _private_dir(pki_dir(plan))
    cert, key = directory / "ca.crt", directory / "ca.key"
    with _CA_LOCK:
        if not (cert.exists() and key.exists()):
            _write_pair(cert, key, pki.make_ca(f"pvc-lab {plan.name} CA"))
        return pki.KeyPair(cert.read_bytes(), key.read_bytes())


def api_names(plan: LabPlan, extra: Iterable[str] = ()) -> list[str]:
    """Every node address, `extra` (the floating address), the root namespace's relay, and the
    addresses another lab's nodes reach this API at through a link (pvc.lab.link), so a send
    between two labs verifies this certificate against this lab's CA."""
    from pvc.lab.link import link_addresses

    return [*(n.address for n in plan.nodes), *extra, "127.0.0.1", "localhost", *link_addresses()]


def api_certificate(plan: LabPlan, extra: Iterable[str] = ()) -> tuple[Path, Path]:
    """The one API certificate every coordinator serves (primary changes keep the identity)."""
    directory = pki_dir(plan)
    cert, key = directory / "api.crt", directory / "api.key"
    ca = lab_ca(plan)
    names = api_names(plan, extra)
    if cert.exists() and key.exists():
        try:
            pki.verify(cert.read_bytes(), ca.certificate, names)
            return cert, key
        except pki.PKIError:
            pass        # the lab grew nodes, or the CA changed: issue a new one
    _write_pair(cert, key, pki.issue_server(ca, f"pvc-lab {plan.name} API", names))
    return cert, key


def api_ssl(plan: LabPlan, extra: Iterable[str] = ()) -> dict[str, object]:
    """A node's api.ssl section (the CA's key stays in the lab's directory, not on the nodes)."""
    cert, key = api_certificate(plan, extra)
    return {"enabled": True, "certificate": str(cert), "private_key": str(key),
            "ca_certificate": str(ca_file(plan)), "ca_key": None}


def api_base(plan: LabPlan) -> str:
    """The lab API's base URL as the root namespace reaches it (through the relay)."""
    return f"https://127.0.0.1:{plan.api_port}/api/v1"


def api_verify(plan: LabPlan) -> ssl.SSLContext:
    """What an HTTP client verifies the lab API against: the lab's CA only."""
    return ssl.create_default_context(cafile=str(ca_file(plan)))


def api_client(plan: LabPlan, timeout: float | httpx.Timeout = 10) -> httpx.Client:
    """An HTTPS client of the lab's API as the root namespace reaches it: verified against the lab's
    CA only, authenticated with the lab's token (the one construction the lab tools, tests and
    benches share)."""
    return httpx.Client(base_url=api_base(plan), verify=api_verify(plan), timeout=timeout,
                        headers={"X-Api-Key": str(plan.extra.get("api_token", ""))})


# -- libvirt ---------------------------------------------------------------------------------------

def libvirt_pki_dir(node: NodePlan) -> Path:
    return node.libvirt_dir / "pki"


def libvirt_client_dir(plan: LabPlan) -> Path:
    return pki_dir(plan) / "libvirt-client"


def libvirt_server(plan: LabPlan, node: NodePlan) -> Path:
    """The node's libvirtd server certificate (its underlay address) in libvirt's file names;
    returns the directory."""
    ca = lab_ca(plan)
    directory = _private_dir(libvirt_pki_dir(node))
    cert, key = directory / "servercert.pem", directory / "serverkey.pem"
    (directory / "cacert.pem").write_bytes(ca.certificate)
    try:
        pki.verify(cert.read_bytes(), ca.certificate, [node.address])
        if key.exists():
            return directory
    except (OSError, pki.PKIError):
        pass
    _write_pair(cert, key, pki.issue_server(ca, f"{plan.name}-{node.name}", [node.address]))
    return directory


def libvirt_client(plan: LabPlan) -> Path:
    """The client certificate nodes present to a peer's libvirtd (`?pkipath=` this directory)."""
    ca = lab_ca(plan)
    directory = _private_dir(libvirt_client_dir(plan))
    cert, key = directory / "clientcert.pem", directory / "clientkey.pem"
    (directory / "cacert.pem").write_bytes(ca.certificate)
    try:
        pki.verify(cert.read_bytes(), ca.certificate)
        if key.exists():
            return directory
    except (OSError, pki.PKIError):
        pass
    _write_pair(cert, key, pki.issue_client(ca, MIGRATION_CLIENT_CN))
    return directory


def qemu_tls(plan: LabPlan, node: NodePlan) -> Path:
    """QEMU's x509 directory for TLS-encrypted migration streams (VIR_MIGRATE_TLS): the node's
    server certificate (the destination's QEMU listens) and the lab's client certificate (the
    source's QEMU dials), in QEMU's file names; returns the directory."""
    server, client = libvirt_server(plan, node), libvirt_client(plan)
    directory = _private_dir(libvirt_pki_dir(node) / "qemu")
    for source, target in ((server / "cacert.pem", "ca-cert.pem"),
                           (server / "servercert.pem", "server-cert.pem"),
                           (client / "clientcert.pem", "client-cert.pem")):
        (directory / target).write_bytes(source.read_bytes())
    for source, target in ((server / "serverkey.pem", "server-key.pem"),
                           (client / "clientkey.pem", "client-key.pem")):
        pki.write_private(directory / target, source.read_bytes())
    return directory


def migration_uri_template(plan: LabPlan) -> str:
    """qemu+tls to the peer, presenting the lab's client certificate."""
    return f"qemu+tls://{{address}}/system?pkipath={libvirt_client(plan)}"


def migration_uri(plan: LabPlan, address: str) -> str:
    return migration_uri_template(plan).replace("{address}", address)

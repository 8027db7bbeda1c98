"""Automirror destinations may name the CA their certificate is signed by (ours)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvc.core.config import MirrorDestination
from pvc.worker.kinds import automirror
from pvc.worker.send import SendFailed


def test_destination_ca_file_is_read_for_the_send(tmp_path: Path) -> None:
    ca = tmp_path / "dr-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    dest = MirrorDestination(address="dr.example", key="k" * 32, ca_file=str(ca))
    assert automirror._read_ca(dest.ca_file) == ca.read_text()
    assert automirror._read_ca(None) is None


def test_unreadable_ca_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(SendFailed, match=f"automirror destination CA file {missing}"):
        automirror._read_ca(str(missing))

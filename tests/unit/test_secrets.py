"""pvc.core.secrets' pure parts: sealing, redaction, masking, and no secret in task arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvc.core import secrets
from pvc.core.secrets import ClusterKey, SecretError
from pvc.core.taskkinds import TASK_KINDS


def test_seal_and_open_roundtrip_and_plaintext_passes_through() -> None:
    key = ClusterKey(secrets.generate_key())
    sealed = key.seal("hunter2-hunter2")
    assert secrets.is_sealed(sealed) and "hunter2" not in str(sealed)
    assert key.open(sealed) == "hunter2-hunter2"
    assert key.open("legacy-plaintext") == "legacy-plaintext"
    with pytest.raises(SecretError, match="not a sealed secret"):
        key.open({"aes": "x"})


def test_fence_info_is_sealed_only_when_it_holds_a_secret(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.key")
    lab = {"agent": "lab", "node": "hv1", "lab_name": "pvclab"}
    assert secrets.seal_fence_info(lab, missing) == lab          # no secret: no key needed
    assert secrets.open_fence_info(lab, None) == lab
    with pytest.raises(SecretError, match=r"none\.key"):
        secrets.seal_fence_info({**lab, "agent": "ipmi", "password": "pw-123456"}, missing)
    path = tmp_path / "cluster.key"
    secrets.write_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    sealed = secrets.seal_fence_info({"agent": "ipmi", "password": "pw-123456"}, str(path))
    assert secrets.is_sealed(sealed["password"])
    assert secrets.open_fence_info(sealed, str(path)) == {"agent": "ipmi", "password": "pw-123456"}


def test_redact() -> None:
    doc = {"name": "vm1", "keepalive": 5, "password": "x", "api_key": "y", "Token": "z",
           "secret_key": "s", "nested": [{"ipmi_password": "p", "monkey": 1, "key": "k"}],
           "sealed": {"fernet": "gAAAA"}, "empty_password": "", "keyring_file": "/etc/k"}
    assert secrets.redact(doc) == {
        "name": "vm1", "keepalive": 5, "password": "***", "api_key": "***", "Token": "***",
        "secret_key": "***", "nested": [{"ipmi_password": "***", "monkey": 1, "key": "***"}],
        "sealed": "***", "empty_password": "", "keyring_file": "***"}
    assert doc["password"] == "x"                                 # a copy


def test_mask_longest_first_and_short_values_ignored() -> None:
    secrets.remember("abc", "unit-secret-1", "unit-secret-1-longer")
    assert secrets.mask("a unit-secret-1-longer and unit-secret-1, abc") == "a *** and ***, abc"


@pytest.mark.parametrize("kind", sorted(TASK_KINDS))
def test_no_task_kind_takes_a_secret_argument(kind: str) -> None:
    """Task arguments are stored in ZooKeeper and shown by GET /tasks: no field may be a secret."""
    fields = TASK_KINDS[kind].model_fields
    assert not [name for name in fields if secrets.is_secret_key(name)], kind


def test_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "etc" / "cluster.key"
    assert secrets.main(["keygen", str(path)]) == 0
    assert path.stat().st_mode & 0o777 == 0o600 and secrets.load_key(path)
    first = path.read_bytes()
    assert secrets.main(["keygen", str(path)]) == 1                # never replaces a key
    assert "refusing to replace it" in capsys.readouterr().err and path.read_bytes() == first
    assert secrets.main(["keygen"]) == 2

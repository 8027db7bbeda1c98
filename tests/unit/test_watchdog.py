"""The watchdog adapter with a regular file as its device: the ioctl fails (logged), the writes land."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pvc.adapters.watchdog import Watchdog


def test_open_pet_close_writes_pets_then_the_magic_close(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    device = tmp_path / "watchdog"
    device.write_bytes(b"")
    dog = Watchdog(str(device), 30)
    dog.pet()                                   # not open yet: nothing happens
    with caplog.at_level(logging.WARNING, logger="pvcnoded.watchdog"):
        dog.open()
        dog.open()                              # idempotent: one fd, one warning
    assert dog.is_open
    assert sum("cannot set the timeout" in r.getMessage() for r in caplog.records) == 1
    dog.pet()
    dog.pet()
    dog.close()
    dog.close()
    dog.pet()                                   # closed: nothing happens
    assert not dog.is_open
    assert device.read_bytes() == b"\0\0V"


def test_open_fails_on_a_missing_device(tmp_path: Path) -> None:
    dog = Watchdog(str(tmp_path / "missing"), 30)
    with pytest.raises(FileNotFoundError):
        dog.open()
    assert not dog.is_open
    dog.close()                                 # harmless


def test_pet_errors_are_logged_once_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    device = tmp_path / "watchdog"
    device.write_bytes(b"")
    dog = Watchdog(str(device), 30)
    dog.open()

    def broken(fd: int, data: bytes) -> int:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("pvc.adapters.watchdog.os.write", broken)
    with caplog.at_level(logging.ERROR, logger="pvcnoded.watchdog"):
        dog.pet()
        dog.pet()
    assert sum("cannot pet" in r.getMessage() for r in caplog.records) == 1
    monkeypatch.undo()
    dog.close()
    assert device.read_bytes() == b"V"

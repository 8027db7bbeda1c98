"""Fixtures shared by the lab tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.test_network_adapter import Topo


@pytest.fixture
def topo() -> Iterator[Topo]:
    t = Topo()
    try:
        yield t
    finally:
        t.destroy()

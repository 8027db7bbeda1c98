"""The host tests: packages built by `make deb`, and the booted-container lane."""

from __future__ import annotations

import os

import pytest

# Not yet passing on a clean clone: it installs, upgrades and purges the daemon packages in a
# throwaway root, and is being finished with the container lane (issue #18).
UNFINISHED = {"test_maintainer_scripts_install_upgrade_and_purge"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("PVC_TEST_HOSTS"):
        return
    skip = pytest.mark.skip(reason="opt-in (PVC_TEST_HOSTS=1) while the upgrade path is being finished")
    for item in items:
        if item.name in UNFINISHED and "tests/hosts/" in str(item.fspath):
            item.add_marker(skip)

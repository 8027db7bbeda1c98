"""Upstream's plugin interface (`from pvchealthd.objects.MonitoringInstance import MonitoringPlugin`).

A plugin file defines `PLUGIN_NAME` and `class MonitoringPluginScript(MonitoringPlugin)` with
`setup()` (a non-None return or an exception refuses loading), `run(coordinator_state=None)`
(sets `self.plugin_result` and returns it) and `cleanup()`. Differences from upstream, all on
the host's side: each run is a process of its own (so setup() and cleanup() bracket every run),
`self.zkhandler` is None (plugins have no ZooKeeper handle here), and `self.log` lines reach the
node log through the runner.
"""

from __future__ import annotations

import time
from typing import Any

LOG_STATES = {"d": "debug", "i": "info", "t": "debug", "o": "info", "w": "warning", "e": "error"}


class ThisNode:
    """What upstream plugins read of `self.this_node`: its name and coordinator state."""

    def __init__(self, name: str, coordinator_state: str | None = None) -> None:
        self.name = name
        self.coordinator_state = coordinator_state

    def __repr__(self) -> str:
        return f"ThisNode({self.name!r})"


class PluginLogger:
    """Collects `self.log` lines of one run; the runner writes them into the node log."""

    def __init__(self, debug: bool = False) -> None:
        self.debug = debug
        self.lines: list[tuple[str, str]] = []

    def out(self, message: str, state: str | None = None, prefix: str = "") -> None:
        level = LOG_STATES.get(state or "i", "info")
        if level == "debug" and not self.debug:
            return
        text = f"{prefix}: {message}" if prefix else str(message)
        if len(self.lines) < 100:
            self.lines.append((level, text[:2000]))


class PluginResult:
    """One run's result. A fresh object per run (upstream reused one, so a plugin that did not
    set a field reported the previous run's value)."""

    def __init__(self, zkhandler: Any = None, config: Any = None, logger: Any = None,
                 this_node: Any = None, plugin_name: str = "") -> None:
        self.zkhandler, self.config, self.logger, self.this_node = zkhandler, config, logger, this_node
        self.plugin_name = plugin_name
        self.current_time = int(time.time())
        self.health_delta: int = 0
        self.message: str = "N/A"
        self.data: dict[str, Any] = {}
        self.runtime = "0.00"

    def set_health_delta(self, new_delta: int) -> None:
        self.health_delta = new_delta

    def set_message(self, new_message: str) -> None:
        self.message = new_message

    def set_data(self, new_data: dict[str, Any]) -> None:
        self.data = new_data

    def set_runtime(self, new_runtime: str) -> None:
        self.runtime = new_runtime

    def to_zookeeper(self) -> None:
        """Upstream wrote the result itself; here the runner does, so this does nothing."""


class MonitoringPlugin:
    """Base class of every plugin; constructed as upstream does:
    `MonitoringPluginScript(zkhandler, config, logger, this_node, plugin_name)`."""

    def __init__(self, zkhandler: Any, config: dict[str, Any], logger: Any, this_node: Any,
                 plugin_name: str) -> None:
        self.zkhandler = zkhandler
        self.config = config
        self.logger = logger
        self.this_node = this_node
        self.plugin_name = plugin_name
        self.plugin_result = PluginResult(zkhandler, config, logger, this_node, plugin_name)

    def __str__(self) -> str:
        return self.plugin_name

    def update_plugin_result(self) -> None:
        """Upstream wrote the result here; the runner collects it from `run()`'s return."""

    def log(self, message: str, state: str = "d") -> None:
        if self.logger is not None:
            self.logger.out(message, state=state, prefix=self.plugin_name)

    def setup(self) -> str | None:
        """Return a message (or raise) to refuse loading: the check does not apply here."""
        return None

    def run(self, coordinator_state: str | None = None) -> PluginResult:
        """Set and return self.plugin_result."""
        return self.plugin_result

    def cleanup(self) -> None:
        """Release what setup() acquired."""

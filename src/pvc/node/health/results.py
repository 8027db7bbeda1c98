"""A plugin's result, node health and the plugin faults: the arithmetic, without I/O.

Unlike upstream, a plugin that crashes (exception, unusable result, process death) or times out
is never healthy: it costs `FAILURE_DELTA` with the reason as its message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FAILURE_DELTA = 10
NOT_APPLICABLE = "not applicable"


@dataclass
class PluginState:
    """The latest result of one plugin, as it goes into `health_details`."""
    name: str
    last_run: float
    health_delta: int
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    runtime: float = 0.0
    error: str | None = None        # crash or timeout text; None for a result of the plugin's own

    def detail(self) -> dict[str, Any]:
        """Upstream's shape (name, last_run, health_delta, message, data, runtime) plus `error`."""
        return {"name": self.name, "last_run": int(self.last_run), "health_delta": self.health_delta,
                "message": self.message, "data": self.data, "runtime": self.runtime,
                "error": self.error}


def from_host(raw: dict[str, Any], now: float) -> PluginState:
    """A plugin host answer (`pvchealthd.host`) as a state; refusals are handled by the caller."""
    name = str(raw.get("name", ""))
    runtime = float(raw.get("runtime") or 0.0)
    error = raw.get("error")
    if error:
        return PluginState(name, now, FAILURE_DELTA, str(error), {}, runtime, str(error))
    data = raw.get("data")
    return PluginState(name, now, int(raw.get("health_delta", 0)), str(raw.get("message", "")),
                       data if isinstance(data, dict) else {"value": data}, runtime)


def node_health(states: list[PluginState]) -> int:
    return max(0, 100 - sum(s.health_delta for s in states))


def fault_name(plugin: str, node: str) -> str:
    return f"NODE_PLUGIN_{plugin.upper()}_{node.upper()}"


def fault_delta(state: PluginState) -> int:
    """Upstream: half of the plugin's delta."""
    return state.health_delta // 2


def fault_message(state: PluginState, node: str) -> str:
    return f"{node} {state.name}: {state.message}"

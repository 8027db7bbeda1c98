"""How `pvc vm` shows VMs: the list table, the info view and the `get` views in upstream's shapes.

Pure functions of the API's VM items (no HTTP), so they are tested on their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from pvc.cli.output import human_mib, json_formatters, key_values, table
from pvc.core.units import format_bytes

# as upstream's list: running green, transitional yellow, stopped/failed red, everything else blue
VM_STATE_STYLES = {
    "start": "green",
    "restart": "yellow", "shutdown": "yellow", "disable": "yellow",
    "stop": "red", "fail": "bold red", "delete": "red",
    "mirror": "magenta",
}


def vm_state_style(state: str) -> str:
    """Colour of a VM state (migrate, unmigrate, provision, ... are blue)."""
    return VM_STATE_STYLES.get(state, "blue")


def _state_text(state: Any) -> Text:
    return Text(str(state or ""), style=vm_state_style(str(state or "")))


# -- small data helpers ------------------------------------------------------------------------------

def _tag_names(vm: dict[str, Any]) -> list[str]:
    tags = [t for t in vm.get("tags") or [] if isinstance(t, dict)]
    return [str(t.get("name")) for t in sorted(tags, key=lambda t: f"{t.get('type', '')}{t.get('name', '')}")]


def _net_ids(vm: dict[str, Any]) -> list[str]:
    return [str(n.get("vni", "")) for n in vm.get("networks") or [] if isinstance(n, dict)]


def _node_limit(vm: dict[str, Any]) -> str:
    limit = vm.get("node_limit")
    if isinstance(limit, list):
        return ", ".join(str(n) for n in limit) if limit else "Any"
    return str(limit) if limit else "Any"


def _migrated(vm: dict[str, Any]) -> str:
    migrated = vm.get("migrated")
    if migrated:
        return str(migrated)
    return f"from {vm['last_node']}" if vm.get("last_node") else "no"


def _metric(value: Any) -> str:
    """Counters as upstream shows them: 1234567 -> 1.2M."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(number) >= size:
            return f"{number / size:.1f}{unit}".replace(".0", "")
    return f"{number:.0f}"


def _bytes(value: Any) -> str:
    try:
        return format_bytes(int(value))
    except (TypeError, ValueError):
        return str(value)


def _pair(item: dict[str, Any], key: str, fmt: Callable[[Any], str]) -> str:
    return f"{fmt(item.get(f'rd_{key}', 0))}/{fmt(item.get(f'wr_{key}', 0))}"


def _stats_line(stats: Any) -> str:
    if not isinstance(stats, dict) or not stats:
        return "N/A"
    return ", ".join(f"{key}={value}" for key, value in stats.items())


# -- formatters --------------------------------------------------------------------------------------

LIST_COLUMNS: list[str | tuple[str, str]] = [
    "Name", "State", "Tags", ("Snapshots", "right"), "Networks", ("RAM", "right"), ("vCPUs", "right"),
    "Node", "Migrated",
]


def vm_row(vm: dict[str, Any]) -> list[Any]:
    """One row of `pvc vm list`."""
    return [
        vm.get("name", ""),
        _state_text(vm.get("state")),
        ",".join(_tag_names(vm)) or "N/A",
        len(vm.get("snapshots") or []),
        ",".join(_net_ids(vm)) or "N/A",
        human_mib(vm.get("memory", 0)),
        vm.get("vcpu", 0),
        vm.get("node", ""),
        _migrated(vm),
    ]


def format_list_pretty(vms: Sequence[dict[str, Any]]) -> RenderableType:
    if not vms:
        return "No VMs found."
    return table(LIST_COLUMNS, (vm_row(v) for v in sorted(vms, key=lambda v: str(v.get("name")))))


def format_list_raw(vms: Sequence[dict[str, Any]]) -> str:
    return "\n".join(sorted(str(v.get("name")) for v in vms))


LIST_FORMATS = {"pretty": format_list_pretty, "raw": format_list_raw, **json_formatters()}


def format_info(vm: dict[str, Any], long: bool = False) -> RenderableType:
    """`pvc vm info`: identity, resources, state and placement; `long` adds devices and stats."""
    vnc = vm.get("vnc") if isinstance(vm.get("vnc"), dict) else {}
    vnc_text = f"{vnc.get('listen')}:{vnc.get('port')}" if vnc and vnc.get("port") not in (None, "None", "") \
        else "N/A"
    items: list[tuple[str, Any]] = [
        ("UUID", vm.get("uuid", "")),
        ("Name", vm.get("name", "")),
        ("Description", vm.get("description") or "N/A"),
        ("Profile", vm.get("profile") or "N/A"),
        ("Memory", human_mib(vm.get("memory", 0))),
        ("vCPUs", vm.get("vcpu", 0)),
        ("Topology (S/C/T)", vm.get("vcpu_topology") or "N/A"),
    ]
    if long:
        items += [
            ("Memory stats", _stats_line(vm.get("memory_stats"))),
            ("vCPU stats", _stats_line(vm.get("vcpu_stats"))),
            ("", ""),
            ("Domain type", vm.get("type") or "N/A"),
            ("Architecture", vm.get("arch") or "N/A"),
            ("Machine", vm.get("machine") or "N/A"),
            ("Emulator", vm.get("emulator") or "N/A"),
            ("Features", ", ".join(str(f) for f in vm.get("features") or []) or "N/A"),
            ("Console", vm.get("console") or "N/A"),
        ]
    items += [
        ("", ""),
        ("State", _state_text(vm.get("state"))),
        ("Current node", vm.get("node") or "N/A"),
        ("Previous node", vm.get("last_node") or "N/A"),
        ("Migrated", _migrated(vm)),
    ]
    if vm.get("failed_reason"):
        items.append(("Failed reason", Text(str(vm["failed_reason"]), style="red")))
    items += [
        ("VNC", vnc_text),
        ("", ""),
        ("Node limit", _node_limit(vm)),
        ("Node selector", vm.get("node_selector") or "none"),
        ("Autostart", str(bool(vm.get("node_autostart")))),
        ("Migration method", vm.get("migration_method") or "none"),
        ("Max live downtime", f"{vm.get('migration_max_downtime', 300)} ms"),
        ("Tags", ", ".join(_tag_names(vm)) or "N/A"),
        ("Snapshots", ", ".join(str(s.get("name")) for s in vm.get("snapshots") or []
                                if isinstance(s, dict)) or "N/A"),
        ("Networks", ", ".join(_net_ids(vm)) or "N/A"),
    ]
    snapshots = snapshot_table(vm)
    if not long:
        return Group(key_values(items), "", snapshots) if snapshots is not None else key_values(items)
    disks = table(["ID", "Type", "Name", "Dev", "Bus", "Requests (r/w)", "Data (r/w)"],
                  ([i, d.get("type"), d.get("name"), d.get("dev"), d.get("bus"), _pair(d, "req", _metric),
                    _pair(d, "bytes", _bytes)] for i, d in enumerate(vm.get("disks") or [])),
                  title="Disks")
    nics = table(["ID", "Type", "Source", "Model", "MAC", "Data (r/w)", "Packets (r/w)", "Errors (r/w)"],
                 ([i, n.get("type"), n.get("source"), n.get("model") or "N/A", n.get("mac"),
                   _pair(n, "bytes", _bytes), _pair(n, "packets", _metric), _pair(n, "errors", _metric)]
                  for i, n in enumerate(vm.get("networks") or [])),
                 title="Interfaces")
    controllers = table(["ID", "Type", "Model"],
                        ([i, c.get("type"), c.get("model") or "N/A"]
                         for i, c in enumerate(vm.get("controllers") or [])),
                        title="Controllers")
    parts: list[RenderableType] = [key_values(items), "", disks, "", nics, "", controllers]
    if snapshots is not None:
        parts[1:1] = ["", snapshots]
    return Group(*parts)


def format_age(seconds: Any) -> str:
    """A snapshot's age as upstream's client shows it since 0.9.104: the two largest units."""
    try:
        left = max(0, int(seconds))
    except (TypeError, ValueError):
        return str(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts[:2])


def diff_counts(lines: Sequence[str]) -> tuple[int, int]:
    """(added, removed) lines of a unified diff, its ---/+++ headers left out."""
    body = [line for line in lines if not line.startswith(("+++", "---"))]
    return sum(line.startswith("+") for line in body), sum(line.startswith("-") for line in body)


def snapshot_table(vm: dict[str, Any]) -> RenderableType | None:
    """`pvc vm info`'s snapshots, newest first: Name, Age, Consistency (fs-frozen, paused or crash;
    the column is left out for an upstream API, which does not report it), XML Changes
    (+added/-removed lines)."""
    snaps = [s for s in vm.get("snapshots") or [] if isinstance(s, dict)]
    if not snaps:
        return None
    consistency = any("consistency" in s for s in snaps)
    rows = []
    for snap in snaps:
        added, removed = diff_counts([str(line) for line in snap.get("xml_diff_lines") or []])
        changes = Text.assemble((f"+{added}", "green"), "/", (f"-{removed}", "red"))
        row = [snap.get("name", ""), format_age(snap.get("age", 0))]
        if consistency:
            row.append(str(snap.get("consistency") or "N/A"))
        rows.append([*row, changes])
    headers = ["Name", "Age", *(["Consistency"] if consistency else []), "XML Changes"]
    return table(headers, rows, title="Snapshots")


INFO_FORMATS = {"pretty": lambda v: format_info(v), "long": lambda v: format_info(v, long=True),
                **json_formatters()}


def format_tags(data: dict[str, Any]) -> RenderableType:
    tags = [t for t in data.get("tags") or [] if isinstance(t, dict)]
    if not tags:
        return "No tags found."
    return table(["Name", "Type", "Protected"],
                 ([t.get("name"), t.get("type"), str(bool(t.get("protected")))]
                  for t in sorted(tags, key=lambda t: str(t.get("name")))))


TAG_FORMATS = {"pretty": format_tags,
               "raw": lambda d: "\n".join(str(t.get("name")) for t in d.get("tags") or []),
               **json_formatters()}


def vcpu_data(vm: dict[str, Any]) -> dict[str, Any]:
    """Upstream's `vcpu get` shape: {name, vcpus, sockets, cores, threads}."""
    vcpus = int(vm.get("vcpu") or 0)
    parts = str(vm.get("vcpu_topology") or "").split("/")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        sockets, cores, threads = (int(p) for p in parts)
    else:
        sockets, cores, threads = 1, vcpus, 1
    return {"name": vm.get("name"), "vcpus": vcpus, "sockets": sockets, "cores": cores, "threads": threads}


VCPU_FORMATS = {
    "pretty": lambda d: table(["Name", ("vCPUs", "right"), "Topology (S/C/T)"],
                              [[d["name"], d["vcpus"], f"{d['sockets']}/{d['cores']}/{d['threads']}"]]),
    "raw": lambda d: str(d["vcpus"]),
    **json_formatters(),
}


def memory_data(vm: dict[str, Any]) -> dict[str, Any]:
    return {"name": vm.get("name"), "memory": int(vm.get("memory") or 0)}


MEMORY_FORMATS = {
    "pretty": lambda d: table(["Name", ("RAM (M)", "right"), ("RAM", "right")],
                              [[d["name"], d["memory"], human_mib(d["memory"])]]),
    "raw": lambda d: str(d["memory"]),
    **json_formatters(),
}


def network_data(vm: dict[str, Any]) -> dict[str, Any]:
    """Upstream's `network get` shape: {name, networks: [{network, mac_address, model}]}."""
    return {"name": vm.get("name"),
            "networks": [{"network": str(n.get("vni", "")), "mac_address": n.get("mac"),
                          "model": n.get("model"), "type": n.get("type"), "source": n.get("source")}
                         for n in vm.get("networks") or [] if isinstance(n, dict)]}


NETWORK_FORMATS = {
    "pretty": lambda d: table(["Network", "Source", "MAC Address", "Model"],
                              ([n["network"], n["source"], n["mac_address"], n["model"] or "N/A"]
                               for n in d["networks"])) if d["networks"] else "No networks found.",
    "raw": lambda d: ",".join(n["network"] for n in d["networks"]),
    **json_formatters(),
}


def volume_data(vm: dict[str, Any]) -> dict[str, Any]:
    """Upstream's `volume get` shape: {name, volumes: [{volume, disk_id, protocol, bus}]}."""
    return {"name": vm.get("name"),
            "volumes": [{"volume": d.get("name"), "disk_id": d.get("dev"), "protocol": d.get("type"),
                         "bus": d.get("bus")} for d in vm.get("disks") or [] if isinstance(d, dict)]}


VOLUME_FORMATS = {
    "pretty": lambda d: table(["Volume", "Disk ID", "Protocol", "Bus"],
                              ([v["volume"], v["disk_id"], v["protocol"], v["bus"] or "N/A"]
                               for v in d["volumes"])) if d["volumes"] else "No volumes found.",
    "raw": lambda d: ",".join(f"{v['protocol']}:{v['volume']}" for v in d["volumes"]),
    **json_formatters(),
}

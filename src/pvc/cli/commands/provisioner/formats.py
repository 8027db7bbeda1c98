"""How `pvc provisioner` shows templates, userdata, scripts, profiles and OVAs.

The list views follow the product documents' examples: upstream's plain column layout, unset values
as upstream's CLI prints them (None), documents cut to their first DOCUMENT_LINES lines unless
the `long` format is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text

from pvc.cli.output import json_formatters

DOCUMENT_LINES = 4
NA = "N/A"

Column = tuple[str | None, str]          # (group label or None, header)


def grid(columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> Text:
    """Upstream's plain column layout: columns two spaces apart, a column with a group label
    ("Consoles:", "Metadata:", ...) shows the label before its header and indents its values to
    the header (as in the product documents' examples). The header line is bold."""
    cells = [[str(value) for value in row] for row in rows]
    widths = []
    for index, (label, header) in enumerate(columns):
        indent = len(label) + 1 if label else 0
        width = indent + len(header)
        for row in cells:
            if index < len(row):
                width = max(width, indent + len(row[index]))
        widths.append(width)

    def line(values: Sequence[str], header: bool) -> str:
        parts = []
        for index, (label, _header) in enumerate(columns):
            value = values[index] if index < len(values) else ""
            indent = len(label) + 1 if label else 0
            prefix = (label + " " if header else " " * indent if value else "") if label else ""
            parts.append((prefix + value).ljust(widths[index]))
        return "  ".join(parts).rstrip()

    text = Text(line([h for _l, h in columns], True), style="bold")
    for row in cells:
        text.append("\n" + line(row, False))
    return text


def _s(value: Any) -> str:
    """A value as upstream's CLI prints it: str(), so unset values show None."""
    return str(value)


def _titled(title: str, body: Text | str) -> Text:
    text = Text(title, style="bold")
    text.append("\n\n")
    text.append(body if isinstance(body, Text) else Text(body))
    return text


SYSTEM_COLUMNS: list[Column] = [(None, "Name"), (None, "ID"), (None, "vCPUs"), (None, "vRAM [MB]"),
                                ("Consoles:", "Serial"), (None, "VNC"), (None, "VNC bind"),
                                ("Metadata:", "Limit"), (None, "Selector"), (None, "Autostart"),
                                (None, "Migration")]


def format_system_list(templates: Sequence[dict[str, Any]], title: bool = True) -> Text | str:
    if not templates:
        body: Text | str = "No system templates found."
    else:
        body = grid(SYSTEM_COLUMNS, [
            [t.get("name"), t.get("id"), t.get("vcpu_count"), t.get("vram_mb"), _s(t.get("serial")),
             _s(t.get("vnc")), _s(t.get("vnc_bind")), _s(t.get("node_limit")), _s(t.get("node_selector")),
             _s(t.get("node_autostart")), _s(t.get("migration_method"))]
            for t in sorted(templates, key=lambda t: str(t.get("name")))])
    return _titled("System templates:", body) if title else body


def format_network_list(templates: Sequence[dict[str, Any]], title: bool = True) -> Text | str:
    if not templates:
        body: Text | str = "No network templates found."
    else:
        body = grid([(None, "Name"), (None, "ID"), (None, "MAC template"), (None, "Network VNIs")], [
            [t.get("name"), t.get("id"), _s(t.get("mac_template")),
             ",".join(str(n.get("vni")) for n in t.get("networks") or [])]
            for t in sorted(templates, key=lambda t: str(t.get("name")))])
    return _titled("Network templates:", body) if title else body


STORAGE_COLUMNS: list[Column] = [(None, "Name"), (None, "ID"), (None, "Disk ID"), (None, "Pool"),
                                 (None, "Source Volume"), (None, "Size [GB]"), (None, "Filesystem"),
                                 (None, "Arguments"), (None, "Mountpoint")]


def _fsargs(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value) or "None"
    return str(value) if value not in (None, "") else "None"


def format_storage_list(templates: Sequence[dict[str, Any]], title: bool = True) -> Text | str:
    if not templates:
        body: Text | str = "No storage templates found."
    else:
        rows: list[list[Any]] = []
        for t in sorted(templates, key=lambda t: str(t.get("name"))):
            rows.append([t.get("name"), t.get("id")])
            for d in sorted(t.get("disks") or [], key=lambda d: str(d.get("disk_id"))):
                rows.append(["", "", d.get("disk_id"), d.get("pool"), _s(d.get("source_volume")),
                             _s(d.get("disk_size_gb")), _s(d.get("filesystem")),
                             _fsargs(d.get("filesystem_args")), _s(d.get("mountpoint"))])
        body = grid(STORAGE_COLUMNS, rows)
    return _titled("Storage templates:", body) if title else body


def format_template_list(data: dict[str, Any]) -> Text:
    text = Text()
    parts = [format_system_list(data.get("system_templates") or []),
             format_network_list(data.get("network_templates") or []),
             format_storage_list(data.get("storage_templates") or [])]
    for index, part in enumerate(parts):
        if index:
            text.append("\n\n")
        text.append(part if isinstance(part, Text) else Text(part))
    return text


def _document_rows(docs: Sequence[dict[str, Any]], key: str, lines: int | None) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for doc in sorted(docs, key=lambda d: str(d.get("name"))):
        text_lines = str(doc.get(key) or "").split("\n")
        if text_lines and text_lines[-1] == "":
            text_lines.pop()
        shown = text_lines if lines is None or len(text_lines) <= lines else [*text_lines[:lines], "[...]"]
        rows.append([doc.get("name"), doc.get("id"), shown[0] if shown else ""])
        rows += [["", "", line] for line in shown[1:]]
    return rows


def format_userdata_list(docs: Sequence[dict[str, Any]], lines: int | None = DOCUMENT_LINES) -> Text | str:
    if not docs:
        return "No userdata documents found."
    return grid([(None, "Name"), (None, "ID"), (None, "Document")], _document_rows(docs, "userdata", lines))


def format_script_list(docs: Sequence[dict[str, Any]], lines: int | None = DOCUMENT_LINES) -> Text | str:
    if not docs:
        return "No scripts found."
    return grid([(None, "Name"), (None, "ID"), (None, "Script")], _document_rows(docs, "script", lines))


PROFILE_COLUMNS: list[Column] = [(None, "Name"), (None, "ID"), ("Templates:", "System"), (None, "Network"),
                                 (None, "Storage"), ("Data:", "Userdata"), (None, "Script"),
                                 (None, "Script Arguments")]


def format_profile_list(profiles: Sequence[dict[str, Any]]) -> Text | str:
    if not profiles:
        return "No profiles found."
    rows = []
    for p in sorted(profiles, key=lambda p: str(p.get("name"))):
        args = [a for a in p.get("arguments") or [] if a]
        rows.append([p.get("name"), p.get("id"), p.get("system_template"), p.get("network_template"),
                     p.get("storage_template"), p.get("userdata"), p.get("script"), ", ".join(args) or NA])
    return grid(PROFILE_COLUMNS, rows)


def format_ova_list(ovas: Sequence[dict[str, Any]]) -> Text | str:
    if not ovas:
        return "No OVAs found."
    rows: list[list[Any]] = []
    for ova in sorted(ovas, key=lambda o: str(o.get("name"))):
        rows.append([ova.get("name"), ova.get("id")])
        for v in ova.get("volumes") or []:
            rows.append(["", "", v.get("disk_id"), _s(v.get("disk_size_gb")), v.get("pool"),
                         v.get("volume_name"), v.get("volume_format")])
    return grid([(None, "Name"), (None, "ID"), (None, "Disk ID"), (None, "Size [GB]"), (None, "Pool"),
                 (None, "Volume Name"), (None, "Volume Format")], rows)


def _raw(items: Sequence[dict[str, Any]]) -> str:
    return "\n".join(str(i.get("name")) for i in items)


SYSTEM_FORMATS = {"pretty": format_system_list, "raw": _raw, **json_formatters()}
NETWORK_FORMATS = {"pretty": format_network_list, "raw": _raw, **json_formatters()}
STORAGE_FORMATS = {"pretty": format_storage_list, "raw": _raw, **json_formatters()}
TEMPLATE_FORMATS = {"pretty": format_template_list, **json_formatters()}
USERDATA_FORMATS = {"pretty": format_userdata_list, "long": lambda d: format_userdata_list(d, None),
                    "raw": _raw, **json_formatters()}
SCRIPT_FORMATS = {"pretty": format_script_list, "long": lambda d: format_script_list(d, None), "raw": _raw,
                  **json_formatters()}
PROFILE_FORMATS = {"pretty": format_profile_list, "raw": _raw, **json_formatters()}
OVA_FORMATS = {"pretty": format_ova_list, "raw": _raw, **json_formatters()}

"""Text of the restore answers: what an upstream import maps, leaves unmapped and drops (with why),
and what was written. Pure; the report comes from POST /restore/upstream."""

from __future__ import annotations

from typing import Any


def render_import(report: dict[str, Any]) -> str:
    source = report.get("source") or {}
    mapped = report.get("mapped") or []
    unmapped = report.get("unmapped") or []
    dropped = report.get("dropped") or []
    lines = [f'Upstream cluster "{source.get("cluster", "")}" (schema {source.get("schema_version", "?")})']
    lines.append(f"Maps ({len(mapped)}):")
    for item in mapped:
        key = f" ({item['key']})" if item.get("key") not in (None, item.get("name")) else ""
        lines.append(f"  {item.get('kind', ''):<9} {item.get('name', '')}{key}")
        lines += [f"      note: {note}" for note in item.get("notes") or []]
    if unmapped:
        lines.append(f"Not mapped ({len(unmapped)}):")
        for item in unmapped:
            lines.append(f"  {item.get('kind', ''):<9} {item.get('name', '')} ({item.get('key', '')}): "
                         f"{item.get('reason', '')}")
    if dropped:
        lines.append("Dropped:")
        for drop in dropped:
            lines.append(f"  {drop.get('what', '')} ({drop.get('count', 0)} znodes): "
                         f"{drop.get('reason', '')}")
    written = report.get("written") or []
    if report.get("dry_run"):
        lines.append("Dry run: nothing was written.")
    elif written:
        lines.append(f"Written: {len(written)} item(s).")
        failed = report.get("failed") or []
        if failed:
            lines.append(f"Failed while writing ({len(failed)}), not written:")
            lines += [f"  {f.get('kind', '')} {f.get('name', '')}: {f.get('reason', '')}" for f in failed]
    elif unmapped:
        lines.append(f"Nothing was written: {len(unmapped)} item(s) do not map; fix them upstream, or "
                     f"import the rest with --partial.")
    else:
        lines.append("Nothing was written.")
    if report.get("message"):
        lines.append(str(report["message"]))
    return "\n".join(lines)

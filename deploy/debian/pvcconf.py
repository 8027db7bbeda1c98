#!/usr/bin/python3
"""Render /etc/pvc/pvc.conf from the documented template deploy/pvc.conf.in, and check it.

The template documents every setting of pvc.core.config. A line `#key: @default@` is a setting
shown with its default: the default is filled in here from the schema of the code being
packaged, so the shipped file never drifts from the real defaults. `#key: value` (no
placeholder) is an example (sections without a default, such as autobackup). Active lines with
no value under `cluster:` and `zookeeper:` are the REQUIRED settings, left empty so that the
daemons refuse to start, naming each, until the installer fills them in.

Used by debian/rules (`render`) and by tests/hosts/test_packages.py (the other functions):

    pvcconf.py render TEMPLATE [--out FILE]     the conffile on stdout or into FILE
    pvcconf.py check TEMPLATE                   every schema key documented, no unknown key
"""

from __future__ import annotations

import argparse
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLACEHOLDER = "@default@"
# `  #key: value` (commented setting) or `  key: value` (active); `# text` is prose.
_LINE = re.compile(r"^(?P<indent>[ ]*)(?P<hash>#?)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>(\s.*)?)$")


@dataclass(frozen=True)
class Entry:
    """One setting line of the template."""
    lineno: int
    path: tuple[str, ...]
    commented: bool
    value: str          # the text after the colon, comment included, stripped
    indent: int


class TemplateError(ValueError):
    """The template does not match the schema."""


def entries(text: str) -> list[Entry]:
    """The setting lines of `text` with their key paths (from indentation)."""
    found: list[Entry] = []
    stack: list[tuple[int, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        match = _LINE.match(line)
        if match is None:
            if line.strip() and not line.lstrip().startswith("#"):
                raise TemplateError(f"line {lineno}: not a setting or a comment: {line!r}")
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*[key for _, key in stack], match["key"])
        value = (match["rest"] or "").strip()
        found.append(Entry(lineno, path, bool(match["hash"]), value, indent))
        if _bare(value):
            stack.append((indent, match["key"]))
    return found


def _bare(value: str) -> bool:
    """True for `key:` with no value (a section, or a required setting), comment aside."""
    return value == "" or value.startswith("#")


# -- the schema ------------------------------------------------------------------------------------

def _submodel(annotation: Any) -> type | None:
    """The pydantic model a field holds directly (or as Optional), else None (a leaf)."""
    from pydantic import BaseModel

    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    candidates = list(typing.get_args(annotation)) if union else [annotation]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def schema_paths(model: type) -> dict[tuple[str, ...], Any]:
    """Every key path of `model` -> its field (sections and leaves)."""
    paths: dict[tuple[str, ...], Any] = {}

    def walk(cls: type, prefix: tuple[str, ...]) -> None:
        for name, field in cls.model_fields.items():   # type: ignore[attr-defined]
            if field.exclude:
                continue
            path = (*prefix, name)
            paths[path] = field
            sub = _submodel(field.annotation)
            if sub is not None:
                walk(sub, path)

    walk(model, ())
    return paths


def _default_text(key: str, field: Any) -> str:
    import yaml

    value = field.get_default(call_default_factory=True)
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
    text = dumped.removesuffix("\n...\n").strip()
    if "\n" in text:
        raise TemplateError(f"{key}: the default {value!r} does not fit on one line")
    return text


def check(text: str, model: type) -> list[str]:
    """What is wrong with the template: unknown keys, settings not documented, placeholders on
    settings without a default, keys given twice."""
    paths = schema_paths(model)
    problems: list[str] = []
    seen: set[tuple[str, ...]] = set()
    inline: set[tuple[str, ...]] = set()      # sections given as one flow mapping
    for entry in entries(text):
        name = ".".join(entry.path)
        if entry.path in seen:
            problems.append(f"line {entry.lineno}: {name} is given twice")
        seen.add(entry.path)
        if not _bare(entry.value):
            inline.add(entry.path)
        field = _schema_field(paths, entry.path)
        if field is None:
            problems.append(f"line {entry.lineno}: {name} is not a setting of pvc.core.config")
        elif PLACEHOLDER in entry.value and field.is_required():
            problems.append(f"line {entry.lineno}: {name} is required and has no default to show")
    for path in paths:
        documented = path in seen or any(path[:n] in inline for n in range(1, len(path)))
        if not documented and not _inside_leaf(path, paths):
            problems.append(f"{'.'.join(path)} is not documented in the template")
    return problems


def _schema_field(paths: dict[tuple[str, ...], Any], path: tuple[str, ...]) -> Any:
    """The field of `path`; keys below a leaf (an example's nested mapping) belong to the leaf."""
    for length in range(len(path), 0, -1):
        field = paths.get(path[:length])
        if field is not None:
            return field if length == len(path) or _submodel(field.annotation) is None else None
    return None


def _inside_leaf(path: tuple[str, ...], paths: dict[tuple[str, ...], Any]) -> bool:
    return any(_submodel(paths[path[:n]].annotation) is None for n in range(1, len(path)))


def render(text: str, model: type) -> str:
    """The template with every @default@ replaced by the schema's default; refuses a template
    that `check` finds fault with."""
    problems = check(text, model)
    if problems:
        raise TemplateError("; ".join(problems))
    paths = schema_paths(model)
    by_line = {entry.lineno: entry for entry in entries(text)}
    lines = text.splitlines()
    for lineno, entry in by_line.items():
        if PLACEHOLDER in entry.value:
            default = _default_text(entry.path[-1], paths[entry.path])
            lines[lineno - 1] = lines[lineno - 1].replace(PLACEHOLDER, default, 1)
    return "\n".join(lines) + "\n"


def uncomment(text: str) -> str:
    """Every commented setting made active (what an administrator gets by removing each '#')."""
    return "\n".join(re.sub(r"^([ ]*)#(?=[A-Za-z_][A-Za-z0-9_]*:(\s|$))", r"\1", line)
                     for line in text.splitlines()) + "\n"


def required(text: str) -> list[tuple[str, ...]]:
    """The active settings left without a value (what the installer must fill in)."""
    return [entry.path for entry in entries(text)
            if not entry.commented and _bare(entry.value) and not _has_children(text, entry)]


def _has_children(text: str, entry: Entry) -> bool:
    return any(other.path[:len(entry.path)] == entry.path and len(other.path) > len(entry.path)
               for other in entries(text))


def fill(text: str, values: dict[tuple[str, ...], str]) -> str:
    """`text` with the required settings of `values` set (YAML text of each value)."""
    lines = text.splitlines()
    for entry in entries(text):
        if entry.path in values and not entry.commented:
            line = lines[entry.lineno - 1]
            key = entry.path[-1]
            lines[entry.lineno - 1] = f"{line[:line.index(key + ':')]}{key}: {values[entry.path]}"
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["render", "check"])
    parser.add_argument("template", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    from pvc.core.config import Settings

    text = args.template.read_text()
    try:
        if args.action == "check":
            problems = check(text, Settings)
            for problem in problems:
                print(f"{args.template}: {problem}", file=sys.stderr)
            return 1 if problems else 0
        rendered = render(text, Settings)
    except TemplateError as exc:
        print(f"{args.template}: {exc}", file=sys.stderr)
        return 1
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(rendered)
    else:
        sys.stdout.write(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())

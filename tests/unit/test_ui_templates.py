"""The web UI's pure parts: every template compiles and never turns escaping off, the static
files templates name exist, every fragment a live view of any area names exists and is an element
of its area's page, and the helpers the guard and the templates use."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

from pvc.api.web import nav, pages, render
from pvc.api.web.guard import csrf_token, local_path
from pvc.web import STATIC, TEMPLATES

ESCAPE_HATCHES = re.compile(r"\|\s*safe\b|autoescape\s+false|Markup\(|\|\s*tojson\b", re.I)


def test_no_template_turns_escaping_off() -> None:
    templates = sorted(TEMPLATES.rglob("*.html"))
    assert len(templates) > 15
    for path in templates:
        text = path.read_text()
        assert not ESCAPE_HATCHES.search(text), f"{path.relative_to(TEMPLATES)} turns escaping off"
        assert "<script>" not in text and "<style" not in text and " style=" not in text, path
        assert not re.search(r"\son[a-z]+\s*=", text), f"{path}: inline event handler"


def test_the_environment_escapes_everything() -> None:
    env = render.environment()
    assert env.autoescape is True
    out = env.from_string("{{ x }}|{{ y|visible }}").render(x="<b a='1'>&", y="\x1b[31m<i>")
    assert out == "&lt;b a=&#39;1&#39;&gt;&amp;|\\x1b[31m&lt;i&gt;"


def test_every_template_compiles() -> None:
    env = render.environment()
    for path in sorted(TEMPLATES.rglob("*.html")):
        env.get_template(path.relative_to(TEMPLATES).as_posix())      # a syntax error raises


def test_static_files_named_by_templates_exist() -> None:
    named = {name for path in TEMPLATES.rglob("*.html")
             for name in re.findall(r"static_url\('([^']+)'\)", path.read_text())}
    assert {"js/pvc.js", "vendor/htmx/htmx.min.js", "css/pvc.css", "js/console.js"} <= named
    for name in sorted(named):
        assert (STATIC / name).is_file(), f"a template names static/{name}, which does not exist"


def live_fragments() -> dict[str, dict[str, str]]:
    """Every page module's fragment maps (`*FRAGMENTS`, what its live.View calls are given)."""
    found = {}
    for info in pkgutil.iter_modules(pages.__path__):
        module = importlib.import_module(f"{pages.__name__}.{info.name}")
        for name, value in vars(module).items():
            if name.endswith("FRAGMENTS") and isinstance(value, dict):
                found[f"{info.name}.{name}"] = value
    return found


def test_every_live_view_names_a_fragment_map() -> None:
    """live_fragments() finds them all: no page module gives live.View a map it does not name."""
    calls = 0
    for path in sorted(Path(pages.__path__[0]).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr == "View":
                calls += 1
                given = node.args[1] if len(node.args) > 1 else None
                assert isinstance(given, ast.Name) and given.id.endswith("FRAGMENTS"), \
                    f"{path.name}:{node.lineno}: live.View is given a map that is not a named *FRAGMENTS"
    assert calls >= 10


def test_every_live_fragment_exists() -> None:
    found = live_fragments()
    areas = {template.split("/", 1)[0] for fragments in found.values() for template in fragments.values()}
    assert {"dashboard", "nodes", "vms", "storage", "networks", "provisioner", "tasks"} <= areas
    for where, fragments in found.items():
        for element, template in fragments.items():
            assert (TEMPLATES / template).exists(), (where, template)
            assert template.rsplit("/", 1)[-1].startswith("_"), f"{template}: fragments are named _*.html"
            assert re.fullmatch(r"[a-z-]+", element), (where, element)
            area = TEMPLATES / template.split("/", 1)[0]
            holders = [p.name for p in area.glob("*.html")
                       if not p.name.startswith("_") and f'id="{element}"' in p.read_text()]
            assert holders, f"{where}: no page of {area.name}/ has an element with id {element!r}"


def test_vendored_htmx_has_its_licence_and_version() -> None:
    vendor = STATIC / "vendor" / "htmx"
    assert (vendor / "htmx.min.js").stat().st_size > 10000
    assert "Zero-Clause BSD" in (vendor / "LICENSE").read_text()
    version = (vendor / "VERSION").read_text()
    assert version.startswith("htmx.org 2.") and "sha256" in version
    import hashlib

    digest = hashlib.sha256((vendor / "htmx.min.js").read_bytes()).hexdigest()
    assert digest in version, "htmx.min.js changed without its VERSION note (use refresh-htmx.sh)"


@pytest.mark.parametrize(("target", "expected"), [
    (None, "/"), ("", "/"), ("/nodes/hv1", "/nodes/hv1"), ("/tasks?x=1", "/tasks?x=1"),
    ("//evil.example", "/"), ("https://evil.example/", "/"), ("/\\evil.example", "/"),
    ("nodes", "/"), ("/\r\nSet-Cookie: x", "/"), ("/api/v1/status", "/"),
])
def test_redirects_stay_local(target: str | None, expected: str) -> None:
    assert local_path(target) == expected


def test_csrf_token_is_bound_to_its_session() -> None:
    one, two = "a" * 43, "b" * 43
    assert csrf_token(one) == csrf_token(one)
    assert csrf_token(one) != csrf_token(two)
    assert one not in csrf_token(one) and len(csrf_token(one)) == 43


def test_figures_as_text() -> None:
    assert render.mib(512) == "512 MiB" and render.mib(8192) == "8.0 GiB"
    assert render.kib(1024 * 1024 * 3) == "3.0 GiB"
    assert render.bps(1_200_000) == "1.2 Mb/s" and render.mbps(10000) == "10 Gb/s"
    assert render.mbps(None) == render.DASH and render.when(0) == render.DASH
    assert render.ratio(1, 4) == 25.0 and render.ratio(1, 0) == 0.0
    assert render.health_kind(95) == "ok" and render.health_kind(60) == "warn"
    assert render.health_kind("N/A") == "idle"


def test_navigation_paths_are_unique() -> None:
    paths = [item.path for item in nav.NAV]
    assert len(paths) == len(set(paths)) and paths[0] == "/"
    assert [i.label for i in nav.NAV] == ["Dashboard", "Nodes", "VMs", "Storage", "Networks", "Provisioner",
                                          "Tasks"]

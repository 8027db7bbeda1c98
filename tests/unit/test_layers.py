"""The layering of docs/architecture.md, enforced: rules that are not checked drift.

The import contracts live in pyproject.toml ([tool.importlinter]); this test runs them, checks
the one rule import-linter cannot express (the CLI imports only its own code and the vocabulary),
and the size guideline for modules.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 800
LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))")


def test_import_contracts_hold() -> None:
    # In a child process: import-linter reconfigures logging, which other tests' log capture needs.
    done = subprocess.run([sys.executable, "-c", LINT, str(ROOT / "pyproject.toml")], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, f"an import contract is broken:\n{done.stdout[-4000:]}{done.stderr[-2000:]}"


# Pure libraries of core the CLI shares (names, sizes, error types, the XML it edits locally as
# upstream's client does); nothing that opens ZooKeeper, reads node configuration or holds records.
CLI_MAY_IMPORT = ("pvc.core.vocabulary", "pvc.core.units", "pvc.core.errors", "pvc.core.domainxml")


def test_cli_talks_to_the_cluster_only_over_http() -> None:
    """pvc (the CLI) imports its own modules and core's pure libraries, nothing else of ours: an
    administrator's workstation has no ZooKeeper, libvirt or Ceph, only the API."""
    graph = grimp.build_graph("pvc")
    bad = []
    for module in sorted(m for m in graph.modules if m.startswith("pvc.cli")):
        for imported in graph.find_modules_directly_imported_by(module):
            allowed = imported.startswith("pvc.cli") or any(
                imported == ok or imported.startswith(ok + ".") for ok in CLI_MAY_IMPORT)
            if imported.startswith("pvc.") and not allowed:
                bad.append(f"{module} -> {imported}")
    assert not bad, "the CLI imports cluster-side code:\n" + "\n".join(bad)


def test_no_module_is_a_big_room() -> None:
    big = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            big.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not big, f"modules over {MAX_MODULE_LINES} lines (split them by responsibility):\n" + \
        "\n".join(big)

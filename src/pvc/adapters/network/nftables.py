"""`LinuxNftables`: the Nftables interface through the `nft` program."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence

from pvc.adapters.network.base import NetworkError, Nftables
from pvc.adapters.network.netns import netns_argv

_NFT_WORD_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class LinuxNftables(Nftables):
    """Nftables through the `nft` program (no Python binding exists for the venv's Python)."""

    def __init__(self, netns: str | None = None, timeout: float = 30.0) -> None:
        self.netns = netns
        self.timeout = timeout

    def _run(self, args: Sequence[str], what: str, stdin: str | None = None) -> str:
        argv = netns_argv(self.netns, ["nft", *args])
        try:
            result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise NetworkError(f"{what}: {e}") from None
        if result.returncode != 0:
            raise NetworkError(f"{what}: {(result.stderr or result.stdout).strip()}")
        return result.stdout

    def apply(self, ruleset: str) -> None:
        self._run(["-f", "-"], "nft apply", ruleset)

    def check(self, ruleset: str) -> None:
        self._run(["--check", "-f", "-"], "nft check", ruleset)

    def tables(self) -> list[tuple[str, str]]:
        out = self._run(["-j", "list", "tables"], "nft list tables")
        try:
            items = json.loads(out or "{}").get("nftables", [])
        except ValueError as e:
            raise NetworkError(f"nft list tables: unreadable JSON: {e}") from None
        return [(t["table"]["family"], t["table"]["name"]) for t in items if "table" in t]

    def delete_table(self, family: str, name: str) -> None:
        if not (_NFT_WORD_RE.match(family) and _NFT_WORD_RE.match(name)):
            raise NetworkError(f"delete table {family} {name}: not a table name")
        # declaring it first makes the delete a no-op when it is absent, in one transaction
        self._run(["-f", "-"], f"delete table {family} {name}",
                  f"table {family} {name}\ndelete table {family} {name}\n")

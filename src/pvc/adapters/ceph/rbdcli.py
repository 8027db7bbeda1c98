"""The `rbd` commands the Python bindings lack: export/import in export format 2, export-diff,
import-diff and diff (VM snapshot export and import, pvc.worker.backups).

Arguments are lists (no shell); the cluster and the key come from the configured ceph.conf and
keyring *paths* (`--conf`, `--keyring`, `--id`), so no secret is ever on a command line. An
export streams through this process (`-` as the file), so the caller can hash what it writes.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from pvc.adapters.ceph.base import StorageError

CHUNK = 4 << 20


class RbdCommandError(StorageError):
    """An `rbd` command that failed; the message names the command's purpose and rbd's words."""


def _tail(text: str, limit: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


@dataclass(frozen=True)
class RbdCli:
    """`rbd` against one cluster (conf and keyring paths as in settings.storage)."""

    conffile: str
    keyring: str
    client_user: str = "admin"
    program: str = "rbd"

    @classmethod
    def from_settings(cls, settings: Any) -> RbdCli:
        cfg = settings.storage
        return cls(cfg.ceph_config_file, cfg.ceph_keyring_file, cfg.client_user)

    def argv(self, *args: str) -> list[str]:
        out = [self.program, "--conf", self.conffile, "--id", self.client_user]
        if os.path.exists(self.keyring):
            out += ["--keyring", self.keyring]
        return out + list(args)

    # -- plain commands ---------------------------------------------------------------------------

    def _run(self, what: str, *args: str, stdin: BinaryIO | None = None, timeout: float | None = None) -> str:
        cmd = self.argv(*args)
        try:
            done = subprocess.run(cmd, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout, check=False)
        except FileNotFoundError:
            raise RbdCommandError(f"{what}: the rbd program is not installed on this node") from None
        except subprocess.TimeoutExpired:
            raise RbdCommandError(f"{what}: rbd did not finish within {timeout:.0f}s") from None
        if done.returncode != 0:
            text = (done.stderr or done.stdout).decode(errors="replace")
            raise RbdCommandError(f"{what} failed (rbd exit {done.returncode}): {_tail(text) or 'no output'}")
        return done.stdout.decode(errors="replace")

    def diff_bytes(self, pool: str, volume: str, snapshot: str, from_snap: str | None = None) -> int:
        """Allocated bytes of `volume@snapshot` (or changed since `from_snap`): an export's size estimate."""
        args = ["diff", "--format", "json"]
        if from_snap:
            args += ["--from-snap", from_snap]
        text = self._run(f"rbd diff of {pool}/{volume}@{snapshot}", *args, f"{pool}/{volume}@{snapshot}")
        try:
            extents = json.loads(text or "[]")
        except json.JSONDecodeError:
            raise RbdCommandError(f"rbd diff of {pool}/{volume}@{snapshot}: output is not JSON") from None
        return sum(int(e.get("length", 0)) for e in extents
                   if str(e.get("exists", "true")).lower() in ("true", "1"))

    def import_full(self, path: str, pool: str, volume: str) -> None:
        """`rbd import --export-format 2 <file> pool/volume` (the image and its snapshots)."""
        self._run(f"rbd import of {path} into {pool}/{volume}", "import", "--export-format", "2",
                  "--no-progress", path, f"{pool}/{volume}")

    def import_diff(self, path: str, pool: str, volume: str) -> None:
        """`rbd import-diff <file> pool/volume` (needs the diff's start snapshot; makes its end one)."""
        self._run(f"rbd import-diff of {path} into {pool}/{volume}", "import-diff", "--no-progress",
                  path, f"{pool}/{volume}")

    # -- streamed exports -------------------------------------------------------------------------

    def export_stream(self, pool: str, volume: str, snapshot: str, from_snap: str | None = None) \
            -> Iterator[bytes]:
        """Chunks of `rbd export --export-format 2` (full) or `rbd export-diff --from-snap` of
        `pool/volume@snapshot`, written to stdout; RbdCommandError if rbd fails (after the last chunk)."""
        spec = f"{pool}/{volume}@{snapshot}"
        if from_snap:
            args, what = ["export-diff", "--no-progress", "--from-snap", from_snap, spec, "-"], \
                f"rbd export-diff of {spec} from {from_snap}"
        else:
            args = ["export", "--no-progress", "--export-format", "2", spec, "-"]
            what = f"rbd export of {spec}"
        cmd = self.argv(*args)
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise RbdCommandError(f"{what}: the rbd program is not installed on this node") from None
        assert proc.stdout is not None and proc.stderr is not None
        finished = False
        try:
            while chunk := proc.stdout.read(CHUNK):
                yield chunk
            finished = True
        finally:
            if not finished:
                proc.kill()
            err = proc.stderr.read().decode(errors="replace")
            code = proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        if code != 0:
            raise RbdCommandError(f"{what} failed (rbd exit {code}): {_tail(err) or 'no output'}")

    def export_to(self, pool: str, volume: str, snapshot: str, out: BinaryIO, from_snap: str | None = None,
                  on_chunk: Callable[[bytes], None] | None = None) -> int:
        """Write the export into `out`, passing each chunk to `on_chunk` (a hash); bytes written."""
        total = 0
        for chunk in self.export_stream(pool, volume, snapshot, from_snap):
            out.write(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
            total += len(chunk)
        return total

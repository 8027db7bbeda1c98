"""The rbd command adapter of exports (pvc.adapters.ceph.rbdcli), against a stub `rbd` program:
argument lists with the conf and keyring *paths* (never a key), streamed exports, failures named."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from pvc.adapters.ceph.rbdcli import RbdCli, RbdCommandError


def stub(tmp_path: Path, body: str) -> str:
    """An `rbd` that records its arguments and runs `body` (sh)."""
    path = tmp_path / "rbd"
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def argv(tmp_path: Path) -> list[str]:
    return (tmp_path / "argv").read_text().splitlines()


def test_argv_names_conf_and_keyring_paths_only(tmp_path: Path) -> None:
    keyring = tmp_path / "keyring"
    keyring.write_text("[client.admin]\n\tkey = SECRET\n")
    cli = RbdCli(str(tmp_path / "ceph.conf"), str(keyring), "admin", stub(tmp_path, "exit 0"))
    cli.import_full("/srv/x/images/vms.a.rbdimg", "vms", "a")
    args = argv(tmp_path)
    assert args[:6] == ["--conf", str(tmp_path / "ceph.conf"), "--id", "admin", "--keyring", str(keyring)]
    assert args[6:] == ["import", "--export-format", "2", "--no-progress", "/srv/x/images/vms.a.rbdimg",
                        "vms/a"]
    assert not any("SECRET" in a for a in args)
    missing = RbdCli(str(tmp_path / "ceph.conf"), str(tmp_path / "nokeyring"), "admin", cli.program)
    missing.import_diff("/srv/d.rbddiff", "vms", "a.b")
    assert "--keyring" not in argv(tmp_path)
    assert argv(tmp_path)[-3:] == ["--no-progress", "/srv/d.rbddiff", "vms/a.b"]


def test_export_streams_and_hashes(tmp_path: Path) -> None:
    cli = RbdCli("c", "k", "admin", stub(tmp_path, "head -c 10000000 /dev/zero"))
    out, seen = io.BytesIO(), []
    size = cli.export_to("vms", "a", "s2", out, from_snap="s1", on_chunk=seen.append)
    assert size == 10_000_000 == len(out.getvalue()) == sum(len(c) for c in seen)
    assert argv(tmp_path)[4:] == ["export-diff", "--no-progress", "--from-snap", "s1", "vms/a@s2", "-"]
    cli.export_to("vms", "a", "s2", io.BytesIO())
    assert argv(tmp_path)[4:] == ["export", "--no-progress", "--export-format", "2", "vms/a@s2", "-"]


def test_failures_name_the_command_and_rbds_words(tmp_path: Path) -> None:
    cli = RbdCli("c", "k", "admin",
                 stub(tmp_path, "printf partial; echo 'rbd: error opening image' >&2; exit 2"))
    with pytest.raises(RbdCommandError,
                       match=r"rbd export of vms/a@s1 failed \(rbd exit 2\): rbd: error opening"):
        cli.export_to("vms", "a", "s1", io.BytesIO())
    with pytest.raises(RbdCommandError, match="rbd import-diff of /x into vms/a failed"):
        cli.import_diff("/x", "vms", "a")
    with pytest.raises(RbdCommandError, match="not installed"):
        RbdCli("c", "k", "admin", str(tmp_path / "nothing")).import_full("/x", "vms", "a")


def test_diff_bytes_sums_allocated_extents(tmp_path: Path) -> None:
    extents = [{"offset": 0, "length": 4096, "exists": "true"},
               {"offset": 8192, "length": 100, "exists": "false"},
               {"offset": 65536, "length": 1 << 20, "exists": "true"}]
    cli = RbdCli("c", "k", "admin", stub(tmp_path, f"echo '{json.dumps(extents)}'"))
    assert cli.diff_bytes("vms", "a", "s2", "s1") == 4096 + (1 << 20)
    assert argv(tmp_path)[4:] == ["diff", "--format", "json", "--from-snap", "s1", "vms/a@s2"]

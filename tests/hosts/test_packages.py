"""The Debian packages (`make deb`, deploy/debian/README.md), checked as an administrator gets them.

Names, versions and dependencies (pvc-client-cli needs nothing of a cluster node), contents and
modes, the conffile against the configuration schema (every setting documented with its real
default, the required ones refusing to start), the systemd units (systemd-analyze verify,
restart policies, ordering), lintian, and installation into a throwaway Debian 12 root copied
from the host lane's cached base image: the client alone from the Debian archive, then every
daemon package's maintainer scripts through install, reinstall (the upgrade path) and purge.

The packages are built once (`make deb`, a few minutes) unless build/deb/ already holds this
version's packages, newer than every source file (or PVC_DEB_REUSE=1: whatever is there). CPU
heavy and needs root and the Debian mirror: run it under the lab lock.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pvc.core.config import Settings, parse_config
from pvc.core.errors import ConfigError

pytestmark = pytest.mark.slow

TOP = Path(__file__).resolve().parents[2]
OUT = TOP / "build" / "deb"
PACKAGES = ("pvc-daemon-common", "pvc-daemon-node", "pvc-daemon-worker", "pvc-daemon-api",
            "pvc-daemon-health", "pvc-client-cli")
DAEMONS = ("pvc-daemon-common", "pvc-daemon-health", "pvc-daemon-node", "pvc-daemon-worker",
           "pvc-daemon-api")
CLUSTER_WORDS = ("zookeeper", "ceph", "rados", "rbd", "libvirt", "qemu", "pvc-daemon", "frr", "dnsmasq")
REQUIRED = {("cluster", "name"): "mycluster", ("cluster", "coordinator_nodes"): "[hv1, hv2, hv3]",
            ("zookeeper", "hosts"): "[hv1:2181, hv2:2181, hv3:2181]",
            ("zookeeper", "auth", "username"): "pvc",
            ("zookeeper", "auth", "password"): "a-long-enough-zookeeper-password"}
EXAMPLE_SECTIONS = {"autobackup", "automirror", "networking.bgp"}
DEBDIR = "/srv/pvc-debs"          # where the packages are inside the throwaway root


def _load(name: str, path: Path) -> ModuleType:
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # dataclasses look their module up while being made
    loader.exec_module(module)
    return module


build_script = _load("pvc_deb_build", TOP / "deploy" / "debian" / "build")
pvcconf = _load("pvc_deb_pvcconf", TOP / "deploy" / "debian" / "pvcconf.py")


def run(argv: list[str], timeout: float = 600, check: bool = True,
        **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout[-3000:]}"
                             f"\n{result.stderr[-3000:]}")
    return result


# -- the build ------------------------------------------------------------------------------------

def _debs(version: str) -> dict[str, Path]:
    found = {}
    for name in PACKAGES:
        matches = sorted(OUT.glob(f"{name}_{version}_*.deb"))
        if matches:
            found[name] = matches[-1]
    return found


def _fresh(debs: dict[str, Path]) -> bool:
    if len(debs) != len(PACKAGES):
        return False
    built = min(path.stat().st_mtime for path in debs.values())
    newest = max((TOP / name).stat().st_mtime for name in build_script.source_files())
    return built > newest


@pytest.fixture(scope="module")
def version() -> str:
    return build_script.version()[1]


@pytest.fixture(scope="module")
def debs(version: str) -> dict[str, Path]:
    if os.geteuid() != 0:
        pytest.skip("building and installing packages needs root")
    if shutil.which("dpkg-buildpackage") is None or shutil.which("dh") is None:
        pytest.skip("no dpkg-buildpackage/debhelper: run scripts/install")
    found = _debs(version)
    reuse = os.environ.get("PVC_DEB_REUSE") == "1" and len(found) == len(PACKAGES)
    if not reuse and not _fresh(found):
        result = run(["make", "deb"], timeout=3600, check=False, cwd=TOP)
        print(result.stdout[-1500:])
        assert result.returncode == 0, f"make deb failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
        found = _debs(version)
    assert set(found) == set(PACKAGES), f"missing packages: {set(PACKAGES) - set(found)}"
    return found


def field(deb: Path, name: str) -> str:
    return run(["dpkg-deb", "-f", str(deb), name]).stdout.strip()


def listing(deb: Path) -> dict[str, tuple[str, str]]:
    """path -> (mode string, owner/group) of every entry in the package."""
    entries = {}
    for line in run(["dpkg-deb", "-c", str(deb)]).stdout.splitlines():
        parts = line.split(None, 5)
        path = parts[5].split(" -> ")[0].removeprefix(".")
        entries[path.rstrip("/") or "/"] = (parts[0], parts[1])
    return entries


def extract(deb: Path, path: str, tmp: Path) -> str:
    """The text of one file of a package."""
    target = tmp / deb.name
    if not target.exists():
        target.mkdir(parents=True)
        run(["dpkg-deb", "-x", str(deb), str(target)])
    return (target / path.lstrip("/")).read_text()


# -- names, versions, relationships ---------------------------------------------------------------

def test_every_package_has_the_version(debs: dict[str, Path], version: str) -> None:
    for name, deb in debs.items():
        assert field(deb, "Package") == name
        assert field(deb, "Version") == version
    assert field(debs["pvc-daemon-common"], "Architecture") != "all"     # compiled wheels inside
    assert field(debs["pvc-daemon-node"], "Architecture") == "all"


def test_client_needs_nothing_of_a_cluster_node(debs: dict[str, Path]) -> None:
    deb = debs["pvc-client-cli"]
    relations = ", ".join(field(deb, name) for name in ("Depends", "Pre-Depends", "Recommends"))
    for word in CLUSTER_WORDS:
        assert word not in relations, f"pvc-client-cli relates to {word}: {relations}"
    site = [path for path in listing(deb) if "/site-packages/" in path]
    for module in ("kazoo", "fastapi", "uvicorn", "pyroute2", "pvc/node", "pvc/api", "pvc/worker"):
        assert not any(f"/site-packages/{module}/" in path for path in site), module
    assert any(path.endswith("/site-packages/pvc/cli/main.py") for path in site)


def test_daemon_packages_depend_on_their_version_of_common(debs: dict[str, Path], version: str) -> None:
    for name in ("pvc-daemon-node", "pvc-daemon-worker", "pvc-daemon-api", "pvc-daemon-health"):
        depends = field(debs[name], "Depends")
        assert f"pvc-daemon-common (>= {version})" in depends, depends
        assert f"pvc-daemon-common (<< {version}.1~)" in depends, depends
    node = field(debs["pvc-daemon-node"], "Depends")
    for needed in ("python3-libvirt", "python3-rados", "python3-rbd", "libvirt-daemon-system", "nftables",
                   "qemu-block-extra"):
        assert needed in node
    assert "zookeeper" not in node            # ZooKeeper may run elsewhere
    assert "python3-seccomp" in field(debs["pvc-daemon-worker"], "Depends")
    common = field(debs["pvc-daemon-common"], "Depends")
    assert "python3 (<< 3.12~)" in common and "python3-yaml" in common


# -- contents -------------------------------------------------------------------------------------

def test_common_holds_the_venv_config_and_rotation(debs: dict[str, Path]) -> None:
    deb = debs["pvc-daemon-common"]
    files = listing(deb)
    for program in ("pvcnoded", "pvcworkerd", "pvcapid", "pvc"):
        assert f"/usr/lib/pvc/venv/bin/{program}" in files
    assert files["/etc/pvc"][0] == "drwx------"
    assert files["/etc/pvc/pvc.conf"][0] == "-rw-------"
    assert files["/var/log/pvc"][0] == "drwxr-x---"
    assert "/etc/logrotate.d/pvc" in files
    assert "/usr/lib/tmpfiles.d/pvc-daemon-common.conf" in files
    assert "/usr/lib/pvc/pvc-units" in files
    assert all(owner == "root/root" for _, owner in files.values())
    conffiles = run(["dpkg-deb", "-I", str(deb), "conffiles"]).stdout.split()
    assert "/etc/pvc/pvc.conf" in conffiles and "/etc/logrotate.d/pvc" in conffiles
    # no byte code shipped (postinst makes it), nothing pip or setuptools left to install with
    site = [path for path in files if "/site-packages/" in path]
    assert not [path for path in files if "__pycache__" in path or path.endswith(".pyc")]
    assert not any("/site-packages/pip/" in path or "/site-packages/setuptools/" in path for path in site)


def test_units_and_shared_files_are_where_the_daemons_look(debs: dict[str, Path]) -> None:
    assert "/lib/systemd/system/pvcnoded.service" in listing(debs["pvc-daemon-node"])
    assert "/lib/systemd/system/pvcapid.service" in listing(debs["pvc-daemon-api"])
    worker = listing(debs["pvc-daemon-worker"])
    assert "/lib/systemd/system/pvcworkerd.service" in worker
    examples = {Path(p).name for p in worker if p.startswith("/usr/share/pvc/provisioner/examples/")}
    shipped = {p.name for p in (TOP / "src/pvc/worker/provisioner/examples").glob("*.py")}
    assert examples == shipped
    health = listing(debs["pvc-daemon-health"])
    plugins = {p: health[p] for p in health if p.startswith("/usr/share/pvc/plugins/")}
    shipped = {p.name for p in (TOP / "src/pvc/node/health/plugins").glob("*.py")}
    assert {Path(p).name for p in plugins} == shipped
    # what the plugin loader requires: root's, writable by nobody else (directory too)
    for path, (mode, owner) in plugins.items():
        assert owner == "root/root" and mode[5] != "w" and mode[8] != "w", (path, mode)
    assert health["/usr/share/pvc/plugins"][0] == "drwxr-xr-x"
    assert Settings.model_fields["path"].default.plugin_directory == "/usr/share/pvc/plugins"
    cli = listing(debs["pvc-client-cli"])
    assert "/usr/bin/pvc" in cli and "/usr/share/man/man1/pvc.1.gz" in cli


# -- the configuration file -----------------------------------------------------------------------

def test_template_documents_every_setting() -> None:
    problems = pvcconf.check((TOP / "deploy" / "pvc.conf.in").read_text(), Settings)
    assert problems == []


def test_conffile_refuses_to_start_until_the_required_settings_are_set(debs: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    text = extract(debs["pvc-daemon-common"], "/etc/pvc/pvc.conf", tmp_path)
    assert "@default@" not in text
    assert sorted(pvcconf.required(text)) == sorted(REQUIRED)
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "/etc/pvc/pvc.conf")
    for path in REQUIRED:
        assert f"'{'.'.join(path)}'" in str(refused.value)


def test_conffile_defaults_are_the_schemas(debs: dict[str, Path], tmp_path: Path) -> None:
    text = pvcconf.fill(extract(debs["pvc-daemon-common"], "/etc/pvc/pvc.conf", tmp_path), REQUIRED)
    filled = parse_config(text).model_dump()
    everything = parse_config(pvcconf.uncomment(text)).model_dump()   # every '#key:' made active

    def differences(a: Any, b: Any, path: str = "") -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [d for key in sorted(set(a) | set(b))
                    for d in differences(a.get(key), b.get(key), f"{path}.{key}".lstrip("."))]
        return [] if a == b else [path]

    changed = differences(filled, everything)
    assert changed and all(any(c == s or c.startswith(s + ".") for s in EXAMPLE_SECTIONS) for c in changed), \
        f"commented settings whose shown value is not the default: {changed}"


# -- units ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unpacked(debs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unpacked")
    for name in DAEMONS:
        run(["dpkg-deb", "-x", str(debs[name]), str(root)])
    return root


def unit(root: Path, name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (root / "lib/systemd/system" / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_units_restart_and_order_after_zookeeper_libvirt_and_ceph(unpacked: Path) -> None:
    node = unit(unpacked, "pvcnoded.service")
    after = " ".join(node["After"])
    for wanted in ("zookeeper.service", "libvirtd.service", "ceph-osd.target", "ceph-mon.target",
                   "network-online.target"):
        assert wanted in after
    assert "zookeeper" not in " ".join(node["Wants"])      # ZooKeeper may run on other hosts
    assert node["Restart"] == ["on-failure"] and node["KillMode"] == ["process"]
    assert node["ExecStart"] == ["/usr/lib/pvc/venv/bin/pvcnoded"]
    worker = unit(unpacked, "pvcworkerd.service")
    assert worker["Delegate"] == ["yes"] and worker["Restart"] == ["on-failure"]
    assert "ProtectSystem" not in worker and "PrivateTmp" not in worker     # mounts must reach the host
    api = unit(unpacked, "pvcapid.service")
    assert api["NoNewPrivileges"] == ["yes"] and api["ProtectSystem"] == ["strict"]


# -- lintian --------------------------------------------------------------------------------------

def test_lintian_finds_no_errors(debs: dict[str, Path]) -> None:
    if shutil.which("lintian") is None:
        pytest.skip("no lintian: run scripts/install")
    result = run(["lintian", "--tag-display-limit", "0", "--display-info", "--show-overrides",
                  *map(str, debs.values())], timeout=1800, check=False)
    (OUT / "lintian.txt").write_text(result.stdout + result.stderr)     # the full report, for the record
    lines = result.stdout.splitlines()
    errors = [line for line in lines if line.startswith("E:")]
    tags: dict[str, int] = {}
    for line in lines:
        match = re.match(r"^([EWIPXO]): \S+: (\S+)", line)
        if match:
            tags[f"{match[1]} {match[2]}"] = tags.get(f"{match[1]} {match[2]}", 0) + 1
    print("lintian:", ", ".join(f"{tag} x{count}" for tag, count in sorted(tags.items())) or "clean")
    assert not errors, "\n".join(errors)


# -- installation into a throwaway Debian 12 root -------------------------------------------------

@pytest.fixture(scope="module")
def debian_root(debs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the lane's cached bookworm base (pvc.lab.hosts.image), with the packages in it."""
    if shutil.which("systemd-nspawn") is None or shutil.which("debootstrap") is None:
        pytest.skip("no systemd-nspawn/debootstrap: run scripts/install")
    from pvc.lab.hosts import image

    base = image.base_image()
    root = tmp_path_factory.mktemp("debian") / "root"
    run(["cp", "-a", "--reflink=auto", str(base), str(root)])
    (root / DEBDIR.lstrip("/")).mkdir(parents=True)      # not /tmp: nspawn mounts a fresh one
    for deb in debs.values():
        shutil.copy2(deb, root / DEBDIR.lstrip("/") / deb.name)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def inside(root: Path, script: str, check: bool = True,
           timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """A shell script run in `root` (not booted, the host's network): as a maintainer script sees it."""
    return run(["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "--pipe", "-D", str(root),
                "--setenv=DEBIAN_FRONTEND=noninteractive", "/bin/sh", "-ec", script],
               timeout=timeout, check=check)


def installed(root: Path) -> set[str]:
    out = inside(root, "dpkg-query -W -f='${db:Status-Abbrev} ${Package}\\n'").stdout
    return {line.split()[-1] for line in out.splitlines() if line.startswith("ii")}


def test_client_installs_alone_and_runs(debian_root: Path, debs: dict[str, Path], version: str) -> None:
    before = installed(debian_root)
    deb = f"{DEBDIR}/{debs['pvc-client-cli'].name}"
    inside(debian_root, f"apt-get install -y -q {deb}")
    added = installed(debian_root) - before
    assert "pvc-client-cli" in added
    heavy = [p for p in added if any(word in p for word in CLUSTER_WORDS)]
    assert not heavy, f"installing pvc-client-cli pulled in {heavy}"
    print("pvc-client-cli brought along:", ", ".join(sorted(added - {"pvc-client-cli"})) or "nothing")
    assert (debian_root / "usr/lib/pvc-client-cli/venv/lib/python3.11/site-packages/pvc/__pycache__").is_dir()
    helped = inside(debian_root, "pvc --help")
    assert "Commands:" in helped.stdout and "vm" in helped.stdout
    assert version in inside(debian_root, "pvc --version").stdout
    for command in ("pvc vm --help", "pvc storage volume --help", "pvc connection list"):
        inside(debian_root, command)
    # every module of the client imports in its pruned venv (no daemon code, no daemon dependency)
    imported = inside(debian_root, "/usr/lib/pvc-client-cli/venv/bin/python -c "
                      "'import importlib, pkgutil, pvc.cli; "
                      "names = [m.name for m in pkgutil.walk_packages(pvc.cli.__path__, \"pvc.cli.\") "
                      "if not m.name.endswith(\"__main__\")]; [importlib.import_module(n) for n in names]; "
                      "print(len(names))'")
    assert int(imported.stdout.strip()) > 20


def test_daemon_dependencies_resolve_from_debian(debian_root: Path, debs: dict[str, Path]) -> None:
    names = " ".join(f"{DEBDIR}/{debs[name].name}" for name in DAEMONS)
    result = inside(debian_root, f"apt-get install -s -q {names}", check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_maintainer_scripts_install_upgrade_and_purge(debian_root: Path, debs: dict[str, Path]) -> None:
    names = " ".join(f"{DEBDIR}/{debs[name].name}" for name in DAEMONS)
    # common and health from the archive with apt (their dependencies are light); node, worker and
    # api with dpkg, without libvirt, Ceph and QEMU (the lane installs those for real)
    light = " ".join(f"{DEBDIR}/{debs[name].name}" for name in ("pvc-daemon-common", "pvc-daemon-health"))
    inside(debian_root, f"apt-get install -y -q {light}")
    # (nspawn gives each run a fresh /run: /run/pvc is looked at in the installing run)
    modes = inside(debian_root, f"dpkg --force-depends -i {names} >/dev/null 2>&1; "
                   "stat -c '%a %U %n' /etc/pvc /etc/pvc/pvc.conf /var/log/pvc /var/lib/pvc/kernels /run/pvc "
                   "/usr/share/pvc/plugins").stdout.split("\n")
    assert modes[:6] == ["700 root /etc/pvc", "600 root /etc/pvc/pvc.conf", "750 root /var/log/pvc",
                         "755 root /var/lib/pvc/kernels", "750 root /run/pvc",
                         "755 root /usr/share/pvc/plugins"]
    assert (debian_root / "usr/lib/pvc/venv/lib/python3.11/site-packages/pvc/node/__pycache__").is_dir()
    # the packaged code finds every shipped plugin runnable (owner and modes as the loader requires)
    scan = inside(debian_root, "/usr/lib/pvc/venv/bin/python -c 'from pvc.node.health import loader; "
                  "found = loader.scan(\"/usr/share/pvc/plugins\"); "
                  "print(len(found), [p.unsafe for p in found.values() if p.unsafe])'").stdout.split(None, 1)
    assert int(scan[0]) == len(list((TOP / "src/pvc/node/health/plugins").glob("*.py")))
    assert scan[1].strip() == "[]"
    # the units as systemd reads them there, and how exposed each is (printed)
    verified = inside(debian_root, "systemd-analyze verify pvcnoded.service pvcworkerd.service "
                                   "pvcapid.service 2>&1")
    assert not [line for line in verified.stdout.splitlines() if "pvc" in line], verified.stdout
    for name in ("pvcnoded", "pvcworkerd", "pvcapid"):
        score = inside(debian_root, "systemd-analyze security --offline=yes "
                       f"/lib/systemd/system/{name}.service", check=False).stdout.strip().splitlines()
        print(score[-1] if score else f"{name}: no score")
    # the shipped configuration stops a daemon, naming what to set
    refused = inside(debian_root, "/usr/lib/pvc/venv/bin/python -c 'from pvc.core.config import load_config; "
                     "load_config()'", check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "key 'cluster.name'" in said, said[-1000:]
    # the upgrade path (prerm upgrade, new files, postinst configure with the old version)
    inside(debian_root, f"dpkg --force-depends -i {names}")
    inside(debian_root, "echo '# changed by the administrator' >> /etc/pvc/pvc.conf; "
                        "touch /etc/pvc/cluster.key /var/log/pvc/pvcapid.log")
    inside(debian_root, f"dpkg --force-depends --force-confold -i {names}")
    assert "changed by the administrator" in (debian_root / "etc/pvc/pvc.conf").read_text()
    # purge leaves nothing behind
    inside(debian_root, "dpkg --purge pvc-daemon-api pvc-daemon-worker pvc-daemon-node pvc-daemon-health "
                        "pvc-daemon-common pvc-client-cli")
    for gone in ("etc/pvc", "usr/lib/pvc", "usr/lib/pvc-client-cli", "usr/share/pvc", "var/log/pvc",
                 "var/lib/pvc", "run/pvc", "usr/bin/pvc", "lib/systemd/system/pvcnoded.service",
                 "etc/logrotate.d/pvc"):
        left = debian_root / gone
        assert not left.exists() and not left.is_symlink(), f"/{gone} left behind"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))

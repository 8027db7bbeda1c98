"""NTP and TFTP for the primary's managed networks (issue #14 item 5), beside the reconciler.

NTP: one chronyd per managed network with a gateway, bound to its gateway addresses, started
and stopped through the reconciler's Services adapter (pid files in the node's dynamic
directory), so it moves with the gateways and dnsmasq on a primary change. TFTP: the network's
root as dnsmasq may serve it on this node (an existing directory whose resolved path is still
inside the confined trees), or None with the reason.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pvc.adapters.network import Services
from pvc.core import chrony, netconfig

log = logging.getLogger(__name__)

PREFIX = "chrony-"


def chrony_key(vni: int) -> str:
    return f"{PREFIX}{vni}"


def is_chrony_key(key: str) -> bool:
    return key.startswith(PREFIX) and key.removeprefix(PREFIX).isdigit()


class NtpServers:
    """chronyd per managed network; what runs is what was written, so a pvcnoded restart
    adopts a running chronyd whose configuration file still says the same."""

    def __init__(self, services: Services, run_dir: Path) -> None:
        self.services, self.run_dir = services, run_dir
        self._config: dict[str, str] = {}

    def ensure(self, net: netconfig.NetSpec) -> None:
        """chronyd serving `net`'s gateways, (re)started when its configuration changed;
        stopped when the network has no gateway. NetworkError/OSError when it cannot start."""
        key = chrony_key(net.vni)
        directory = self.run_dir / key
        text = chrony.chrony_config(net, state_dir=str(directory))
        if text is None:
            self.stop(key)
            return
        path = directory / "chrony.conf"
        running = self.services.pid(key)
        if running and key not in self._config and _read(path) == text:
            self._config[key] = text          # started by a previous pvcnoded: adopt it
        if running and self._config.get(key) == text:
            return
        if running:
            self.services.stop(key)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(path)
        self.services.start(key, chrony.chronyd_argv(str(path)))
        self._config[key] = text
        log.info("network %s: chronyd started on its gateway addresses", net.vni)

    def stop(self, key: str) -> None:
        if self.services.pid(key):
            self.services.stop(key)
        self._config.pop(key, None)

    def running_keys(self) -> list[str]:
        return [k for k in self.services.names() if is_chrony_key(k)]


def tftp_root(net: netconfig.NetSpec) -> tuple[str | None, str]:
    """(the root dnsmasq may serve on this node, "") or (None, why not); (None, "") when the
    network has no TFTP root."""
    if not net.tftp_root:
        return None, ""
    try:         # stored documents are checked by the API; a hand-made one is checked here
        netconfig.check_tftp_root(net.tftp_root)
        if net.dhcp_boot:
            netconfig.check_boot_file(net.dhcp_boot)
    except ValueError as exc:
        return None, f"network {net.vni}: TFTP refused: {exc}"
    if not os.path.isdir(net.tftp_root):
        return None, f"network {net.vni}: TFTP root {net.tftp_root} is not a directory on this node"
    try:
        return netconfig.tftp_root_on_host(net.tftp_root, os.path.realpath(net.tftp_root)), ""
    except ValueError as exc:
        return None, f"network {net.vni}: TFTP root refused: {exc}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None

"""chronyd for managed networks as text: NTP on the gateway addresses (issue #14 item 5).

Pure, like pvc.core.netconfig: the network reconciler writes the configuration into the node's
dynamic directory and starts `chronyd_argv` through its Services adapter, on the primary only.
"""

from __future__ import annotations

import ipaddress

from pvc.core.netconfig import NetSpec

NTP_LOCAL_STRATUM = 10      # the gateways serve the host's clock, below any real time source


def chrony_config(net: NetSpec, *, state_dir: str) -> str | None:
    """chronyd's configuration for one managed network, or None when it has no gateway.

    Bound to the gateway addresses (chrony binds one address per family, hence one instance
    per network), answering only the network's own subnets, serving the host's clock at a fixed
    local stratum: chronyd runs with -x and never adjusts the clock (keeping the host's time
    right is the host's own NTP client's job). No command socket, no drift or dump files; only
    the pid file in `state_dir`."""
    if not net.managed:
        raise ValueError(f"network {net.vni} is bridged: PVC serves no NTP on it")
    if not state_dir.startswith("/") or any(c in state_dir for c in "\n\r\0\t \"#"):
        raise ValueError(f"chrony state directory {state_dir!r} is not absolute or contains a blank, "
                         f"quote or control character")
    lines = [f"# PVC: NTP for network {net.vni} on its gateway addresses (the host's clock, never set)"]
    for gateway, network in ((net.ip4_gateway, net.ip4_network), (net.ip6_gateway, net.ip6_network)):
        if gateway and network:
            lines += [f"bindaddress {ipaddress.ip_address(gateway)}",
                      f"allow {ipaddress.ip_network(network)}"]
    if len(lines) == 1:
        return None
    # no command sockets: neither UDP (cmdport 0) nor the Unix one, which all instances would share
    lines += ["port 123", "cmdport 0", "bindcmdaddress /", f"local stratum {NTP_LOCAL_STRATUM}",
              f"pidfile {state_dir}/chronyd.pid"]
    return "\n".join(lines) + "\n"


def chronyd_argv(config_path: str) -> list[str]:
    """chronyd in the foreground (-d, logging to stderr), never touching the system clock (-x),
    reading only `config_path`."""
    if not config_path.startswith("/") or any(c in config_path for c in "\n\r\0"):
        raise ValueError(f"chrony configuration path {config_path!r} is not absolute")
    return ["chronyd", "-d", "-x", "-f", config_path]

"""MAC addresses for provisioned VMs (pvc-facts §7.2).

A network template's MAC template is formatted with `{prefix}` = 52:54:01, `{vmid}` = one hex
digit of the VM's id and `{netid}` = one hex digit of the interface's index (both wrap at 16),
e.g. `{prefix}:ff:ff:{vmid}{netid}`. Without a template each interface gets a random
52:54:00:xx:xx:xx with octets in 0x10-0xee.
"""

from __future__ import annotations

import random
import re

TEMPLATE_PREFIX = "52:54:01"
RANDOM_PREFIX = "52:54:00"
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class MacTemplateError(ValueError):
    pass


def template_mac(template: str, vm_id: int, net_index: int) -> str:
    """Interpolate a MAC template; the result must be a valid MAC address."""
    try:
        mac = template.format(prefix=TEMPLATE_PREFIX, vmid=f"{int(vm_id) % 16:x}",
                              netid=f"{int(net_index) % 16:x}")
    except (KeyError, IndexError, ValueError) as exc:
        raise MacTemplateError(f"MAC template '{template}' cannot be interpolated: {exc!r} (allowed "
                               f"variables: {{prefix}}, {{vmid}}, {{netid}})") from None
    mac = mac.lower()
    if not _MAC.match(mac):
        raise MacTemplateError(f"MAC template '{template}' gives '{mac}' for VM id {vm_id}, interface "
                               f"{net_index}, which is not a MAC address (six hex pairs separated by ':')")
    return mac


def random_mac(rng: random.Random | None = None) -> str:
    r = rng or random.SystemRandom()
    return RANDOM_PREFIX + "".join(f":{r.randint(0x10, 0xEE):02x}" for _ in range(3))


def mac_for(template: str | None, vm_id: int, net_index: int, rng: random.Random | None = None) -> str:
    """The MAC of interface `net_index`: from the template if there is one, else random."""
    if template:
        return template_mac(template, vm_id, net_index)
    return random_mac(rng)

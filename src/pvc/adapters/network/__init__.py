"""The network host driver: the only code in PVC that changes a node's network stack (DESIGN D8, D11).

Three narrow interfaces (base.py), used by the node's network reconciler (`pvc.node.networks`):

- `NetworkHost`: links (bridges, VXLAN and VLAN devices), bridge ports, VXLAN flood lists (FDB),
  addresses, gratuitous ARP / unsolicited NA, sysctls. Implemented with pyroute2 (linux.py).
- `Nftables`: the whole PVC ruleset, replaced atomically; `check` validates text without applying
  (nftables.py).
- `Services`: the long-running helpers PVC starts itself (one dnsmasq per managed network, the
  cluster DNS view, FRR's zebra and bgpd), tracked by pid files in a run directory (services.py).

Every implementation takes an optional `netns`: None acts in the caller's own namespace (a real
node, or pvcnoded inside a lab node's namespace); a name acts inside that namespace (tests and
benchmarks, which never touch the root namespace; netns.py). `pvc.adapters.network.fake` has
in-memory versions.

PVC marks every device it creates with the ifalias `pvc:<vni>`, so the reconciler removes only its
own devices and never an administrator's.
"""

from pvc.adapters.network.base import Link, NetworkError, NetworkHost, Nftables, Services
from pvc.adapters.network.linux import LinuxNetworkHost
from pvc.adapters.network.netns import in_netns
from pvc.adapters.network.nftables import LinuxNftables
from pvc.adapters.network.services import ProcessServices

__all__ = ["Link", "LinuxNetworkHost", "LinuxNftables", "NetworkError", "NetworkHost", "Nftables",
           "ProcessServices", "Services", "in_netns"]

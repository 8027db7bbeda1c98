"""Client network operations (pvc-facts §5, §8.3 "Networks"): networks, ACLs, DHCP reservations, leases.

The API only writes desired state (DESIGN D2); every node's network reconciler builds bridges, VXLAN
or VLAN devices, gateways, dnsmasq and nftables from these documents:

    /networks/<vni>                 the API's network item (see `network_doc`)
    /netacls/<vni>                  {"in": [{description, rule}, ...], "out": [...]}; list index = order
    /netreservations/<vni>/<mac>    {mac_address, ip4_address, hostname}
    /netleases/<vni>/<mac>          {mac_address, ip4_address, hostname, clientid, expiry, timestamp}
                                    (written by the primary's dnsmasq hook)

Every operation validates all of its input against the whole cluster first and writes nothing when
it refuses (InvalidInput/Conflict -> 400, NotFound -> 404, each message naming the field). Writes are
single transactions guarded by znode versions, so a concurrent writer makes the loser re-validate
instead of slipping past a uniqueness or overlap check:

- network add/modify/remove bump the data version of /networks itself, which serialises them;
- reservation writes bump /netreservations/<vni> and check the network's version, so a subnet
  change and a reservation cannot race past each other;
- an ACL change is one compare-and-set of /netacls/<vni>.

Fixed upstream defects (pvc-facts §13.6, 13.7): name_servers take repeated keys (a single value is
not split per character), an ACL direction other than in/out is refused (not turned into "in"),
and ACL lists show each rule's own text.

The package: `validation` (single values), `networks` (the network document and its writes),
`acls`, `dhcp` (reservations and leases) and `store` (reads and version-checked transactions
shared by them).
"""

from __future__ import annotations

from pvc.cluster.networks.acls import (
    Checker,
    acl_views,
    add_acl,
    check_rule,
    get_acl,
    list_acls,
    remove_acl,
    unquote_rule,
)
from pvc.cluster.networks.dhcp import (
    STATIC,
    add_reservation,
    get_lease,
    lease_view,
    list_leases,
    remove_lease,
)
from pvc.cluster.networks.networks import (
    FIELDS,
    MANAGED_ONLY,
    add_network,
    check_cluster,
    doc_values,
    list_networks,
    merge_changes,
    modify_network,
    network_doc,
    network_item,
    network_users,
    network_view,
    remove_network,
)
from pvc.cluster.networks.store import get_network
from pvc.cluster.networks.validation import (
    DIRECTIONS,
    MTU_MAX,
    MTU_MIN,
    NETWORK_TYPES,
    VLAN_MAX,
    VLAN_MIN,
    VNI_MAX,
    VNI_MIN,
    check_description,
    check_direction,
    check_domain,
    check_host,
    check_hostname,
    check_ip,
    check_ip4_network,
    check_ip6_network,
    check_mtu,
    check_nettype,
    check_order,
    default_domain,
    normalize_mac,
    parse_vni,
)

__all__ = [
    "DIRECTIONS",
    "FIELDS",
    "MANAGED_ONLY",
    "MTU_MAX",
    "MTU_MIN",
    "NETWORK_TYPES",
    "STATIC",
    "VLAN_MAX",
    "VLAN_MIN",
    "VNI_MAX",
    "VNI_MIN",
    "Checker",
    "acl_views",
    "add_acl",
    "add_network",
    "add_reservation",
    "check_cluster",
    "check_description",
    "check_direction",
    "check_domain",
    "check_host",
    "check_hostname",
    "check_ip",
    "check_ip4_network",
    "check_ip6_network",
    "check_mtu",
    "check_nettype",
    "check_order",
    "check_rule",
    "default_domain",
    "doc_values",
    "get_acl",
    "get_lease",
    "get_network",
    "lease_view",
    "list_acls",
    "list_leases",
    "list_networks",
    "merge_changes",
    "modify_network",
    "network_doc",
    "network_item",
    "network_users",
    "network_view",
    "normalize_mac",
    "parse_vni",
    "remove_acl",
    "remove_lease",
    "remove_network",
    "unquote_rule",
]

"""Gratuitous ARP and unsolicited neighbour advertisements: telling a segment where an address is
now (a gateway that moved to this node)."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct

from pvc.adapters.network.base import NetworkError


def mac_bytes(mac: str) -> bytes:
    """The six bytes of a colon-separated MAC address; NetworkError for anything else."""
    try:
        raw = bytes.fromhex(mac.replace(":", ""))
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise NetworkError(f"'{mac}' is not a MAC address")
    return raw


def _garp_frames(ip: ipaddress.IPv4Address, mac: bytes) -> list[bytes]:
    """What `arping -U` and `arping -A` send: a broadcast request and a broadcast reply, both
    saying ip is at mac (receivers update an existing entry from either)."""
    bcast = b"\xff" * 6
    eth = bcast + mac + struct.pack("!H", 0x0806)
    head = struct.pack("!HHBB", 1, 0x0800, 6, 4)
    request = eth + head + struct.pack("!H", 1) + mac + ip.packed + bcast + ip.packed
    reply = eth + head + struct.pack("!H", 2) + mac + ip.packed + mac + ip.packed
    return [frame.ljust(60, b"\0") for frame in (request, reply)]


def _unsolicited_na(ip: ipaddress.IPv6Address, mac: bytes) -> bytes:
    """ICMPv6 neighbour advertisement with Router and Override set (PVC announces gateways: a NA
    without R would make guests drop the gateway from their default routers) and the target
    link-layer address option; the kernel fills in the checksum."""
    return struct.pack("!BBHI", 136, 0, 0, 0xA0000000) + ip.packed + struct.pack("!BB", 2, 1) + mac


def send_announcement(name: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, mac: bytes) -> None:
    """Send the announcement out of link `name` (raw sockets: needs CAP_NET_RAW in its namespace)."""
    if isinstance(ip, ipaddress.IPv4Address):
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as sock:
            sock.bind((name, 0x0806))
            for frame in _garp_frames(ip, mac):
                sock.send(frame)
        return
    index = socket.if_nametoindex(name)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        with contextlib.suppress(OSError):    # source = the address itself when it is local
            sock.bind((str(ip), 0, 0, index))
        sock.sendto(_unsolicited_na(ip, mac), ("ff02::1", 0, 0, index))

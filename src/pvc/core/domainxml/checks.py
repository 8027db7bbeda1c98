"""Validators of single values (integers, units, UUIDs, names, MACs, PCI addresses).

Each accepts what libvirt accepts, returns the canonical form and raises `InvalidDomainXML`
naming the value and where it was found.
"""

from __future__ import annotations

import re
import uuid as uuidlib

from lxml import etree

from pvc.core.domainxml.model import InvalidDomainXML

_INT_RE = re.compile(r"^\s*(-?[0-9]{1,18})\s*$")


def _int(value: str | None, what: str, minimum: int | None = None, maximum: int | None = None) -> int:
    match = _INT_RE.match(value or "")
    if not match:
        raise InvalidDomainXML(f"{what} '{value or ''}' is not an integer")
    number = int(match.group(1))
    if minimum is not None and number < minimum:
        raise InvalidDomainXML(f"{what} must be at least {minimum}, not {number}")
    if maximum is not None and number > maximum:
        raise InvalidDomainXML(f"{what} must be at most {maximum}, not {number}")
    return number


def _opt_int(value: str | None, what: str, minimum: int | None = None) -> int | None:
    return None if value is None else _int(value, what, minimum)


_UNIT_RE = re.compile(r"^(?:(?P<bytes>b|bytes?)|(?P<p>[kmgtpe])(?P<si>b)?|(?P<pi>[kmgtpe])ib)$", re.I)


def _unit_factor(unit: str | None, what: str) -> int:
    """Bytes per unit as libvirt reads them: default KiB; 'KB' is 1000, 'K'/'KiB' 1024 …"""
    if unit is None or unit == "":
        return 1024
    match = _UNIT_RE.match(unit.strip())
    if not match:
        raise InvalidDomainXML(f"{what}: unknown unit '{unit}' (use b, KiB, MiB, GiB, …)")
    if match.group("bytes"):
        return 1
    letter = (match.group("p") or match.group("pi")).lower()
    power = "kmgtpe".index(letter) + 1
    return (1000 if match.group("si") else 1024) ** power


_UUID_RE = re.compile(r"^[0-9a-fA-F-]+$")


def _uuid(value: str | None, what: str = "uuid") -> str:
    """Canonical lower-case UUID; libvirt allows dashes anywhere and rejects all-equal digits."""
    text = (value or "").strip()
    digits = text.replace("-", "")
    if not text or not _UUID_RE.match(text) or len(digits) != 32:
        raise InvalidDomainXML(f"{what} '{value or ''}' is not a valid UUID")
    if len(set(digits.lower())) == 1:
        raise InvalidDomainXML(f"{what} '{value}' is not a valid UUID (all digits are the same)")
    return str(uuidlib.UUID(hex=digits))


def _check_name(name: str, what: str = "name") -> str:
    if not name:
        raise InvalidDomainXML(f"{what} is empty")
    if name != name.strip():
        raise InvalidDomainXML(f"{what} '{name}' has leading or trailing whitespace")
    if "/" in name:
        raise InvalidDomainXML(f"{what} '{name}' contains '/'")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidDomainXML(f"{what} contains control characters")
    if len(name) > 255:
        raise InvalidDomainXML(f"{what} is longer than 255 characters")
    return name


_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


def _mac(value: str | None, what: str) -> str:
    if value is None or not _MAC_RE.match(value):
        raise InvalidDomainXML(f"{what}: '{value or ''}' is not a MAC address (xx:xx:xx:xx:xx:xx)")
    if int(value[:2], 16) & 1:
        raise InvalidDomainXML(f"{what}: {value} is a multicast MAC address; a NIC needs a unicast one")
    return value.lower()


def _pci_part(value: str | None, what: str, maximum: int) -> int:
    text = (value or "").strip()
    if re.fullmatch(r"0[xX][0-9a-fA-F]{1,4}", text):
        number = int(text[2:], 16)
    elif re.fullmatch(r"[0-9]{1,5}", text):
        number = int(text, 10)
    else:
        raise InvalidDomainXML(f"{what} '{value or ''}' is not a number")
    if number > maximum:
        raise InvalidDomainXML(f"{what} {text} is out of range")
    return number


def _pci_address(el: etree._Element | None, what: str) -> str:
    if el is None or el.get("type", "pci") != "pci":
        raise InvalidDomainXML(f"{what}: a hostdev interface needs <source><address type='pci' …/>")
    domain = _pci_part(el.get("domain", "0"), f"{what} PCI domain", 0xFFFF)
    bus = _pci_part(el.get("bus"), f"{what} PCI bus", 0xFF)
    slot = _pci_part(el.get("slot"), f"{what} PCI slot", 0x1F)
    function = _pci_part(el.get("function"), f"{what} PCI function", 7)
    return f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"


_PCI_RE = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$")

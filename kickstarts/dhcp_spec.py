"""Parsing of ``server.dhcp``: the managed DHCP mode, its interface and its address range."""

from __future__ import annotations

import ipaddress

from photonkick.kickstarts.fields import Field, Reader, choice, matching, read_checked, text
from photonkick.kickstarts.source import Map, Node
from photonkick.kickstarts.spec import DHCP_MODES, ManagedDhcp

RANGE_EXAMPLE = "192.0.2.100-192.0.2.200"
INTERFACE_NAME = matching(r"[A-Za-z0-9_.:@-]{1,15}", "a network interface name")


def address_range(
    reader: Reader, node: Node, path: str
) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """``FIRST-LAST``: two IPv4 addresses, the first not above the last."""
    value = text(reader, node, path)
    first, sep, last = (part.strip() for part in value.partition("-"))
    try:
        if not sep:
            raise ValueError
        start, end = ipaddress.IPv4Address(first), ipaddress.IPv4Address(last)
    except ValueError:
        raise reader.fail(
            node.loc, path, f"{value!r} is not an address range like {RANGE_EXAMPLE}"
        ) from None
    if start > end:
        raise reader.fail(node.loc, path, f"{value!r} ends before it starts")
    return start, end


DHCP_FIELDS = {
    "mode": Field(choice(*DHCP_MODES), "off"),
    "interface": Field(INTERFACE_NAME),
    "range": Field(address_range),
}


def managed_dhcp(reader: Reader, node: Node, path: str) -> ManagedDhcp:
    """The ``server.dhcp`` section; full mode needs a range."""
    values = read_checked(reader, node, path, DHCP_FIELDS)
    if values["mode"] == "full" and values["range"] is None:
        raise reader.fail(
            node.loc,
            f"{path}.range",
            "is required with mode: full",
            f"the addresses dnsmasq hands out, e.g. range: {RANGE_EXAMPLE}",
        )
    range_at = node.items["range"].loc if isinstance(node, Map) and "range" in node.items else None
    return ManagedDhcp(values["mode"], values["interface"], values["range"], node.loc, range_at)

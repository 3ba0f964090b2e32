"""The dnsmasq configuration `photonkick serve --dhcp proxy|full` runs: DHCP only, no DNS.

Pure: the serving machine's facts (interface, its address, file paths) come in as a
:class:`DhcpSite`; the boot answers are the ones `photonkick check` prints for a user's
own DHCP server.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from photonkick.kickstarts.spec import Host, Inventory
from photonkick.pxe.dhcp import (
    IPXE_NO_PXEDHCP,
    dnsmasq_boot_lines,
    dnsmasq_http_boot_lines,
    dnsmasq_loader_lines,
    dnsmasq_loader_tags,
    loader_hosts,
    loader_tag,
)

LEASE_TIME = "1h"
PXE_PROMPT = "photonkick"


@dataclass(frozen=True)
class DhcpSite:
    """Where dnsmasq runs: the interface, the server's address on it, its lease and pid files."""

    interface: str
    address: ipaddress.IPv4Interface
    lease_file: str
    pid_file: str


def reservations(
    inventory: Inventory, network: ipaddress.IPv4Network
) -> tuple[list[tuple[Host, ipaddress.IPv4Address]], list[Host]]:
    """Hosts with a static address: those in ``network`` with their address (full mode
    reserves it for their MAC), and those outside it, which no reservation can hold."""
    inside: list[tuple[Host, ipaddress.IPv4Address]] = []
    outside: list[Host] = []
    for host in inventory.hosts:
        if host.mac and host.network is not None:
            ip = host.network.address.ip
            if ip in network:
                inside.append((host, ip))
            else:
                outside.append(host)
    return inside, outside


def dnsmasq_config(inventory: Inventory, mode: str, site: DhcpSite) -> str:
    """The whole dnsmasq.conf for ``mode`` (``proxy`` or ``full``)."""
    if mode not in ("proxy", "full"):
        raise ValueError(f"no dnsmasq configuration for DHCP mode {mode!r}")
    network = site.address.network
    lines = [
        f"# photonkick serve {inventory.source}: DHCP {mode} on {site.interface}",
        "port=0",
        f"interface={site.interface}",
        "bind-interfaces",
        f"pid-file={site.pid_file}",
        f"dhcp-leasefile={site.lease_file}",
        "log-dhcp",
        "log-facility=-",
    ]
    if mode == "proxy":
        lines += [
            f"dhcp-range={network.network_address},proxy,{network.netmask}",
            # dnsmasq answers PXE clients in proxy mode only with a PXE prompt or menu; with
            # no menu entries it hands out the dhcp-boot file below and boots at once.
            f'pxe-prompt="{PXE_PROMPT}",0',
        ]
    else:
        dhcp_range = inventory.server.dhcp.range
        if dhcp_range is None:
            raise ValueError("full mode needs server.dhcp.range")
        first, last = dhcp_range
        lines += [
            f"dhcp-range={first},{last},{network.netmask},{LEASE_TIME}",
            "dhcp-authoritative",
            # The ROM, iPXE, the installer and the installed host all get the MAC's one lease.
            "dhcp-ignore-clid",
            # A free pool address is offered at once, not after a 3 s ping check: on a lab
            # network the spec's static hosts hold reservations, outside the pool or not.
            "no-ping",
        ]
    lines += dnsmasq_boot_lines(inventory) + dnsmasq_loader_lines(inventory)
    if mode == "proxy":
        lines += dnsmasq_loader_tags(inventory)
    else:
        # dnsmasq's proxy mode never answers HTTPClient; in full mode UEFI HTTP boot works.
        lines += dnsmasq_http_boot_lines(inventory)
        lines.append(IPXE_NO_PXEDHCP)
        lines += host_lines(inventory, network)
    return "\n".join(lines) + "\n"


def host_lines(inventory: Inventory, network: ipaddress.IPv4Network) -> list[str]:
    """Full mode's one ``dhcp-host`` line per spec MAC: its reserved address or its spec name
    as host name, and the tag of the loader it chose (dnsmasq reads one line per MAC)."""
    tags = {h.name: f"set:{loader_tag(h.loader)}," for h in loader_hosts(inventory)}
    reserved = reservations(inventory, network)[0]
    lines = [f"dhcp-host={h.mac},{tags.get(h.name, '')}{ip},{h.name}" for h, ip in reserved]
    # The others get a pool address, and their spec name as host name all the same.
    named = {h.name for h, _ in reserved}
    lines += [
        f"dhcp-host={h.mac},{tags.get(h.name, '')}{h.name}"
        for h in inventory.hosts
        if h.mac and h.name not in named
    ]
    return lines

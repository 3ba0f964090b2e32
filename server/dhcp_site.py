"""What managed DHCP needs from this machine, checked before anything starts.

The interface (configured, or the one holding server.url's address), its subnet, the
dnsmasq binary, root, and a free DHCP port. Problems with the spec's values are SpecErrors
at the spec's FILE:LINE; problems with the machine are one-line DhcpSetupErrors naming the fix.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import os
import shutil
import signal
import socket
import struct
import time
from dataclasses import dataclass, replace
from pathlib import Path

from photonkick.kickstarts.errors import Location, PhotonkickError, Problem, SpecError
from photonkick.kickstarts.spec import Inventory
from photonkick.pxe.dhcp import next_server
from photonkick.pxe.dnsmasq_conf import DhcpSite

SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B
DHCP_PORT = 67
CONFIG_FILE = "dnsmasq.conf"
LEASE_FILE = "dnsmasq.leases"
PID_FILE = "dnsmasq.pid"
OFF_HINT = "or serve with --dhcp off and use your own DHCP server"
log = logging.getLogger("photonkick.server.dhcp")


class DhcpSetupError(PhotonkickError):
    """Managed DHCP cannot run on this machine; the message names the fix."""


@dataclass(frozen=True)
class DhcpPlan:
    """Everything `serve` needs to run dnsmasq: mode, site, binary and state files."""

    mode: str
    site: DhcpSite
    dnsmasq: str
    config_file: Path


def with_mode(inventory: Inventory, mode: str | None) -> Inventory:
    """The inventory with ``--dhcp MODE`` in place of server.dhcp.mode (None keeps it)."""
    if mode is None:
        return inventory
    server = inventory.server
    return replace(inventory, server=replace(server, dhcp=replace(server.dhcp, mode=mode)))


def find_dnsmasq() -> str | None:
    """The dnsmasq binary (Debian puts it in /usr/sbin, which a user's PATH may lack)."""
    return shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")


def interface_address(name: str) -> ipaddress.IPv4Interface | None:
    """The (primary) IPv4 address and prefix of interface ``name``; None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("256s", name.encode()[:15])
        try:
            addr = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)[20:24]
            mask = fcntl.ioctl(sock.fileno(), SIOCGIFNETMASK, request)[20:24]
        except OSError as exc:
            if exc.errno in (errno.EADDRNOTAVAIL, errno.ENODEV):
                return None
            raise
    prefix = ipaddress.IPv4Network(f"0.0.0.0/{socket.inet_ntoa(mask)}").prefixlen
    return ipaddress.IPv4Interface(f"{socket.inet_ntoa(addr)}/{prefix}")


def interface_names() -> list[str]:
    """The names of this machine's network interfaces."""
    return [name for _, name in socket.if_nameindex()]


def _server_address(inventory: Inventory) -> ipaddress.IPv4Address | None:
    host = next_server(inventory)
    try:
        return ipaddress.IPv4Address(socket.gethostbyname(host))
    except (OSError, ValueError):
        return None


def _problem(at: Location | None, inventory: Inventory, key: str, message: str) -> SpecError:
    where = at or Location(str(inventory.source), 1, 1)
    return SpecError([Problem(where, key, message)])


def resolve_site(inventory: Inventory, state_dir: Path) -> DhcpSite:
    """The interface dnsmasq serves, its address, and where its leases go; checks the range."""
    dhcp = inventory.server.dhcp
    names = interface_names()
    if dhcp.interface is not None:
        if dhcp.interface not in names:
            raise _problem(
                dhcp.at,
                inventory,
                "server.dhcp.interface",
                f"no interface {dhcp.interface} on this machine (it has {', '.join(names)})",
            )
        address = interface_address(dhcp.interface)
        if address is None:
            raise _problem(
                dhcp.at,
                inventory,
                "server.dhcp.interface",
                f"{dhcp.interface} has no IPv4 address; DHCP needs one on its subnet",
            )
        site = _site(dhcp.interface, address, state_dir)
    else:
        site = _site_of_server_address(inventory, names, state_dir)
    _check_range(inventory, site)
    return site


def _site(interface: str, address: ipaddress.IPv4Interface, state_dir: Path) -> DhcpSite:
    return DhcpSite(interface, address, str(state_dir / LEASE_FILE), str(state_dir / PID_FILE))


def _site_of_server_address(inventory: Inventory, names: list[str], state_dir: Path) -> DhcpSite:
    server = _server_address(inventory)
    for name in names:
        address = interface_address(name)
        if address is not None and server is not None and address.ip == server:
            return _site(name, address, state_dir)
    raise _problem(
        inventory.server.dhcp.at,
        inventory,
        "server.dhcp.interface",
        f"no interface here holds {next_server(inventory)} (the host of server.url); "
        "set server.dhcp.interface",
    )


def _check_range(inventory: Inventory, site: DhcpSite) -> None:
    dhcp = inventory.server.dhcp
    if dhcp.mode != "full":
        return
    if dhcp.range is None:
        raise _problem(
            dhcp.at,
            inventory,
            "server.dhcp.range",
            "is required for full mode (e.g. range: 192.0.2.100-192.0.2.200)",
        )
    network = site.address.network
    first, last = dhcp.range
    if first not in network or last not in network:
        raise _problem(
            dhcp.range_at or dhcp.at,
            inventory,
            "server.dhcp.range",
            f"{first}-{last} is not inside {network}, the subnet of {site.interface}",
        )
    if first <= site.address.ip <= last:
        raise _problem(
            dhcp.range_at or dhcp.at,
            inventory,
            "server.dhcp.range",
            f"{first}-{last} holds this server's own address {site.address.ip}",
        )


def check_machine(site: DhcpSite) -> str:
    """Root, dnsmasq and a free port 67 on the interface; the dnsmasq path."""
    if os.geteuid() != 0:
        raise DhcpSetupError(
            f"managed DHCP needs root (DHCP port {DHCP_PORT}): run serve as root, {OFF_HINT}"
        )
    binary = find_dnsmasq()
    if binary is None:
        raise DhcpSetupError(
            f"managed DHCP needs dnsmasq: apt-get install dnsmasq-base, {OFF_HINT}"
        )
    stop_leftover(Path(site.pid_file))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, site.interface.encode())
        try:
            probe.bind(("0.0.0.0", DHCP_PORT))
        except OSError as exc:
            raise DhcpSetupError(
                f"DHCP port {DHCP_PORT} on {site.interface} is in use ({exc.strerror}): another "
                f"DHCP server runs here; stop it, {OFF_HINT}"
            ) from None
    return binary


def stop_leftover(pid_file: Path, grace: float = 5.0) -> None:
    """Stop a dnsmasq an earlier `serve` of this state directory left running.

    The tether that stops dnsmasq with `serve` (see supervisor.py) leaves it only when the
    tether was killed too; its pid file (written while it was root) finds it again. Only a
    process that is dnsmasq with this state directory's config is stopped.
    """
    try:
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return
    config = f"--conf-file={pid_file.parent / CONFIG_FILE}".encode()
    if not cmdline or Path(cmdline[0].decode(errors="replace")).name != "dnsmasq":
        return
    if config not in cmdline:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    log.warning("stopped dnsmasq (pid %d) that an earlier serve left running", pid)


def plan_dhcp(inventory: Inventory, state_dir: Path) -> DhcpPlan | None:
    """Check everything managed DHCP needs; None when server.dhcp.mode is off."""
    mode = inventory.server.dhcp.mode
    if mode == "off":
        return None
    site = resolve_site(inventory, state_dir)
    binary = check_machine(site)
    return DhcpPlan(mode, site, binary, state_dir / CONFIG_FILE)

"""A small DHCP client for tests: raw DHCPv4 packets on a UDP socket bound to one interface.

It plays the firmware: a PXE ROM (vendor class ``PXEClient`` with its architecture), UEFI
x64, or iPXE (user class ``iPXE``), and reads every reply within a time limit, so a test
sees both offers on a network with two DHCP servers (one with an address, one proxy).
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import time
from dataclasses import dataclass

MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER, REQUEST, ACK, NAK = 1, 2, 3, 5, 6
ARCH_BIOS, ARCH_EFI_X64 = 0, 7


@dataclass(frozen=True)
class Firmware:
    """What a client says about itself: architecture (option 93), user class, vendor class."""

    arch: int = ARCH_BIOS
    user_class: bytes | None = None
    vendor: str = "PXEClient"

    @property
    def vendor_class(self) -> bytes:
        return f"{self.vendor}:Arch:{self.arch:05d}:UNDI:003016".encode()


BIOS = Firmware(ARCH_BIOS)
UEFI = Firmware(ARCH_EFI_X64)
IPXE = Firmware(ARCH_BIOS, b"iPXE")
UEFI_HTTP = Firmware(16, vendor="HTTPClient")


@dataclass(frozen=True)
class Reply:
    """One DHCP reply: message type, offered address, next server, boot file, options."""

    kind: int
    xid: int
    yiaddr: str
    siaddr: str
    file: str
    options: dict[int, bytes]

    @property
    def server_id(self) -> str:
        return str(ipaddress.IPv4Address(self.options[54]))

    @property
    def boot_file(self) -> str:
        return self.file or self.options.get(67, b"").rstrip(b"\0").decode()


def _option(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


def packet(
    mac: str, xid: int, kind: int, firmware: Firmware, extra: bytes = b"", ciaddr: str = "0.0.0.0"
) -> bytes:
    """A BOOTREQUEST of DHCP type ``kind`` from ``mac`` (broadcast replies asked for)."""
    chaddr = bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0")
    client = ipaddress.IPv4Address(ciaddr).packed
    zero = b"\0" * 4
    head = struct.pack(
        "!BBBBIHH4s4s4s4s16s", 1, 1, 6, 0, xid, 0, 0x8000, client, zero, zero, zero, chaddr
    )
    options = _option(53, bytes([kind])) + _option(60, firmware.vendor_class)
    options += _option(93, struct.pack("!H", firmware.arch)) + _option(94, b"\x01\x02\x01")
    options += _option(97, b"\0" + bytes.fromhex(mac.replace(":", "")) * 2 + b"\0\0\0\0")
    options += _option(55, bytes([1, 3, 6, 43, 60, 66, 67, 97, 175]))
    if firmware.user_class is not None:
        options += _option(77, firmware.user_class)
    return head + b"\0" * 192 + MAGIC + options + extra + b"\xff"


def parse(data: bytes) -> Reply | None:
    """A BOOTREPLY, or None for anything else."""
    if len(data) < 240 or data[0] != 2 or data[236:240] != MAGIC:
        return None
    xid = struct.unpack("!I", data[4:8])[0]
    yiaddr, siaddr = (str(ipaddress.IPv4Address(data[i : i + 4])) for i in (16, 20))
    file = data[108:236].split(b"\0", 1)[0].decode(errors="replace")
    options: dict[int, bytes] = {}
    i = 240
    while i < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        code, length = data[i], data[i + 1]
        options[code] = data[i + 2 : i + 2 + length]
        i += 2 + length
    kind = options.get(53, b"\0")[0]
    return Reply(kind, xid, yiaddr, siaddr, file, options)


class DhcpClient:
    """A client socket on port 68 of ``interface`` (create it inside the client's namespace)."""

    def __init__(self, interface: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        self.sock.bind(("0.0.0.0", 68))

    def close(self) -> None:
        self.sock.close()

    def exchange(
        self,
        mac: str,
        kind: int,
        firmware: Firmware,
        extra: bytes = b"",
        wait: float = 3.0,
        count: int | None = None,
        to: tuple[str, int] = ("255.255.255.255", 67),
        ciaddr: str = "0.0.0.0",
    ) -> list[Reply]:
        """Send one request (broadcast unless ``to`` says); the replies to it within ``wait``
        seconds (at most ``count``)."""
        xid = int.from_bytes(os.urandom(4), "big")
        self.sock.sendto(packet(mac, xid, kind, firmware, extra, ciaddr), to)
        replies: list[Reply] = []
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                break
            reply = parse(self.sock.recv(4096))
            if reply is not None and reply.xid == xid:
                replies.append(reply)
                if len(replies) == count:
                    break
        return replies

    def lease(self, mac: str, firmware: Firmware, wait: float = 3.0) -> tuple[Reply, Reply]:
        """DISCOVER, then REQUEST the first address offered: (offer, ack)."""
        offers = [
            r
            for r in self.exchange(mac, DISCOVER, firmware, wait=wait, count=1)
            if r.yiaddr != "0.0.0.0"
        ]
        if not offers:
            raise AssertionError(f"no DHCP offer with an address for {mac}")
        offer = offers[0]
        extra = _option(50, ipaddress.IPv4Address(offer.yiaddr).packed)
        extra += _option(54, offer.options[54])
        acks = [r for r in self.exchange(mac, REQUEST, firmware, extra, wait, 1) if r.kind == ACK]
        if not acks:
            raise AssertionError(f"no DHCPACK for {mac} requesting {offer.yiaddr}")
        return offer, acks[0]

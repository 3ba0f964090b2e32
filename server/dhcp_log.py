"""dnsmasq's ``--log-dhcp`` output turned into DHCP events per MAC, and the leases they show.

dnsmasq logs each packet it answers as several lines sharing the packet's transaction id:
the client's vendor and user class, the packet itself (``DHCPOFFER(eth1) 192.0.2.21
00:50:56:00:10:01``, or ``PXE(eth1) ... proxy`` in proxy mode), then what it sent (the boot
file). :class:`DhcpLogParser` gathers one transaction's lines into one :class:`DhcpEvent`.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from dataclasses import dataclass

PACKET_KINDS = ("DHCPDISCOVER", "DHCPOFFER", "DHCPACK", "DHCPNAK", "PXE")
"""The packets that become timeline events (requests, releases and informs do not)."""
MAX_CLASS = 64
"""Characters kept of a client's vendor or user class (the client chooses them)."""
_LINE = re.compile(r"dnsmasq-dhcp(?:\[\d+\])?: (?:(\d+) )?(.*)")
_PACKET = re.compile(r"(DHCP[A-Z]+|PXE|BOOTP)\(([^)]*)\) (.*)")
_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_BOOT_FILE = re.compile(r"(?:bootfile name: |sent size: +\d+ option: 67 bootfile-name +)(\S+)")


@dataclass(frozen=True)
class DhcpEvent:
    """One DHCP packet dnsmasq saw or sent, with what the client said about itself."""

    kind: str
    mac: str
    ip: str | None = None
    boot_file: str | None = None
    vendor_class: str | None = None
    user_class: str | None = None
    note: str | None = None
    at: float | None = None
    """When its packet line arrived (the reader's monotonic clock), if the reader said."""

    @property
    def detail(self) -> str:
        """The timeline's one-line detail: packet, address, boot file, client class."""
        parts = [self.kind]
        if self.ip:
            parts.append(self.ip)
        if self.note:
            parts.append(self.note)
        if self.boot_file:
            parts.append(f"boot {self.boot_file}")
        client = " ".join(c for c in (self.vendor_class, self.user_class) if c)
        if client:
            parts.append(f"({client})")
        return " ".join(parts)


@dataclass
class _Transaction:
    xid: str
    packet: DhcpEvent | None = None
    vendor_class: str | None = None
    user_class: str | None = None
    boot_file: str | None = None


class DhcpLogParser:
    """Feed it dnsmasq's lines in order; it returns each finished transaction's event.

    A transaction ends when a line of another one arrives, or when :meth:`flush` is called
    (the reader calls it when dnsmasq has been quiet for a moment).
    """

    def __init__(self) -> None:
        self._open: _Transaction | None = None

    def feed(self, line: str, at: float | None = None) -> list[DhcpEvent]:
        """Take one log line that arrived at ``at``; return the events it completed
        (usually none). Each event carries the arrival time of its packet line."""
        match = _LINE.match(line)
        if match is None:
            return []
        xid, text = match.group(1), match.group(2).strip()
        if xid is None:
            return self.flush()
        done: list[DhcpEvent] = []
        if self._open is None or self._open.xid != xid:
            done = self.flush()
            self._open = _Transaction(xid)
        self._take(self._open, text, done, at)
        return done

    def flush(self) -> list[DhcpEvent]:
        """End the open transaction; its event, if it had a packet line."""
        tx, self._open = self._open, None
        return [] if tx is None or tx.packet is None else [_finish(tx)]

    def _take(self, tx: _Transaction, text: str, done: list[DhcpEvent], at: float | None) -> None:
        if text.startswith("vendor class: "):
            tx.vendor_class = text.removeprefix("vendor class: ")[:MAX_CLASS]
        elif text.startswith("user class: "):
            tx.user_class = text.removeprefix("user class: ")[:MAX_CLASS]
        elif boot := _BOOT_FILE.match(text):
            tx.boot_file = boot.group(1)
        elif packet := _packet(text, at):
            if tx.packet is not None:
                done.append(_finish(tx))
                tx.boot_file = None
            tx.packet = packet


def _packet(text: str, at: float | None = None) -> DhcpEvent | None:
    """``KIND(iface) [ip] mac [note]`` for the kinds that matter, else None."""
    match = _PACKET.fullmatch(text)
    if match is None or match.group(1) not in PACKET_KINDS:
        return None
    words = match.group(3).split()
    ip = None
    if words:
        try:
            ip = str(ipaddress.IPv4Address(words[0]))
            words = words[1:]
        except ValueError:
            pass
    if not words or not _MAC.fullmatch(words[0].lower()):
        return None
    note = " ".join(words[1:]) or None
    kind = match.group(1)
    if kind in ("DHCPOFFER", "DHCPACK"):
        note = None  # the client's host name: it says nothing about the boot
    return DhcpEvent(kind, words[0].lower(), ip, note=note, at=at)


def _finish(tx: _Transaction) -> DhcpEvent:
    assert tx.packet is not None
    p = tx.packet
    boot = tx.boot_file if p.kind in ("DHCPOFFER", "DHCPACK", "PXE") else None
    return DhcpEvent(p.kind, p.mac, p.ip, boot, tx.vendor_class, tx.user_class, p.note, p.at)


class Leases:
    """Which addresses dnsmasq leased to which MAC. Thread-safe: the log reader adds, request
    threads read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ips: dict[str, list[str]] = {}

    def add(self, mac: str, ip: str) -> None:
        """Note that ``ip`` was leased to ``mac`` (a MAC may hold several: ROM, installer)."""
        with self._lock:
            ips = self._ips.setdefault(mac.lower(), [])
            if ip not in ips:
                ips.append(ip)

    def ips(self, mac: str) -> tuple[str, ...]:
        """Every address leased to ``mac``, oldest first."""
        with self._lock:
            return tuple(self._ips.get(mac.lower(), ()))

    def load(self, lease_file_text: str) -> None:
        """Add the leases of a dnsmasq lease file (``expiry mac ip name client-id`` lines)."""
        for line in lease_file_text.splitlines():
            words = line.split()
            if len(words) >= 3 and _MAC.fullmatch(words[1].lower()):
                try:
                    ipaddress.IPv4Address(words[2])
                except ValueError:
                    continue
                self.add(words[1], words[2])

"""Empty IPv6 router advertisements in answer to router solicitations (managed DHCP).

iPXE waits about 16 s for an IPv6 router before it boots on a network that has none. On a
network that may be someone else's, photonkick must not become a router or hand out
prefixes: it answers each solicitation, unicast to the host that sent it, with an
advertisement that has router lifetime 0 and no options. That ends iPXE's wait and changes
nothing on any host.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time

log = logging.getLogger("photonkick.server.router_advert")
ROUTER_SOLICITATION = 133
ROUTER_ADVERTISEMENT = 134
ALL_ROUTERS = "ff02::2"
ALL_NODES = "ff02::1"
ICMP6_FILTER = 1
"""Socket option (level IPPROTO_ICMPV6) choosing which ICMPv6 types a raw socket receives."""
NEIGHBOR_DISCOVERY_HOPS = 255
"""RFC 4861: neighbor discovery packets are sent, and only accepted, with hop limit 255."""
MULTICAST_GAP = 3.0
"""RFC 4861 MIN_DELAY_BETWEEN_RAS: seconds between two multicast advertisements."""
POLL_SECONDS = 0.5
EMPTY_ADVERTISEMENT = struct.pack(
    "!BBHBBHII", ROUTER_ADVERTISEMENT, 0, 0, 0, 0, 0, 0, 0
)  # type, code, checksum (the kernel's), hop limit, flags, router lifetime 0, timers 0


def _only_solicitations() -> bytes:
    """An ICMP6_FILTER that passes router solicitations only (a set bit blocks a type)."""
    words = [0xFFFFFFFF] * 8
    words[ROUTER_SOLICITATION >> 5] &= ~(1 << (ROUTER_SOLICITATION & 31))
    return struct.pack("8I", *words)


def _hop_limit(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT and len(data) >= 4:
            return int(struct.unpack("i", data[:4])[0])
    return None


class RouterSolicitationAnswers:
    """Answers router solicitations on one interface with :data:`EMPTY_ADVERTISEMENT`."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self._ifindex = 0
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_multicast = 0.0

    def start(self) -> None:
        """Open the ICMPv6 socket and answer in a thread; OSError when the interface has no
        IPv6 or this process may not open raw sockets (nothing is left running then)."""
        ifindex = socket.if_nametoindex(self.interface)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.interface.encode())
            sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, _only_solicitations())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            group = socket.inet_pton(socket.AF_INET6, ALL_ROUTERS) + struct.pack("@I", ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
            for option in (socket.IPV6_UNICAST_HOPS, socket.IPV6_MULTICAST_HOPS):
                sock.setsockopt(socket.IPPROTO_IPV6, option, NEIGHBOR_DISCOVERY_HOPS)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        except OSError:
            sock.close()
            raise
        self._sock, self._ifindex = sock, ifindex
        self._thread = threading.Thread(target=self._run, name="router-answers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop answering and close the socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            if not select.select([self._sock], [], [], POLL_SECONDS)[0]:
                continue
            try:
                data, ancillary, _flags, peer = self._sock.recvmsg(1500, socket.CMSG_SPACE(4))
                self._answer(data, ancillary, peer[0])
            except OSError as exc:
                log.warning("IPv6 router solicitation not answered: %s", exc)

    def _answer(self, data: bytes, ancillary: list[tuple[int, int, bytes]], source: str) -> None:
        if len(data) < 8 or data[0] != ROUTER_SOLICITATION or data[1] != 0:
            return
        if _hop_limit(ancillary) != NEIGHBOR_DISCOVERY_HOPS:
            return  # not from this link (RFC 4861 6.1.1)
        assert self._sock is not None
        source = source.split("%", 1)[0]
        if source == "::":  # a host without an address yet: only multicast reaches it
            now = time.monotonic()
            if now - self._last_multicast < MULTICAST_GAP:
                return
            self._last_multicast = now
            source = ALL_NODES
        self._sock.sendto(EMPTY_ADVERTISEMENT, (source, 0, 0, self._ifindex))
        log.debug("empty router advertisement sent to %s", source)

"""Network namespaces for managed-DHCP tests: a server, a client and a second DHCP server.

``server`` holds a bridge with 192.0.2.1/24; ``client`` and ``office`` (192.0.2.2/24, for a
plain DHCP server that is not photonkick's) each hang on it by a veth pair. Nothing leaves
the namespaces: there is no uplink and no route out. Names carry a random suffix, and
:meth:`DhcpNet.delete` removes every namespace (and with them the links).
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from lab.netlab import call_in_netns

T = TypeVar("T")
SERVER_IP = "192.0.2.1"
OFFICE_IP = "192.0.2.2"
BRIDGE = "pkbr0"
CLIENT_IF = "pkc0"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@dataclass
class DhcpNet:
    """Three live namespaces; build them with :func:`create`."""

    server: str
    client: str
    office: str

    def exec_args(self, ns: str, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns, *argv]

    def inside(self, ns: str, fn: Callable[[], T]) -> T:
        """Call ``fn`` on a thread that entered ``ns``; sockets it makes stay in ``ns``."""
        return call_in_netns(ns, fn)

    def delete(self) -> None:
        """Remove the namespaces; their links go with them."""
        for ns in (self.client, self.office, self.server):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)


def create() -> DhcpNet:
    """Build the three namespaces and their links; delete them again on any failure."""
    tag = secrets.token_hex(3)
    net = DhcpNet(f"pkd-s-{tag}", f"pkd-c-{tag}", f"pkd-o-{tag}")
    try:
        for ns in (net.server, net.client, net.office):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", net.server, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", net.server, "addr", "add", f"{SERVER_IP}/24", "dev", BRIDGE)
        _ip("-n", net.server, "link", "set", BRIDGE, "up")
        for ns, far, ip in ((net.client, CLIENT_IF, None), (net.office, "pko0", OFFICE_IP)):
            near = f"v{ns[4]}-{ns[-6:]}"
            _ip("-n", net.server, "link", "add", near, "type", "veth", "peer", "name", far,
                "netns", ns)  # fmt: skip
            _ip("-n", net.server, "link", "set", near, "master", BRIDGE, "up")
            if ip is not None:
                _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", far)
            _ip("-n", ns, "link", "set", far, "up")
    except BaseException:
        net.delete()
        raise
    return net

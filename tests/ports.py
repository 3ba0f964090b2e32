"""Free loopback ports for servers that tests start."""

from __future__ import annotations

import socket


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM, address: str = "127.0.0.1") -> int:
    """A TCP (or, with ``SOCK_DGRAM``, UDP) port on a loopback ``address`` that was free a
    moment ago."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port

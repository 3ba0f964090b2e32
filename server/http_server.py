"""The waitress server under the Flask app, with every limit stated instead of its defaults.

Waitress reads requests and writes responses (files too) on one asyncore thread and runs the
app on worker threads only once a request has fully arrived, so idle or half-sent connections
hold no worker; they only count against the connection limit, at which waitress stops
accepting. The limit is therefore far above what such clients hold for ``CHANNEL_TIMEOUT``.
"""

from __future__ import annotations

import resource
import socket
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask
from waitress.utilities import BadRequest, ServerNotImplemented

from photonkick.server.http import MAX_BODY

THREADS = 8
"""Workers running the app."""
CONNECTIONS = 1000
"""Open connections at most (fewer when the open-file limit cannot be raised to fit)."""
CHANNEL_TIMEOUT = 15
"""Seconds a connection may stay silent, mid-request or idle, before it is closed."""
CLEANUP_INTERVAL = 2
"""Seconds between sweeps for silent connections."""
MAX_HEADERS = 32 * 1024
"""Bytes of request line and headers; loaders and installers send a few hundred."""
FD_RESERVE = 512
"""File descriptors kept for TFTP transfers, files being sent and the state database."""


def http_server(host: str, port: int, app: Any) -> Any:
    """A bound (not yet serving) waitress server for ``app``; OSError when it cannot bind.

    A host name is resolved here to its first address: waitress would open one listener per
    address, which this single-listener loop does not serve.
    """
    address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    server = create_server(
        app,
        host=str(address[0][4][0]),
        port=port,
        ident="photonkick",
        threads=THREADS,
        connection_limit=connection_limit(CONNECTIONS),
        channel_timeout=CHANNEL_TIMEOUT,
        cleanup_interval=CLEANUP_INTERVAL,
        # Over the cap by its Content-Length: 413 before a byte of the body is read.
        max_request_body_size=MAX_BODY,
        max_request_header_size=MAX_HEADERS,
        asyncore_use_poll=True,  # select() cannot watch descriptors above 1023
    )
    server.channel_class = _Channel
    return server


def connection_limit(wanted: int) -> int:
    """``wanted``, after raising the open-file limit to fit it; less when it cannot be raised."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft - FD_RESERVE))


class _ErrorTask(ErrorTask):  # type: ignore[misc]
    """Waitress's error answer, but a transfer coding it cannot read is the client's error.

    RFC 9112 suggests 501 there; photonkick answers every request it cannot take with a 4xx,
    so that 5xx always means a fault of the server.
    """

    def execute(self) -> None:
        error = self.request.error
        if isinstance(error, ServerNotImplemented):
            self.request.error = BadRequest(error.body)
        super().execute()


class _Channel(HTTPChannel):  # type: ignore[misc]
    error_task_class = _ErrorTask

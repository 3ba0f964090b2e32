"""Waiting on one file descriptor, whatever its number.

``select.select`` cannot watch a descriptor above 1023, which a long-running process with many
open files (or connections) reaches; ``poll`` has no such limit.
"""

from __future__ import annotations

import select


def wait_for_fd(fd: int, events: int, timeout: float) -> bool:
    """Whether ``fd`` became ready for ``events`` (``select.POLLIN``/``POLLOUT``) within
    ``timeout`` seconds; an error or hang-up on it counts as ready, so the caller's read or
    write reports it."""
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(max(timeout, 0.0) * 1000))

"""Waiting on a descriptor above 1023, where select() fails with 'filedescriptor out of range'."""

from __future__ import annotations

import os
import resource
import select
import socket

import pytest

from photonkick.server.fd_wait import wait_for_fd

HIGH_FD = 1500


def test_a_descriptor_above_1023_can_be_waited_on() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= HIGH_FD:
        pytest.skip(f"the open-file limit ({hard}) does not reach fd {HIGH_FD}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, HIGH_FD + 1), hard))
    left, right = socket.socketpair()
    high = os.dup2(left.fileno(), HIGH_FD)
    try:
        with pytest.raises(ValueError):
            select.select([high], [], [], 0)  # what the old code did
        assert not wait_for_fd(high, select.POLLIN, 0.05)
        right.send(b"x")
        assert wait_for_fd(high, select.POLLIN, 1.0)
        assert wait_for_fd(high, select.POLLOUT, 1.0)
    finally:
        os.close(high)
        left.close()
        right.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

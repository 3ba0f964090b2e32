"""A small process between `serve` and a supervised child, so the child never outlives serve.

The kernel's parent-death signal is lost when the child changes its user (dnsmasq drops root
after binding its ports), and a child in a session of its own misses a kill of serve's process
group. The tether keeps serve's user (root): it runs ``argv``, reads the lifeline on its stdin
(a pipe whose other end only `serve` holds) and, when that breaks because serve has ended in
whatever way, stops the child (SIGTERM, SIGKILL after GRACE seconds). A SIGTERM or SIGINT to
the tether is passed on to the child. The tether ends when the child does, with the child's
exit status (a child killed by a signal kills the tether with the same signal).

Why a tether: dnsmasq clears the parent-death signal when it changes group and user (it ran
on after its parent's SIGKILL even with ``--user=root``; only ``--user=root --group=root``
kept the signal, leaving the DHCP parser root), and it ignores SIGPIPE, so a broken output
pipe never ends it. Through the tether it is gone about 10 ms after serve's SIGKILL, for
one extra process of about 12 MB.

Usage: ``python -m photonkick.server.tether PROGRAM [ARG...]``
"""

from __future__ import annotations

import os
import resource
import select
import signal
import subprocess
import sys
from types import FrameType

GRACE = 1.0
"""Seconds a child has to end on SIGTERM, once serve is gone, before it is killed."""
TICK = 0.5
"""Seconds between checks of the child where the kernel has no pidfd (before Linux 5.3)."""
CANNOT_START = 127


def _watch(child: subprocess.Popen[bytes], lifeline: int) -> None:
    """Return when the child has ended, or stop it when the lifeline breaks."""
    poller = select.poll()
    poller.register(lifeline, select.POLLIN)
    try:
        pidfd: int | None = os.pidfd_open(child.pid)  # readable when the child has ended
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    while child.poll() is None:
        ready = [fd for fd, _ in poller.poll(None if pidfd is not None else TICK * 1000)]
        if lifeline in ready and not os.read(lifeline, 512):
            _stop(child)
            return


def _stop(child: subprocess.Popen[bytes]) -> None:
    child.terminate()
    try:
        child.wait(GRACE)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _end_like(status: int) -> None:
    """Exit with the child's status; a child killed by signal N kills us with N."""
    if status >= 0:
        os._exit(status)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the child's crash, not ours
    if -status != signal.SIGKILL:
        signal.signal(-status, signal.SIG_DFL)
    os.kill(os.getpid(), -status)
    os._exit(128 - status)  # a signal that does not end a process (none of the usual ones)


def main(argv: list[str]) -> None:
    """Run ``argv`` tethered to this process's stdin; never returns."""
    if not argv:
        print("usage: python -m photonkick.server.tether PROGRAM [ARG...]", file=sys.stderr)
        os._exit(2)
    children: list[subprocess.Popen[bytes]] = []
    early: list[int] = []  # signals that came before the child was there

    def forward(signum: int, frame: FrameType | None) -> None:
        if not children:
            early.append(signum)
        elif children[0].returncode is None:
            children[0].send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        children.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL))
    except OSError as exc:
        print(f"cannot start {argv[0]}: {exc.strerror or exc}", flush=True)
        os._exit(CANNOT_START)
    child = children[0]
    for signum in early:
        child.send_signal(signum)
    _watch(child, sys.stdin.fileno())
    _end_like(child.wait())


if __name__ == "__main__":
    main(sys.argv[1:])

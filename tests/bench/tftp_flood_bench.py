"""Benchmark: TFTP availability under floods of requests that are never acknowledged.

Run: .venv/bin/python tests/bench/tftp_flood_bench.py [--waves 3] [--wave 300] [--every 10]
Needs tftpd-hpa (/usr/sbin/in.tftpd, started here in the foreground on a loopback port, never as
the system service). Each server, in turn and in a process of its own: every ``--every`` seconds
127.0.0.2 sends ``--wave`` read requests, each from a port of its own that stays open and never
acknowledges anything; meanwhile 127.0.0.3 fetches its per-MAC config every ``--probe-every``
seconds, as a PXE client would (the request sent again after 0.5 s without an answer).
Availability is the share of those fetches complete within ``--deadline`` seconds.
Goal: photonkick >= 95 %, beside tftpd-hpa's figure from the same run.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from tftp_bench import IN_TFTPD, config_name, config_text, make_tree, photonkick, tftpd_hpa

FLOODER = "127.0.0.2"
PROBER = "127.0.0.3"
RESEND_AFTER = 0.5
GOAL = 0.95


@dataclass
class Outcome:
    """The probes of one server: when each started and whether it was served in time."""

    probes: list[tuple[float, bool]]
    flood_answers: int

    @property
    def availability(self) -> float:
        return sum(ok for _, ok in self.probes) / len(self.probes)

    @property
    def longest_outage(self) -> float:
        """Seconds from the first failed probe of a run of failures to the next success."""
        longest, began = 0.0, None
        for at, ok in self.probes:
            if not ok and began is None:
                began = at
            elif ok and began is not None:
                longest, began = max(longest, at - began), None
        if began is not None:
            longest = max(longest, self.probes[-1][0] - began)
        return longest


def rrq(name: str) -> bytes:
    """A read request without options: the shortest answer, like a small PXE ROM's."""
    return b"\0\x01" + name.encode() + b"\0octet\0"


def fetch(port: int, name: str, expected: bytes, deadline: float) -> bool:
    """One fetch of a one-block file from PROBER; True when complete within ``deadline`` s."""
    end = time.monotonic() + deadline
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((PROBER, 0))
        request, resend = rrq(name), time.monotonic()
        while (now := time.monotonic()) < end:
            if now >= resend:
                sock.sendto(request, ("127.0.0.1", port))
                resend = now + RESEND_AFTER
            sock.settimeout(max(min(end, resend) - now, 0.001))
            try:
                datagram, peer = sock.recvfrom(1024)
            except TimeoutError:
                continue
            if datagram[:4] == b"\0\x03\0\x01":
                sock.sendto(b"\0\x04\0\x01", peer)
                return datagram[4:] == expected
            if datagram[:2] == b"\0\x05":
                return False
    return False


def flood(port: int, count: int) -> list[socket.socket]:
    """``count`` requests from FLOODER, one port each; the sockets stay open, never reading."""
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((FLOODER, 0))
        sock.sendto(rrq("pxelinux.0"), ("127.0.0.1", port))
        socks.append(sock)
    return socks


def answered(socks: list[socket.socket]) -> int:
    """How many flood sockets got at least one datagram."""
    count = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            sock.recv(1)
        except BlockingIOError:
            continue
        except OSError:
            pass
        count += 1
    return count


def run(port: int, args: argparse.Namespace) -> Outcome:
    """Waves of flood and steady probes against the server on ``port``."""
    flooded: list[socket.socket] = []
    probes: list[tuple[float, bool]] = []
    start = time.monotonic()
    next_wave, next_probe = start, start
    duration = args.waves * args.every
    answers = 0
    try:
        while (now := time.monotonic()) < start + duration:
            if now >= next_wave:
                wave = flood(port, args.wave)
                flooded += wave
                next_wave += args.every
            if now >= next_probe:
                ok = fetch(port, config_name(0), config_text(0), args.deadline)
                probes.append((now - start, ok))
                next_probe = max(next_probe + args.probe_every, time.monotonic())
            time.sleep(max(min(next_wave, next_probe) - time.monotonic(), 0))
        answers = answered(flooded)
    finally:
        for sock in flooded:
            sock.close()
    return Outcome(probes, answers)


def main() -> None:
    """Print each server's availability side by side."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--wave", type=int, default=300)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--probe-every", type=float, default=0.1)
    parser.add_argument("--deadline", type=float, default=1.0)
    args = parser.parse_args()
    if not Path(IN_TFTPD).exists():
        raise SystemExit(f"{IN_TFTPD} is missing: apt-get install -y tftpd-hpa")
    servers: dict[str, Callable[[Path], AbstractContextManager[int]]] = {
        "tftpd-hpa": lambda root: tftpd_hpa(root, []),
        "photonkick": lambda root: photonkick(root, [], 1),
    }
    outcomes: dict[str, Outcome] = {}
    with tempfile.TemporaryDirectory(prefix="tftp-flood-") as tmp:
        root = Path(tmp) / "root"
        Path(tmp).chmod(0o755)
        make_tree(root, 1, 0)
        for name, start in servers.items():
            with start(root) as port:
                outcomes[name] = run(port, args)
            print(f"{name}: done", file=sys.stderr, flush=True)
    report(outcomes, args)


def report(outcomes: dict[str, Outcome], args: argparse.Namespace) -> None:
    """The side-by-side table."""
    print(
        f"{args.waves} waves of {args.wave} unacknowledged requests from {FLOODER} every "
        f"{args.every:g} s; {PROBER} fetches its config every {args.probe_every:g} s, "
        f"served within {args.deadline:g} s counts as available"
    )
    print(f"{'server':12} {'probes':>7} {'served':>7} {'available':>10} {'longest outage':>15}")
    for name, outcome in outcomes.items():
        served = sum(ok for _, ok in outcome.probes)
        print(
            f"{name:12} {len(outcome.probes):7} {served:7} {outcome.availability:9.1%} "
            f"{outcome.longest_outage:13.1f} s"
        )
    ours = outcomes["photonkick"].availability
    print(f"goal: photonkick >= {GOAL:.0%}: {'met' if ours >= GOAL else 'MISSED'}")
    print(
        "flood requests answered at least once: "
        + ", ".join(f"{name} {o.flood_answers}" for name, o in outcomes.items())
    )


if __name__ == "__main__":
    main()

"""The time-to-ready report, built from a timeline written under a fake clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes import FakeClock

from photonkick.server.fleet import HostRun
from photonkick.server.report import build_report, format_report, report_json
from photonkick.server.timeline import ALARM, Timeline


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def timeline(tmp_path: Path, clock: FakeClock) -> Iterator[Timeline]:
    timeline = Timeline(tmp_path / "timeline.db", clock.clock)
    yield timeline
    timeline.close()


def play(timeline: Timeline, clock: FakeClock, host: str, steps: list[tuple[float, str]]) -> None:
    """Record each (seconds later, kind) event of one host's build 1."""
    for seconds, kind in steps:
        clock.advance(seconds)
        timeline.record(host, 1, kind, "refused to 127.0.0.2" if kind == ALARM else "")


def six_hosts(timeline: Timeline, clock: FakeClock) -> list[HostRun]:
    """A ready PXE host, a ready guestinfo host with an alarm, a failed one, a timeout,
    a host that was still queued at a stop and one without an outcome."""
    started = clock.wall()
    play(
        timeline,
        clock,
        "web01",
        [(0.5, "vm_created"), (0.25, "vm_powered_on"), (3.0, "config"), (1.5, "kickstart")]
        + [(60.125, "installed"), (12.0, "firstboot"), (8.0, "ready")],
    )
    play(
        timeline,
        clock,
        "gi01",
        [(1.0, "vm_created"), (0.5, "vm_powered_on"), (40.0, ALARM), (2.0, "installed")]
        + [(20.0, "firstboot"), (4.0, "ready")],
    )
    play(timeline, clock, "web02", [(0.5, "vm_created"), (70.0, "failed")])
    play(timeline, clock, "iso01", [(0.5, "vm_created"), (1.0, "vm_powered_on")])
    return [
        HostRun("web01", 1, "ready", "ready", "", started),
        HostRun("gi01", 1, "ready", "ready", "", started),
        HostRun("web02", 1, "failed", "failed", "cannot pull nginx:1.27", started),
        HostRun("iso01", 1, "booting", "timeout", "no ready after 300 s", started),
        HostRun("db01", 0, "queued", "stopped", "", started),
        HostRun("db02", 0, "queued"),  # never finished: shown as unknown
    ]


def test_report_json_and_text_are_unchanged(
    timeline: Timeline, clock: FakeClock, golden: Callable[[str, str], None]
) -> None:
    """The goldens were written before the report became a dataclass: its JSON (the
    --report file) and its table stay byte for byte what they were."""
    report = build_report(six_hosts(timeline, clock), timeline)
    golden("report/up-report.json", report_json(report))
    golden("report/up-report.txt", format_report(report) + "\n")

"""`up`'s progress lines: package counts while a host installs, refreshed without a phase
change, and a line per change only on a plain stream."""

from __future__ import annotations

import io
import threading

from photonkick.server.fleet import HostRun
from photonkick.server.package_progress import PackageCount
from photonkick.server.progress import Progress, Ticker


def test_package_counts_show_while_installing_and_refresh_without_a_phase_change() -> None:
    counts = {"web01": PackageCount(3, 3 * 1024 * 1024, 120)}
    out = io.StringIO()

    def packages(run: HostRun) -> str | None:
        found = counts.get(run.name)
        return found.text() if found else None

    progress = Progress(["web01", "db01"], stream=out, extra=packages)
    installing = HostRun("web01", build=1, phase="repo")
    progress.update(installing)
    progress.update(HostRun("db01", build=1, phase="config"))
    progress.refresh()  # nothing changed: no new line
    counts["web01"] = PackageCount(40, 50 * 1024 * 1024, 120)
    progress.refresh()
    progress.update(HostRun("web01", build=1, phase="ready", outcome="ready"))
    lines = out.getvalue().splitlines()
    assert [line.split()[2:] for line in lines] == [
        ["repo", "packages", "3", "of", "120", "(3.0", "MiB)"],
        ["config"],
        ["repo", "packages", "40", "of", "120", "(50.0", "MiB)"],
        ["ready"],
    ]


def test_a_failing_count_never_breaks_the_progress_line() -> None:
    def broken(run: HostRun) -> str | None:
        raise OSError("database gone")

    out = io.StringIO()
    Progress(["web01"], stream=out, extra=broken).update(HostRun("web01", 1, "packages"))
    assert out.getvalue().split()[2:] == ["packages"]


def test_the_ticker_ticks_until_stopped() -> None:
    ticks = threading.Semaphore(0)
    ticker = Ticker(0.01, ticks.release)
    assert ticks.acquire(timeout=5) and ticks.acquire(timeout=5)
    ticker.stop()
    while ticks.acquire(timeout=0.05):
        pass  # a tick that was under way when stop() was called
    assert not ticks.acquire(timeout=0.1)

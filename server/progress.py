"""Live progress of `up` in the terminal: one line per host with its current phase."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from photonkick.server.fleet import HostRun

INSTALLING = frozenset(
    ("kickstart", "partitioning", "repo", "packages", "bootloader", "postinstall")
)
"""Phases in which the installer fetches RPMs, so a package count means something."""
Extra = Callable[[HostRun], str | None]
"""Extra text for a host's line (e.g. ``packages 120 of 310 (85.0 MiB)``), or None."""


class Progress:
    """Redraws a block of host lines on a terminal; prints one line per change elsewhere."""

    def __init__(
        self, names: list[str], stream: TextIO | None = None, extra: Extra | None = None
    ) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.names = names
        self.lines = {name: "queued" for name in names}
        self.start = time.monotonic()
        self.extra = extra
        self._runs: dict[str, HostRun] = {}
        self._shown: dict[str, str] = {}
        self._lock = threading.Lock()
        self._drawn = False
        self.width = max((len(n) for n in names), default=4)

    def update(self, run: HostRun) -> None:
        """Show a host's new phase."""
        elapsed = time.monotonic() - self.start
        state = run.outcome if run.outcome and run.outcome != run.phase else run.phase
        shown = str(state)
        if run.outcome and run.detail:
            shown += f": {run.detail}"
        more = self._extra(run)
        if more:
            shown += f"  {more}"
        text = f"{run.name:<{self.width}}  {elapsed:7.1f}s  {shown}"
        with self._lock:
            self._runs[run.name] = run
            if not self.tty and self._shown.get(run.name) == shown:
                return  # a plain stream gets a line per change only
            self._shown[run.name] = shown
            self.lines[run.name] = text
            if self.tty:
                self._redraw()
            else:
                print(text, file=self.stream, flush=True)

    def refresh(self) -> None:
        """Show again every installing host, with its extra text as it is now (called every
        few seconds while `up` follows the fleet: packages arrive without a phase change)."""
        with self._lock:
            installing = [r for r in self._runs.values() if self._installing(r)]
        for run in installing:
            self.update(run)

    def _extra(self, run: HostRun) -> str | None:
        if self.extra is None or not self._installing(run):
            return None
        try:
            return self.extra(run)
        except Exception:  # a progress line must never stop `up`
            return None

    @staticmethod
    def _installing(run: HostRun) -> bool:
        return run.outcome is None and run.phase in INSTALLING

    def _redraw(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{len(self.names)}F")
        for name in self.names:
            line = self.lines[name]
            if not line.startswith(name):
                line = f"{name:<{self.width}}  {line}"
            self.stream.write("\x1b[2K" + line + "\n")
        self.stream.flush()
        self._drawn = True


PROGRESS_REFRESH = 2.0
"""Seconds between refreshes of `up`'s progress lines (package counts change in between)."""


class Ticker:
    """Calls ``tick()`` every ``interval`` seconds on a daemon thread until ``stop()``."""

    def __init__(self, interval: float, tick: Callable[[], None]) -> None:
        self._interval = interval
        self._tick = tick
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            self._tick()

    def stop(self) -> None:
        """No more ticks after this returns (one running now is waited for briefly)."""
        self._stopped.set()
        self._thread.join(self._interval)


WAITRESS_QUEUE_LOGGER = "waitress.queue"
QUEUE_WARNING_INTERVAL = 60.0


class RepeatLimit(logging.Filter):
    """Lets a logger's records through at most once per ``interval`` seconds and says how
    many were held back since the last one."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self._clock = time.monotonic
        self._last: float | None = None
        self._held = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        with self._lock:
            if self._last is not None and now - self._last < self.interval:
                self._held += 1
                return False
            if self._held:
                record.msg = f"{record.msg} ({self._held} more like it held back)"
            self._last, self._held = now, 0
        return True


def quiet_waitress_queue(interval: float = QUEUE_WARNING_INTERVAL) -> None:
    """Keep waitress's "Task queue depth" warnings from flooding the progress display:
    one per ``interval`` seconds at most (idempotent)."""
    logger = logging.getLogger(WAITRESS_QUEUE_LOGGER)
    if not any(isinstance(f, RepeatLimit) for f in logger.filters):
        logger.addFilter(RepeatLimit(interval))

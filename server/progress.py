"""Live progress of `up` in the terminal: one line per host with its current phase."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

from photonkick.server.fleet import HostRun


class Progress:
    """Redraws a block of host lines on a terminal; prints one line per change elsewhere."""

    def __init__(self, names: list[str], stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.names = names
        self.lines = {name: "queued" for name in names}
        self.start = time.monotonic()
        self._lock = threading.Lock()
        self._drawn = False
        self.width = max((len(n) for n in names), default=4)

    def update(self, run: HostRun) -> None:
        """Show a host's new phase."""
        elapsed = time.monotonic() - self.start
        state = run.outcome if run.outcome and run.outcome != run.phase else run.phase
        text = f"{run.name:<{self.width}}  {elapsed:7.1f}s  {state}"
        if run.outcome and run.detail:
            text += f": {run.detail}"
        with self._lock:
            self.lines[run.name] = text
            if self.tty:
                self._redraw()
            else:
                print(text, file=self.stream, flush=True)

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

"""Live progress of `up` in the terminal: one line per host with its current phase."""

from __future__ import annotations

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

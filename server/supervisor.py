"""A child process kept running: started and checked ready, its output read line by line,
restarted with a back-off when it dies, restarted on request, stopped with its parent.

The child runs under a tether (tether.py) holding a pipe only this process writes to: when
this process ends, by any means, the pipe breaks and the tether stops the child within a
second, even a child that dropped root (which loses the kernel's parent-death signal).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from photonkick.server.fd_wait import wait_for_fd

log = logging.getLogger("photonkick.server.supervisor")
TETHER = [sys.executable, "-m", "photonkick.server.tether"]
IDLE = 0.2
"""Seconds of quiet output after which ``on_idle`` is called."""
FIRST_DELAY = 1.0
MAX_DELAY = 30.0
STABLE = 60.0
"""A child that ran this long before dying is restarted after FIRST_DELAY again."""


class ChildFailed(Exception):
    """The child exited before it said it was ready; carries its last output lines."""

    def __init__(self, status: int | None, lines: list[str]) -> None:
        self.status = status
        self.lines = lines
        super().__init__(lines[-1] if lines else f"exit status {status}")


class Supervisor:
    """Runs ``argv`` in the foreground, passing each output line to ``on_line``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        on_line: Callable[[str], None],
        on_idle: Callable[[], None],
        ready: Callable[[str], bool],
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.on_line = on_line
        self.on_idle = on_idle
        self.ready = ready
        self.restarts = 0
        """How many times the child was started again after dying or on request."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._lifelines: dict[int, int] = {}
        """The write end of each running tether's lifeline, by the tether's pid."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._restart_asked = False
        self._thread: threading.Thread | None = None
        self._pending = b""
        self._last: list[str] = []

    @property
    def pid(self) -> int | None:
        """The process id of the running child's tether (the child is its only child)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self, timeout: float = 10.0) -> None:
        """Start the child and wait until a line passes ``ready``; ChildFailed if it exits
        first, TimeoutError (child stopped) if it says nothing in time."""
        proc = self._spawn()
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            got = self._read(proc, max(0.0, deadline - time.monotonic()))
            if got is None:
                raise ChildFailed(self._reap(proc), lines[-5:])
            lines += got
            if any(self.ready(line) for line in got):
                break
            if time.monotonic() >= deadline:
                self._terminate(proc)
                self._reap(proc)
                raise TimeoutError(f"{self.name} did not start within {timeout:.0f} s")
        self._thread = threading.Thread(target=self._watch, name=self.name, daemon=True)
        self._thread.start()

    def restart(self) -> None:
        """Stop the child; the watcher starts it again at once (with its new config)."""
        with self._lock:
            proc = self._proc
            self._restart_asked = True
        if proc is not None:
            self._terminate(proc)

    def stop(self, grace: float = 5.0) -> None:
        """Stop the child for good and wait for the watcher."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            self._terminate(proc, grace)
        if self._thread is not None:
            self._thread.join(grace + 1)

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._pending = b""
        self._last = []
        lifeline, ours = os.pipe()
        try:
            proc = subprocess.Popen(
                [*TETHER, *self.argv],
                stdin=lifeline,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # A Ctrl-C at serve's terminal is serve's to handle, and a kill of serve's
                # process group must leave the tether to stop the child.
                start_new_session=True,
            )
        except BaseException:
            os.close(ours)
            raise
        finally:
            os.close(lifeline)
        with self._lock:
            self._proc = proc
            self._lifelines[proc.pid] = ours
        return proc

    def _read(self, proc: subprocess.Popen[bytes], wait: float) -> list[str] | None:
        """Lines that arrived within ``wait`` seconds (each passed to on_line); None at EOF."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        if not wait_for_fd(fd, select.POLLIN, wait):
            self.on_idle()
            return []
        chunk = os.read(fd, 65536)
        if not chunk:
            if self._pending:
                self._emit([self._pending])
            return None
        *whole, self._pending = (self._pending + chunk).split(b"\n")
        return self._emit(whole)

    def _emit(self, raw: list[bytes]) -> list[str]:
        lines = [r.decode("utf-8", "replace").rstrip("\r") for r in raw]
        self._last = (self._last + [line for line in lines if line.strip()])[-3:]
        for line in lines:
            try:
                self.on_line(line)
            except Exception:  # one bad line must not end the supervision
                log.exception("%s: cannot handle output line %r", self.name, line[:200])
        return lines

    def _watch(self) -> None:
        delay = FIRST_DELAY
        while True:
            proc = self._proc
            started = time.monotonic()
            if proc is not None:
                while self._read(proc, IDLE) is not None:
                    if _ended(proc):  # the tether was killed alone; its child holds the pipe
                        _kill_group(proc)
                status: int | None = self._reap(proc)
            else:
                status = None
            self.on_idle()
            if self._stopping.is_set():
                return
            with self._lock:
                asked, self._restart_asked = self._restart_asked, False
            if not asked:
                if time.monotonic() - started > STABLE:
                    delay = FIRST_DELAY
                said = f"; it last said: {self._last[-1]}" if self._last else ""
                log.error(
                    "%s exited (status %s); restarting in %g s%s", self.name, status, delay, said
                )
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, MAX_DELAY)
            self.restarts += 1
            try:
                self._spawn()
            except OSError as exc:
                log.error("%s cannot be started: %s", self.name, exc)
                with self._lock:
                    self._proc = None

    def _terminate(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM the tether (it passes it on and ends with the child); SIGKILL its whole
        process group after ``grace`` seconds."""
        if not _ended(proc):
            proc.terminate()
            deadline = time.monotonic() + grace
            while not _ended(proc) and time.monotonic() < deadline:
                time.sleep(0.02)
        _kill_group(proc)

    def _reap(self, proc: subprocess.Popen[bytes]) -> int:
        """Wait for the tether, close our ends of its pipes; its exit status."""
        status = proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        with self._lock:
            ours = self._lifelines.pop(proc.pid, None)
        if ours is not None:
            os.close(ours)
        return status


def _ended(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the tether has ended; it is not reaped, so its pid names its group still."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped by another thread
        return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of the tether's process group (it leads a session of its own)."""
    if proc.returncode is not None:
        return  # reaped: the number may be another process's by now
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

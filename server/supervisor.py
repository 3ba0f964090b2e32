"""A child process kept running: started and checked ready, its output read line by line,
restarted with a back-off when it dies, restarted on request, stopped with its parent."""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

from photonkick.server.fd_wait import wait_for_fd

log = logging.getLogger("photonkick.server.supervisor")
PR_SET_PDEATHSIG = 1
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


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the thread that started it ends (a killed parent).

    The kernel forgets this when the child changes its user (as dnsmasq does after it
    started); such a child needs its own way back (see dhcp_site.stop_leftover)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


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
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._restart_asked = False
        self._thread: threading.Thread | None = None
        self._pending = b""
        self._last: list[str] = []

    @property
    def pid(self) -> int | None:
        """The running child's process id."""
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
                status = proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
                raise ChildFailed(status, lines[-5:])
            lines += got
            if any(self.ready(line) for line in got):
                break
            if time.monotonic() >= deadline:
                self._terminate(proc)
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
        proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C at serve's terminal is serve's to handle
            preexec_fn=_die_with_parent,
        )
        with self._lock:
            self._proc = proc
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
                    pass
                status: int | None = proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
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
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

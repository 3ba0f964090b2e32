"""The child-process supervisor with real children (small Python scripts)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from photonkick.server import supervisor
from photonkick.server.supervisor import ChildFailed, Supervisor


def child(script: str) -> list[str]:
    return [sys.executable, "-c", script]


def wait(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Lines:
    """Collects output lines (from the supervisor's thread) and idle calls."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.idle = 0
        self.lock = threading.Lock()

    def line(self, text: str) -> None:
        with self.lock:
            self.lines.append(text)

    def on_idle(self) -> None:
        self.idle += 1


def test_start_waits_for_ready_and_stop_ends_the_child() -> None:
    out = Lines()
    sup = Supervisor(
        "c", child("print('hello'); print('ready', flush=True); import time; time.sleep(60)"),
        out.line, out.on_idle, lambda line: line == "ready",
    )  # fmt: skip
    sup.start()
    pid = sup.pid
    assert out.lines == ["hello", "ready"] and pid is not None
    sup.stop()
    assert sup.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_child_that_dies_before_ready_is_a_failure_with_its_words() -> None:
    out = Lines()
    sup = Supervisor(
        "c", child("print('one'); print('cannot bind: in use'); raise SystemExit(2)"),
        out.line, out.on_idle, lambda line: line == "ready",
    )  # fmt: skip
    with pytest.raises(ChildFailed) as info:
        sup.start()
    assert (info.value.status, info.value.lines) == (2, ["one", "cannot bind: in use"])
    assert str(info.value) == "cannot bind: in use"


def test_a_silent_child_times_out_and_is_stopped() -> None:
    out = Lines()
    sup = Supervisor("c", child("import time; time.sleep(60)"), out.line, out.on_idle, bool)
    with pytest.raises(TimeoutError, match="c did not start within 1 s"):
        sup.start(timeout=1.0)
    assert sup.pid is None


def test_a_dying_child_is_restarted_with_a_growing_delay(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervisor, "FIRST_DELAY", 0.1)
    monkeypatch.setattr(supervisor, "MAX_DELAY", 0.4)
    out = Lines()
    script = "print('ready', flush=True); print('bye', flush=True); raise SystemExit(3)"
    sup = Supervisor("c", child(script), out.line, out.on_idle, lambda line: line == "ready")
    with caplog.at_level(logging.ERROR, "photonkick.server.supervisor"):
        sup.start()
        wait(lambda: sup.restarts >= 4)
        sup.stop()
    delays = [r.getMessage() for r in caplog.records][:4]
    assert delays == [
        f"c exited (status 3); restarting in {d} s; it last said: bye" for d in (0.1, 0.2, 0.4, 0.4)
    ]
    assert out.lines.count("ready") >= 4


def test_restart_on_request_is_immediate_and_not_logged_as_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = Lines()
    script = "import os, time; print('ready', os.getpid(), flush=True); time.sleep(60)"
    sup = Supervisor("c", child(script), out.line, out.on_idle, lambda s: s.startswith("ready"))
    with caplog.at_level(logging.ERROR, "photonkick.server.supervisor"):
        sup.start()
        first = sup.pid
        started = time.monotonic()
        sup.restart()
        wait(lambda: sup.pid not in (None, first) and len(out.lines) == 2)
        assert time.monotonic() - started < supervisor.FIRST_DELAY
        sup.stop()
    assert out.lines[0] != out.lines[1]  # "ready <pid>" of another process
    assert caplog.records == []


def test_killed_child_is_noticed(caplog: pytest.LogCaptureFixture) -> None:
    out = Lines()
    script = "print('ready', flush=True); import time; time.sleep(60)"
    sup = Supervisor("c", child(script), out.line, out.on_idle, lambda line: line == "ready")
    with caplog.at_level(logging.ERROR, "photonkick.server.supervisor"):
        sup.start()
        pid = sup.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait(lambda: any("status -9" in r.getMessage() for r in caplog.records))
        sup.stop()
    assert "c exited (status -9); restarting in 1 s" in caplog.records[0].getMessage()


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie waiting for its reaper counts as ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


# Like dnsmasq: says ready, then gives up root (which makes the kernel forget the signal it
# was to get when its parent dies), then runs on quietly.
DROPS_ROOT = (
    "import os, time; print('ready', os.getpid(), flush=True)\n"
    "if os.geteuid() == 0: os.setgid(65534); os.setuid(65534)\n"
    "time.sleep(60)"
)
# A process that supervises DROPS_ROOT and prints what it says.
HOST = f"""
import sys, time
from photonkick.server.supervisor import Supervisor
child = [sys.executable, "-c", {DROPS_ROOT!r}]
sup = Supervisor("c", child, lambda line: print(line, flush=True), lambda: None,
                 lambda line: line.startswith("ready"))
sup.start()
time.sleep(60)
"""


@pytest.mark.parametrize("kill", ["process", "group"])
def test_the_child_ends_with_a_killed_parent_even_after_dropping_root(kill: str) -> None:
    host = subprocess.Popen(
        [sys.executable, "-c", HOST], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert host.stdout is not None
        said = host.stdout.readline().split()
        assert said[0] == "ready", said
        pid = int(said[1])
        wait(lambda: os.geteuid() != 0 or Path(f"/proc/{pid}").stat().st_uid == 65534)
        if kill == "process":
            os.kill(host.pid, signal.SIGKILL)
        else:  # what a test harness or a service manager does to serve's process group
            os.killpg(host.pid, signal.SIGKILL)
        host.wait(5)
        killed = time.monotonic()
        wait(lambda: _gone(pid), timeout=5)
        assert time.monotonic() - killed < 2
    finally:
        host.kill()
        host.wait()


def test_a_tether_killed_alone_takes_its_child_along(caplog: pytest.LogCaptureFixture) -> None:
    out = Lines()
    script = "import os, time; print('ready', os.getpid(), flush=True); time.sleep(60)"
    sup = Supervisor("c", child(script), out.line, out.on_idle, lambda s: s.startswith("ready"))
    with caplog.at_level(logging.ERROR, "photonkick.server.supervisor"):
        sup.start()
        tether, pid = sup.pid, int(out.lines[0].split()[1])
        assert tether is not None and tether != pid
        os.kill(tether, signal.SIGKILL)
        wait(lambda: _gone(pid), timeout=2)
        wait(lambda: len(out.lines) == 2)
        sup.stop()
    assert "c exited (status -9); restarting in 1 s" in caplog.records[0].getMessage()


def test_stop_kills_a_child_that_ignores_sigterm_after_the_grace() -> None:
    out = Lines()
    script = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', os.getpid(), flush=True); time.sleep(60)"
    )
    sup = Supervisor("c", child(script), out.line, out.on_idle, lambda s: s.startswith("ready"))
    sup.start()
    pid = int(out.lines[0].split()[1])
    started = time.monotonic()
    sup.stop(grace=0.5)
    assert 0.5 <= time.monotonic() - started < 3
    assert _gone(pid) and sup.pid is None


def test_the_child_exit_status_and_signal_come_through_the_tether() -> None:
    out = Lines()
    for script, status in (("raise SystemExit(7)", 7), ("import os; os.kill(os.getpid(), 9)", -9)):
        sup = Supervisor("c", child(script), out.line, out.on_idle, bool)
        with pytest.raises(ChildFailed) as info:
            sup.start()
        assert info.value.status == status


def test_a_program_that_cannot_be_started_is_a_failure_with_the_reason() -> None:
    out = Lines()
    sup = Supervisor("c", ["/nonexistent/prog"], out.line, out.on_idle, lambda s: s == "ready")
    with pytest.raises(ChildFailed) as info:
        sup.start()
    why = "cannot start /nonexistent/prog: No such file or directory"
    assert (info.value.status, str(info.value)) == (127, why)

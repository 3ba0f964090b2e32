"""The state store and the timeline under many threads and two processes, and the rules a
callback follows within one build (the phase only moves forward, a replay is stored once).

Every test that touches a store runs against both backends: SQLite files in the state
directory and a real PostgreSQL (a throwaway cluster, see pg_fixture).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from photonkick.server.state_dir import StateDir
from photonkick.server.store_pg import WRITE_LOCK
from photonkick.server.timeline import (
    FAILED,
    LATE_FAILURE,
    REARMED,
    Event,
    StoreUnavailable,
    Timeline,
    callback_effect,
    phase_offsets,
)

THREADS = 16
ROUNDS = 200
OPEN_STATE = (
    "import sys\nfrom pathlib import Path\nfrom photonkick.server.state_dir import StateDir\n"
    "s = StateDir(Path(sys.argv[1]), sys.argv[2] or None)\n"
)


class Backend:
    """Opens the state and the timeline of one test, in SQLite or in PostgreSQL."""

    def __init__(self, folder: Path, url: str | None) -> None:
        self.folder = folder
        self.url = url
        self._opened: list[StateDir] = []

    def state(self) -> StateDir:
        state = StateDir(self.folder, self.url)
        self._opened.append(state)
        return state

    def timeline(self) -> Timeline:
        """A timeline of its own (its own connections), as another process would have."""
        return Timeline(self.state().store("timeline"))

    def args(self) -> list[str]:
        """The state's command-line arguments for OPEN_STATE."""
        return [str(self.folder), self.url or ""]

    @contextmanager
    def write_locked(self) -> Iterator[None]:
        """Another connection holds the store's write lock until the block ends."""
        if self.url is None:
            locker = sqlite3.connect(self.folder / "timeline.db", isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as locker:
            locker.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
            yield

    def close(self) -> None:
        for state in self._opened:
            state.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The state in the state directory's SQLite, or in a fresh PostgreSQL database."""
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
    opened = Backend(tmp_path, url)
    yield opened
    opened.close()


def run_threads(work: Callable[[int], None], threads: int = THREADS) -> list[BaseException]:
    """Run ``work(i)`` in ``threads`` threads released at once; the exceptions they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def body(i: int) -> None:
        start.wait()
        try:
            work(i)
        except BaseException as exc:  # every failure counts, whatever its type
            errors.append(exc)

    pool = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(120)
    return errors


def test_next_build_from_16_threads_loses_nothing(backend: Backend) -> None:
    state = backend.state()
    seen: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        for _ in range(ROUNDS):
            started = state.next_build("web01").build
            assert state.build("web01").build >= started
            assert state.build(f"other{i}").build == 1
            with lock:
                seen.append(started)

    errors = run_threads(work)
    assert errors == []
    total = THREADS * ROUNDS
    assert state.build("web01").build == 1 + total
    # Each call started a build of its own: no two callers were handed the same number.
    assert sorted(seen) == list(range(2, 2 + total))


def test_next_build_from_two_processes_loses_nothing(backend: Backend) -> None:
    script = OPEN_STATE + "for _ in range(200): s.next_build('web01')\n"
    backend.state()
    procs = [
        subprocess.Popen([sys.executable, "-c", script, *backend.args()], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert backend.state().build("web01").build == 1 + 2 * 200


def test_version_changes_with_a_commit_by_another_connection(backend: Backend) -> None:
    state = backend.state()
    wait_listening(state)
    before = state.version()
    assert state.version() == before
    other = backend.state()
    other.next_build("web01")
    assert wait_for_change(state, before)


def wait_listening(state: StateDir) -> None:
    """Until a shared store's version stays put (it listens for changes); at once for SQLite."""
    deadline = time.monotonic() + 10
    while state.version() != state.version():
        assert time.monotonic() < deadline, "the store never started listening"
        time.sleep(0.02)


def wait_for_change(state: StateDir, before: tuple[int, int], timeout: float = 1.0) -> bool:
    """Whether ``state.version()`` moves on from ``before`` within ``timeout`` seconds (a
    notification takes milliseconds to arrive; a SQLite commit is seen at once)."""
    deadline = time.monotonic() + timeout
    while state.version() == before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_timeline_from_16_threads(backend: Backend) -> None:
    """Fetch events, callbacks, rearms and every read at once: no error, nothing lost."""
    timeline = backend.timeline()

    def work(i: int) -> None:
        host = f"h{i:02d}"
        for n in range(ROUNDS):
            timeline.record(host, 1, "config", f"fetch {n}", "192.0.2.1")
            timeline.bind_ip(host, f"192.0.2.{i}")
            timeline.record_once("shared", 1, "repo", f"from {host}")
            if n % 20 == 0:
                timeline.rearm(host, 1)
                assert timeline.record_callback(host, 1, "installed") is not None
                assert timeline.is_disarmed(host, 1)
                assert timeline.record_callback(host, 1, "installed") is None
            timeline.events(host, 1)
            timeline.events("shared")
            timeline.boot_ips()
            timeline.version()

    errors = run_threads(work)
    assert errors == []
    timeline.close()

    reopened = backend.timeline()
    for i in range(THREADS):
        kinds = [e.kind for e in reopened.events(f"h{i:02d}", 1)]
        assert kinds.count("config") == ROUNDS
        assert kinds.count(REARMED) == ROUNDS // 20
        assert kinds.count("installed") == ROUNDS // 20  # once per attempt, replays not stored
        assert reopened.is_disarmed(f"h{i:02d}", 1)
    assert [e.kind for e in reopened.events("shared")] == ["repo"]
    assert reopened.boot_ips() == {f"h{i:02d}": f"192.0.2.{i}" for i in range(THREADS)}
    reopened.close()


def test_one_replayed_callback_from_16_threads_is_stored_once(backend: Backend) -> None:
    timeline = backend.timeline()
    stored: list[Event] = []

    def work(i: int) -> None:
        event = timeline.record_callback("web01", 1, "installed", "", f"192.0.2.{i}")
        if event is not None:
            stored.append(event)

    assert run_threads(work) == []
    assert len(stored) == 1
    assert [e.kind for e in timeline.events("web01")] == ["installed"]
    timeline.close()


def test_reads_see_pending_events_without_writing(backend: Backend) -> None:
    """Another process holds the write lock: records wait in memory, reads still see them,
    and they are stored once the lock is gone."""
    timeline = backend.timeline()
    with backend.write_locked():
        timeline.record("web01", 1, "config", "pxelinux config", "192.0.2.9")
        timeline.bind_ip("web01", "192.0.2.9")
        assert [e.kind for e in timeline.events("web01", 1)] == ["config"]
        assert timeline.boot_ips() == {"web01": "192.0.2.9"}
        with pytest.raises(StoreUnavailable):
            timeline.flush()
    timeline.flush()
    fresh = backend.timeline()
    assert [e.kind for e in fresh.events("web01", 1)] == ["config"]
    assert fresh.boot_ips() == {"web01": "192.0.2.9"}
    fresh.close()
    timeline.close()


def test_a_late_recorded_event_is_listed_when_it_happened(backend: Backend) -> None:
    """A DHCP packet recorded after the loader's fetch it led to (its log transaction ended
    later) is listed, stored or pending, before that fetch, and the build starts with it."""
    timeline = backend.timeline()
    timeline.record("web01", 1, "config", "ipxe config", "192.0.2.9")
    timeline.record("web01", 1, "dhcp", "DHCPACK 192.0.2.9", "192.0.2.9", ago=0.5)
    assert [e.kind for e in timeline.events("web01", 1)] == ["dhcp", "config"]
    timeline.flush()
    fresh = backend.timeline()
    events = fresh.events("web01", 1)
    assert [e.kind for e in events] == ["dhcp", "config"]
    offsets = phase_offsets(events)
    assert offsets["dhcp"] == 0 and offsets["config"] == pytest.approx(0.5, abs=0.2)
    fresh.close()
    timeline.close()


def _events(*kinds: str, detail: str = "") -> list[Event]:
    return [
        Event("web01", 1, k, detail, "", float(i), float(i), "run") for i, k in enumerate(kinds)
    ]


@pytest.mark.parametrize(
    ("before", "kind", "detail", "disarmed", "effect"),
    [
        ((), "installed", "", False, ("installed", True)),
        (("config", "kickstart"), FAILED, "line 9", False, (FAILED, True)),
        (("installed",), "installed", "", True, (None, False)),
        (("installed", "firstboot"), "installed", "", True, (None, False)),
        (("installed", "ready"), "firstboot", "", True, (None, False)),
        (("installed",), FAILED, "pull failed", True, (FAILED, False)),
        (("installed", "ready"), FAILED, "late", True, (LATE_FAILURE, False)),
        (("installed", "firstboot"), "ready", "", True, ("ready", False)),
    ],
)
def test_callback_effect(
    before: tuple[str, ...],
    kind: str,
    detail: str,
    disarmed: bool,
    effect: tuple[str | None, bool],
) -> None:
    assert callback_effect(_events(*before), kind, detail, disarmed=disarmed) == effect


def test_callback_replays_and_late_failures(backend: Backend) -> None:
    timeline = backend.timeline()
    assert timeline.record_callback("web01", 1, FAILED, "line 9 (useradd)") is not None
    assert timeline.record_callback("web01", 1, FAILED, "line 9 (useradd)") is None
    assert timeline.is_disarmed("web01", 1)
    timeline.rearm("web01", 1)
    assert not timeline.is_disarmed("web01", 1)
    for kind in ("installed", "installed", "firstboot", "ready", "installed", "firstboot"):
        timeline.record_callback("web01", 1, kind)
    late = timeline.record_callback("web01", 1, FAILED, "late")
    assert late is not None and late.kind == LATE_FAILURE
    assert timeline.record_callback("web01", 1, FAILED, "late") is None
    kinds = [e.kind for e in timeline.events("web01", 1)]
    assert kinds == [FAILED, REARMED, "installed", "firstboot", "ready", LATE_FAILURE]
    timeline.close()


def test_every_thread_sees_a_commit_by_another_process(backend: Backend) -> None:
    state = backend.state()
    wait_listening(state)
    seen_before: dict[int, tuple[int, int]] = {}
    committed = threading.Event()
    ready = threading.Barrier(THREADS + 1)
    changed: list[bool] = []

    def work(i: int) -> None:
        seen_before[i] = state.version()
        ready.wait()
        committed.wait(30)
        changed.append(wait_for_change(state, seen_before[i]))

    pool = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in pool:
        thread.start()
    ready.wait()
    script = OPEN_STATE + "s.next_build('web01')\n"
    subprocess.run([sys.executable, "-c", script, *backend.args()], check=True, timeout=60)
    committed.set()
    for thread in pool:
        thread.join(30)
    assert changed == [True] * THREADS

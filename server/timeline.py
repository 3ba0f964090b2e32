"""Per-host timelines and netboot-once state, persisted in the state directory's SQLite.

Every event has a wall-clock time and a monotonic time from the process that recorded it;
durations use the monotonic clock when both events come from the same run.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("photonkick.server.timeline")

PHASES = (
    "vm_created",
    "config",
    "kernel",
    "initrd",
    "kickstart",
    "repo",
    "installed",
    "local_boot",
    "firstboot",
    "ready",
)
"""The phases of one install, in the order they happen."""
FAILED = "failed"
ALARM = "alarm"
"""A refused secrets fetch: someone else may hold the build's secrets."""
REARMED = "rearmed"
WRITE_DELAY = 0.05
"""Seconds the writer waits to batch events into one transaction."""
START_PHASES = ("vm_created", "config", "kernel", "initrd")
"""Time to ready counts from the first of these (VM created, else the first boot-file fetch)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host TEXT NOT NULL, build INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
    client TEXT NOT NULL, wall REAL NOT NULL, mono REAL NOT NULL, run TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_host ON events (host, build);
CREATE TABLE IF NOT EXISTS netboot (
    host TEXT PRIMARY KEY, installed_build INTEGER, boot_ip TEXT
);
"""


@dataclass(frozen=True)
class Event:
    """One thing that happened to a host."""

    host: str
    build: int
    kind: str
    detail: str
    client: str
    wall: float
    mono: float
    run: str


@dataclass(frozen=True)
class Clock:
    """Wall and monotonic time, injectable for tests."""

    wall: Callable[[], float] = time.time
    mono: Callable[[], float] = time.monotonic


class Timeline:
    """Thread-safe event log and netboot-once flags for every host."""

    def __init__(self, database: Path, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.run = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()  # the write connection and the pending list
        self._read_lock = threading.Lock()
        self.changes = 0
        """Counts netboot-state changes made through this object, so caches can tell."""
        self._changed = threading.Condition()
        self._pending: list[Event] = []
        self._listeners: list[Callable[[Event], None]] = []
        self._db = sqlite3.connect(database, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL with NORMAL stays consistent on a crash; a power cut may lose the last events.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.commit()
        # Lookups on hot paths (netboot state, boot IPs) read through their own connection,
        # so a batch being committed never holds up a loader or installer request.
        self._read = sqlite3.connect(database, timeout=30, check_same_thread=False)
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="timeline", daemon=True)
        self._writer.start()

    def record(self, host: str, build: int, kind: str, detail: str = "", client: str = "") -> Event:
        """Append an event. It is written by a background thread within ``WRITE_DELAY``
        seconds, in order, and every read in this process sees it at once."""
        event = Event(
            host, build, kind, detail, client, self.clock.wall(), self.clock.mono(), self.run
        )
        if self._closing.is_set():
            log.warning("timeline closed: %s %s for %s not recorded", kind, detail[:80], host)
            return event
        with self._lock:
            self._pending.append(event)
        self._wake.set()
        with self._changed:
            self._changed.notify_all()
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a listener must never break recording
                log.exception("timeline listener failed on %s of %s", kind, host)
        return event

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` for every event recorded from now on, on the recording
        thread: it must return at once (queue the work, never do it)."""
        self._listeners.append(listener)

    def flush(self) -> None:
        """Write the pending events now."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        rows = [
            (e.host, e.build, e.kind, e.detail, e.client, e.wall, e.mono, e.run)
            for e in self._pending
        ]
        with self._db:
            self._db.executemany(
                "INSERT INTO events (host, build, kind, detail, client, wall, mono, run) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        # Only once committed: a failed write keeps the events for the next try.
        del self._pending[: len(rows)]

    def _write_loop(self) -> None:
        while not self._closing.is_set():
            self._wake.wait()
            self._wake.clear()
            time.sleep(WRITE_DELAY)  # gather a burst of events into one transaction
            try:
                self.flush()
            except sqlite3.Error as exc:  # a busy database: keep the events, try again
                log.warning("timeline: cannot write %d events yet: %s", len(self._pending), exc)
                self._wake.set()
                time.sleep(0.5)

    def record_once(
        self, host: str, build: int, kind: str, detail: str = "", client: str = ""
    ) -> Event | None:
        """Append an event unless this build of the host already has one of that kind."""
        with self._lock:
            self._flush_locked()
            row = self._db.execute(
                "SELECT 1 FROM events WHERE host = ? AND build = ? AND kind = ? LIMIT 1",
                (host, build, kind),
            ).fetchone()
        return None if row else self.record(host, build, kind, detail, client)

    def events(self, host: str, build: int | None = None) -> list[Event]:
        """The host's events (of one build, or all), oldest first."""
        query = (
            "SELECT host, build, kind, detail, client, wall, mono, run FROM events WHERE host = ?"
        )
        args: tuple[object, ...] = (host,)
        if build is not None:
            query += " AND build = ?"
            args += (build,)
        with self._lock:
            self._flush_locked()
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [Event(*row) for row in rows]

    def wait_for(
        self,
        host: str,
        build: int,
        kinds: set[str],
        *,
        since: float,
        timeout: float,
        stop: threading.Event | None = None,
    ) -> Event | None:
        """The first event of one of ``kinds`` recorded at or after ``since`` (wall clock).

        Wakes at once for events recorded in this process and re-reads the database every
        half second for those another process (a separate `photonkick serve`) records.
        None on timeout or when ``stop`` is set.
        """
        deadline = self.clock.mono() + timeout
        while True:
            for event in self.events(host, build):
                if event.kind in kinds and event.wall >= since:
                    return event
            remaining = deadline - self.clock.mono()
            if remaining <= 0 or (stop is not None and stop.is_set()):
                return None
            with self._changed:
                self._changed.wait(min(remaining, 0.5))

    def is_disarmed(self, host: str, build: int) -> bool:
        """Whether this build's install ended (`installed`, or `failed` before it) and was not
        rearmed since: its network boot then answers "boot the local disk" (netboot-once)."""
        with self._read_lock:
            row = self._read.execute(
                "SELECT installed_build FROM netboot WHERE host = ?", (host,)
            ).fetchone()
        return bool(row and row[0] == build)

    def disarm(self, host: str, build: int) -> None:
        """From now on this host boots locally until rearmed."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO netboot (host, installed_build) VALUES (?, ?) "
                "ON CONFLICT(host) DO UPDATE SET installed_build = excluded.installed_build",
                (host, build),
            )
        self.changes += 1

    def rearm(self, host: str) -> None:
        """Offer the install again on the next network boot."""
        with self._lock, self._db:
            self._db.execute("UPDATE netboot SET installed_build = NULL WHERE host = ?", (host,))
        self.changes += 1

    def bind_ip(self, host: str, ip: str) -> None:
        """Remember the address that fetched the host's boot config."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO netboot (host, boot_ip) VALUES (?, ?) "
                "ON CONFLICT(host) DO UPDATE SET boot_ip = excluded.boot_ip",
                (host, ip),
            )
        self.changes += 1

    def boot_ips(self) -> dict[str, str]:
        """Every host's boot-config address, as remembered across restarts."""
        with self._lock:
            rows = self._db.execute(
                "SELECT host, boot_ip FROM netboot WHERE boot_ip IS NOT NULL"
            ).fetchall()
        return dict(rows)

    def close(self) -> None:
        """Write what is pending and close the database."""
        self._closing.set()
        self._wake.set()
        self._writer.join(5)
        with self._lock:
            self._flush_locked()
            self._db.close()
        with self._read_lock:
            self._read.close()


def duration(start: Event, end: Event) -> float:
    """Seconds between two events: monotonic within one run, wall clock across runs."""
    if start.run == end.run:
        return end.mono - start.mono
    return end.wall - start.wall


def phase_offsets(events: list[Event]) -> dict[str, float]:
    """Seconds from the start of the build to the first event of each phase."""
    firsts: dict[str, Event] = {}
    for event in events:
        firsts.setdefault(event.kind, event)
    start = next((firsts[k] for k in START_PHASES if k in firsts), None)
    if start is None:
        return {}
    return {kind: duration(start, ev) for kind, ev in firsts.items()}


def time_to_ready(events: list[Event]) -> float | None:
    """ready minus VM created, or minus the first boot-file fetch; None until ready."""
    return phase_offsets(events).get("ready")

"""How many RPMs each host's installer fetched from photonkick, and how many bytes.

Every package an installer downloads comes from photonkick's release tree (``repos=``), so
counting them needs nothing in the guest. The repo path only updates counters in memory; a
background thread writes them to ``<state>/packages.db`` (like fetch events), where `status`
and a restarted server read them. When a build reports ``installed`` its count becomes the
host's total, shown next to the count of the host's next install ("packages 120 of 310").
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from photonkick.server.timeline import REARMED, WRITE_TIMEOUT, Event

log = logging.getLogger("photonkick.server.packages")
DATABASE_FILE = "packages.db"
WRITE_EVERY = 0.5
"""Seconds between two writes of the counters that changed."""
MIB = 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counts (
    host TEXT NOT NULL, build INTEGER NOT NULL, count INTEGER NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (host, build)
);
CREATE TABLE IF NOT EXISTS totals (
    host TEXT PRIMARY KEY, count INTEGER NOT NULL, size INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class PackageCount:
    """RPMs fetched by one install, and the total of the host's last finished install."""

    count: int
    size: int
    total: int | None = None

    def text(self) -> str:
        """``packages N (M MiB)``, or ``packages N of T (M MiB)`` when a total is known."""
        of = f" of {self.total}" if self.total is not None else ""
        return f"packages {self.count}{of} ({self.size / MIB:.1f} MiB)"


@dataclass
class _Counter:
    count: int = 0
    size: int = 0
    names: set[str] | None = None


class PackageProgress:
    """Per-build RPM counters, thread-safe; written to SQLite in the background."""

    def __init__(self, database: Path) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], _Counter] = {}
        self._totals: dict[str, tuple[int, int]] = {}
        self._dirty: set[tuple[str, int]] = set()
        self._dirty_totals: set[str] = set()
        self._db = sqlite3.connect(
            database, timeout=WRITE_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        for host, build, count, size in self._db.execute("SELECT * FROM counts"):
            self._counts[(host, build)] = _Counter(count, size, None)
        for host, count, size in self._db.execute("SELECT * FROM totals"):
            self._totals[host] = (count, size)
        self._failing = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="packages", daemon=True)
        self._writer.start()

    def note(self, host: str, build: int, name: str, size: int) -> None:
        """One RPM fetched by the host's installer (a name fetched again counts once)."""
        key = (host, build)
        with self._lock:
            counter = self._counts.setdefault(key, _Counter())
            if counter.names is None:
                counter.names = set()
            if name in counter.names:
                return
            counter.names.add(name)
            counter.count += 1
            counter.size += size
            self._dirty.add(key)
        self._wake.set()

    def progress(self, host: str, build: int) -> PackageCount | None:
        """The build's count so far (None before its first RPM) with the host's last total."""
        with self._lock:
            counter = self._counts.get((host, build))
            total = self._totals.get(host)
        if counter is None or counter.count == 0:
            return None
        return PackageCount(counter.count, counter.size, total[0] if total else None)

    def on_event(self, event: Event) -> None:
        """Timeline listener: ``installed`` makes the count the host's total; a rearm starts
        the build's count over."""
        key = (event.host, event.build)
        with self._lock:
            if event.kind == "installed" and key in self._counts:
                counter = self._counts[key]
                self._totals[event.host] = (counter.count, counter.size)
                self._dirty_totals.add(event.host)
            elif event.kind == REARMED and key in self._counts:
                self._counts[key] = _Counter()
                self._dirty.add(key)
            else:
                return
        self._wake.set()

    def flush(self) -> None:
        """Write the counters that changed; sqlite3.Error when the database refuses."""
        with self._lock:
            counts = [
                (h, b, self._counts[(h, b)].count, self._counts[(h, b)].size)
                for h, b in self._dirty
            ]
            totals = [(h, *self._totals[h]) for h in self._dirty_totals]
            self._dirty.clear()
            self._dirty_totals.clear()
        if not counts and not totals:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO counts (host, build, count, size) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(host, build) DO UPDATE SET count = excluded.count, "
                "size = excluded.size",
                counts,
            )
            self._db.executemany(
                "INSERT INTO totals (host, count, size) VALUES (?, ?, ?) ON CONFLICT(host) "
                "DO UPDATE SET count = excluded.count, size = excluded.size",
                totals,
            )
            self._db.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            with self._lock:  # written at the next try
                self._dirty.update((h, b) for h, b, _, _ in counts)
                self._dirty_totals.update(h for h, _, _ in totals)
            raise

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            self._stop.wait(WRITE_EVERY)
            try:
                self.flush()
            except sqlite3.Error as exc:
                if not self._failing:
                    log.error("package counts not written (%s); retrying", exc)
                self._failing = True
                self._wake.set()
                continue
            self._failing = False

    def close(self) -> None:
        """Write what changed and close the database."""
        self._stop.set()
        self._wake.set()
        self._writer.join(5)
        try:
            self.flush()
        except sqlite3.Error as exc:
            log.error("package counts not written: %s", exc)
        self._db.close()


def stored_progress(state: Path, host: str, build: int) -> PackageCount | None:
    """What a (running or stopped) server wrote for the build, read from the state folder."""
    path = state / DATABASE_FILE
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=WRITE_TIMEOUT)
        try:
            row = db.execute(
                "SELECT count, size FROM counts WHERE host = ? AND build = ?", (host, build)
            ).fetchone()
            total = db.execute("SELECT count FROM totals WHERE host = ?", (host,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    if row is None or row[0] == 0:
        return None
    return PackageCount(row[0], row[1], total[0] if total else None)

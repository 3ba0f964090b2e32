"""SQLite for objects shared by threads: a connection per thread, and a change signal.

A sqlite3 connection must never be used by two threads at once. Each thread here gets its own
connection to the same file, opened on first use; SQLite's own locking then orders writers,
also across processes. SQLite's ``data_version`` tells cheaply whether any other connection,
of this process or another, committed since the last look.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

READ_TIMEOUT = 30.0
"""Seconds a read waits for a lock (in WAL mode readers are almost never blocked)."""


class ThreadConnections:
    """One connection per thread to one database file; ``close`` closes them all."""

    def __init__(
        self,
        path: Path,
        setup: Callable[[sqlite3.Connection], None] | None = None,
        timeout: float = READ_TIMEOUT,
    ) -> None:
        self.path = path
        self._setup = setup
        self._timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._closed = False

    def get(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            return db
        with self._lock:
            if self._closed:
                raise sqlite3.ProgrammingError(f"{self.path} is closed")
            # Closed from another thread by close(), never used by two threads at once.
            db = sqlite3.connect(self.path, timeout=self._timeout, check_same_thread=False)
            self._all.append(db)
        if self._setup is not None:
            self._setup(db)
        self._local.db = db
        return db

    def close(self) -> None:
        """Close every thread's connection; later use raises."""
        with self._lock:
            self._closed = True
            for db in self._all:
                db.close()
            self._all.clear()


class ChangeWatch:
    """Whether a database changed: ``version()`` differs after any other connection's commit.

    Each thread looks through a connection of its own (no lock to queue on); whichever
    thread notices a commit first moves the shared generation on for all.
    """

    def __init__(self, path: Path) -> None:
        self._connections = ThreadConnections(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._generation = 0

    def version(self) -> int:
        """A number that differs after any commit by another connection or process."""
        seen = self._connections.get().execute("PRAGMA data_version").fetchone()[0]
        if getattr(self._local, "seen", None) != seen:
            self._local.seen = seen
            with self._lock:
                self._generation += 1
        return self._generation

    def close(self) -> None:
        """Close the connections."""
        self._connections.close()


def check_writable(path: Path) -> None:
    """Raise sqlite3.Error (or OSError) unless the database takes writes. Busy (another
    process writing right now) counts as writable."""
    db = sqlite3.connect(path, timeout=2, isolation_level=None)
    try:
        # A read-only file opens without error, and in WAL mode even takes the write lock;
        # the first page written is what fails. Rolled back: nothing reaches the file.
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return
            raise
        try:
            db.execute("CREATE TABLE photonkick_write_check (x)")
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
    finally:
        db.close()

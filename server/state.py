"""The state directory: the token secret (0600) and per-host build numbers in SQLite."""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path

from photonkick.kickstarts.errors import PhotonkickError
from photonkick.kickstarts.kickstart import BuildInfo
from photonkick.server.files import read_or_create_secret
from photonkick.server.sqlite_threads import ChangeWatch, ThreadConnections, check_writable

SECRET_FILE = "secret"
DATABASE_FILE = "state.db"
TIMELINE_FILE = "timeline.db"
WRITE_PROBE = ".write-check"


class StateError(PhotonkickError):
    """The state directory cannot be opened or written; the message names it and why."""


class StateDir:
    """Opens (creating on first use) a state directory. Safe for several threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.secret = _read_or_create_secret(path / SECRET_FILE)
            self._connections = ThreadConnections(path / DATABASE_FILE)
            _create(self._connections.get())
            self._watch = ChangeWatch(path / DATABASE_FILE)
        except (OSError, sqlite3.Error) as exc:
            try:
                _probe_write(path)
            except OSError as probe:  # the usual cause, and the clearer reason
                reason = _reason(probe)
                raise StateError(f"the state directory {path} is not writable: {reason}") from exc
            raise StateError(f"cannot open the state directory {path}: {_reason(exc)}") from exc
        self.changes = 0
        """Counts the builds started through this object, so caches can tell."""

    def build(self, host: str) -> BuildInfo:
        """The host's current build (1 until it is rebuilt)."""
        db = self._connections.get()
        row = db.execute("SELECT build FROM builds WHERE host = ?", (host,)).fetchone()
        return BuildInfo(row[0] if row else 1, self.secret)

    def next_build(self, host: str) -> BuildInfo:
        """Start a new build of the host: the old token stops working."""
        db = self._connections.get()
        with db:
            rows = db.execute(
                "INSERT INTO builds (host, build) VALUES (?, 2) "
                "ON CONFLICT(host) DO UPDATE SET build = build + 1 RETURNING build",
                (host,),
            ).fetchall()
        self.changes += 1
        return BuildInfo(rows[0][0], self.secret)

    def version(self) -> tuple[int, int]:
        """Differs after any build change, by this process or another."""
        return self._watch.version(), self.changes

    def check_writable(self) -> None:
        """Raise StateError, naming the directory and the reason, unless files and both
        databases in it can be written."""
        try:
            _probe_write(self.path)
            for name in (DATABASE_FILE, TIMELINE_FILE):
                check_writable(self.path / name)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(
                f"the state directory {self.path} is not writable: {_reason(exc)}"
            ) from exc

    def close(self) -> None:
        """Close the database connections."""
        self._connections.close()
        self._watch.close()


def _create(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    with db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS builds (host TEXT PRIMARY KEY, build INTEGER NOT NULL)"
        )


def _probe_write(folder: Path) -> None:
    """Write, sync and remove a small file in ``folder``; OSError when that fails."""
    probe = folder / WRITE_PROBE
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"photonkick\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _read_or_create_secret(path: Path) -> bytes:
    return bytes.fromhex(read_or_create_secret(path, lambda: secrets.token_hex(32)))

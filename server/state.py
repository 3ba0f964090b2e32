"""The state directory: the token secret (0600) and per-host build numbers in SQLite."""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path

from photonkick.kickstarts.kickstart import BuildInfo

SECRET_FILE = "secret"
DATABASE_FILE = "state.db"


class StateDir:
    """Opens (creating on first use) a state directory. Safe for several processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.secret = _read_or_create_secret(path / SECRET_FILE)
        self.changes = 0
        """Counts the builds started through this object, so caches can tell."""
        self._db = sqlite3.connect(path / DATABASE_FILE, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS builds (host TEXT PRIMARY KEY, build INTEGER NOT NULL)"
        )
        self._db.commit()

    def build(self, host: str) -> BuildInfo:
        """The host's current build (1 until it is rebuilt)."""
        row = self._db.execute("SELECT build FROM builds WHERE host = ?", (host,)).fetchone()
        return BuildInfo(row[0] if row else 1, self.secret)

    def next_build(self, host: str) -> BuildInfo:
        """Start a new build of the host: the old token stops working."""
        with self._db:
            self._db.execute(
                "INSERT INTO builds (host, build) VALUES (?, 2) "
                "ON CONFLICT(host) DO UPDATE SET build = build + 1",
                (host,),
            )
        self.changes += 1
        return self.build(host)

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def _read_or_create_secret(path: Path) -> bytes:
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    value = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return bytes.fromhex(value)

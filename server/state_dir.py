"""The state: the token secret and per-host build numbers, in the state directory's SQLite
(the default) or in a PostgreSQL database shared by several servers."""

from __future__ import annotations

import os
from pathlib import Path

from photonkick.kickstarts.errors import PhotonkickError
from photonkick.kickstarts.kickstart import BuildInfo
from photonkick.server.last_known import FILE as LAST_KNOWN_FILE
from photonkick.server.last_known import LastKnown
from photonkick.server.store import SECRET_FILE as SECRET_FILE
from photonkick.server.store import (
    ChangeListener,
    SqliteBackend,
    StateBackend,
    Store,
    StoreUnavailable,
)

DATABASE_FILE = "state.db"
TIMELINE_FILE = "timeline.db"
WRITE_PROBE = ".write-check"
BUILD_TIMEOUT = 30.0
"""Seconds starting a build may wait for other writers (it is never on a boot request's path)."""
COMPONENTS = ("state", "timeline", "secrets", "install-log", "packages")
"""The stores of a backend: build numbers, timelines and netboot-once, the secrets ledger,
the installers' logs, the package counts."""


class StateError(PhotonkickError):
    """The state directory cannot be opened or written; the message names it and why."""


class StateDir:
    """Opens (creating on first use) a state directory. Safe for several threads and processes.

    ``url`` (``postgresql://...``) keeps everything several servers must agree on in that
    database instead of the directory's SQLite files; the directory still holds this
    machine's own files (loader cache, admin token, imported releases).

    ``wait=False`` (``photonkick serve``) opens a database that cannot be reached now anyway:
    ``start_error`` then says why, and every read and write raises StoreUnavailable until it
    answers (a schema newer than this photonkick is still refused here); what is read from it
    is then kept in ``last-known.json`` for a start without it.
    """

    def __init__(self, path: Path, url: str | None = None, *, wait: bool = True) -> None:
        self.path = path
        self.last_known: LastKnown | None = None
        """What was last read from a shared database (with ``wait=False`` only)."""
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.backend: StateBackend = (
                _postgresql_backend(url, wait) if url else SqliteBackend(path)
            )
            if self.backend.shared and not wait:
                self.last_known = LastKnown(path / LAST_KNOWN_FILE, self.backend.label)
                if self.backend.start_error is None:
                    self.last_known.remember_secret(self.backend.secret())
            self._store = self.backend.store("state")
        except (OSError, StoreUnavailable) as exc:
            if url:
                raise StateError(f"cannot open the state database: {_reason(exc)}") from exc
            try:
                _probe_write(path)
            except OSError as probe:  # the usual cause, and the clearer reason
                reason = _reason(probe)
                raise StateError(f"the state directory {path} is not writable: {reason}") from exc
            raise StateError(f"cannot open the state directory {path}: {_reason(exc)}") from exc
        self.changes = 0
        """Counts the builds started through this object, so caches can tell."""

    @property
    def start_error(self) -> str | None:
        """Why the shared database could not be used when this was opened (None: it could)."""
        return self.backend.start_error

    @property
    def secret(self) -> bytes:
        """The secret every token is derived from: the database's, else (while it has not
        been read since the start) the one this machine last read. Raises StoreUnavailable
        when there is neither."""
        try:
            secret = self.backend.secret()
        except StoreUnavailable:
            known = self.last_known.secret if self.last_known is not None else None
            if known is None:
                raise
            return known
        if self.last_known is not None:
            self.last_known.remember_secret(secret)
        return secret

    def store(self, name: str) -> Store:
        """The store of one of ``COMPONENTS`` (closed with this object)."""
        return self.backend.store(name)

    def on_change(self, listener: ChangeListener) -> None:
        """Call ``listener(host)`` when another server changes a host's build or netboot
        (shared stores only; it runs on the store's thread and must return at once)."""
        self.backend.on_change(listener)

    def build(self, host: str) -> BuildInfo:
        """The host's current build (1 until it is rebuilt). Raises StoreUnavailable."""
        rows = self._store.read("SELECT build FROM builds WHERE host = ?", (host,))
        return BuildInfo(rows[0][0] if rows else 1, self.secret)

    def next_build(self, host: str) -> BuildInfo:
        """Start a new build of the host: the old token stops working. Raises
        StoreUnavailable (no new build) when the database does not take the write."""
        with self._store.write(BUILD_TIMEOUT) as db:
            rows = db.execute(
                "INSERT INTO builds (host, build) VALUES (?, 2) "
                "ON CONFLICT(host) DO UPDATE SET build = builds.build + 1 RETURNING build",
                (host,),
            )
            db.notify(host)
        self.changes += 1
        return BuildInfo(rows[0][0], self.secret)

    def version(self) -> tuple[int, int]:
        """Differs after any build change, by this process or another."""
        return self._store.version(), self.changes

    def check_writable(self) -> None:
        """Raise StateError, naming the directory (or database) and the reason, unless files
        and every database of the state can be written."""
        try:
            _probe_write(self.path)
            for name in COMPONENTS:
                self.backend.store(name).check_writable()
        except (OSError, StoreUnavailable) as exc:
            raise StateError(
                f"the state directory {self.path} is not writable: {_reason(exc)}"
                if not self.backend.shared
                else f"the state database {self.backend.label} is not writable: {_reason(exc)}"
            ) from exc

    def close(self) -> None:
        """Close the database connections."""
        if self.last_known is not None:
            self.last_known.close()
        self.backend.close()


def _postgresql_backend(url: str, wait: bool) -> StateBackend:
    try:
        from photonkick.server.store_pg import PostgresBackend
    except ImportError as exc:
        raise StoreUnavailable(
            f"a postgresql:// state needs psycopg ({exc}): pip install 'photonkick[postgresql]'"
        ) from exc
    return PostgresBackend(url, wait=wait)


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
    if isinstance(exc, StoreUnavailable) and isinstance(exc.__cause__, OSError):
        exc = exc.__cause__
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)

"""The store behind StateDir, Timeline and SecretsLedger, and its embedded SQLite backend.

Everything several boot servers must agree on (the token secret, build numbers, netboot-once,
timelines, rearms, the secrets ledger and closed callbacks, the installers' logs and package
counts) goes through the two protocols here. ``StateBackend`` is one place of state: SQLite
files in the state directory (the default, nothing to install) or one PostgreSQL database
shared by several servers (``photonkick.server.store_pg``). Each of its ``Store`` objects
runs SQL in the subset both dialects share (``?`` placeholders, ``ON CONFLICT``,
``RETURNING``).
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from photonkick.kickstarts.errors import PhotonkickError
from photonkick.server.files import read_or_create_secret
from photonkick.server.sqlite_threads import ChangeWatch, ThreadConnections
from photonkick.server.sqlite_threads import check_writable as check_sqlite_writable
from photonkick.server.store_schema import SchemaTooNew, migrate_sqlite

Row = tuple[Any, ...]
SECRET_FILE = "secret"
WRITE_TIMEOUT = 2.0
"""Seconds a write waits for the database before giving up (a callback then answers 503)."""


class StoreUnavailable(PhotonkickError):
    """The database refused a read or a write; the caller answers 503 or uses what it knew
    (a command such as `up` reports it as the failure)."""


class Transaction(Protocol):
    """One write transaction: every statement commits together, or none does."""

    def execute(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        """Run one statement; its rows (empty for statements without RETURNING)."""

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        """Run one statement for each row of arguments."""

    def notify(self, host: str = "") -> None:
        """Tell every server sharing the store, on commit, that a host's build or netboot
        changed (every host: ``""``)."""


class Store(Protocol):
    """One database of a state backend, safe for any number of threads and processes."""

    name: str

    def read(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        """Rows of one query; never waits for a writer. Raises StoreUnavailable."""

    def write(self, timeout: float = WRITE_TIMEOUT) -> AbstractContextManager[Transaction]:
        """One write transaction, ordered after every other writer of the store (in every
        process), durable on disk when the block ends. Raises StoreUnavailable after about
        ``timeout`` seconds of waiting or on any database error; nothing is then changed."""

    def version(self) -> int:
        """A number that differs after any change another process or server notified."""

    def check_writable(self) -> None:
        """Raise StoreUnavailable unless the store takes writes now."""

    def close(self) -> None:
        """Release the store's connections."""


ChangeListener = Callable[[str], None]
"""Called with the host whose build or netboot another server changed (``""``: any host)."""


class StateBackend(Protocol):
    """Where the state lives: the token secret and the stores of each component."""

    label: str
    shared: bool
    """True when several servers share it (their caches are invalidated by notification)."""

    @property
    def start_error(self) -> str | None:
        """Why the state could not be used when it was opened (see ``StateDir``'s ``wait``)."""

    def secret(self) -> bytes:
        """The secret every token is derived from (created once, then never changed)."""

    def store(self, name: str) -> Store:
        """The store of one component: ``state``, ``timeline``, ``secrets``, ``install-log``
        or ``packages``."""

    def on_change(self, listener: ChangeListener) -> None:
        """Call ``listener(host)`` (on a thread of the backend's: it must return at once)
        for each change another server notifies; a backend of one machine never calls it."""

    def close(self) -> None:
        """Close every store opened through this backend."""


class SqliteStore:
    """One SQLite file: a connection per reading thread, one serialized write connection."""

    def __init__(self, path: Path, component: str) -> None:
        """``component``: whose schema the file holds (a key of ``SQLITE_MIGRATIONS``)."""
        self.name = path.name
        self.path = path
        self._write_lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                path, timeout=WRITE_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # Every commit reaches the disk before the call returns: an acknowledged change
            # survives a crash of the process and of the machine.
            self._db.execute("PRAGMA synchronous=FULL")
            migrate_sqlite(self._db, component)
        except (sqlite3.Error, SchemaTooNew) as exc:
            raise StoreUnavailable(f"{path.name}: {exc}") from exc
        self._reads = ThreadConnections(path)
        self._watch = ChangeWatch(path)

    def read(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        """Rows of one query through this thread's own connection."""
        try:
            return self._reads.get().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.name}: {exc}") from exc

    @contextmanager
    def write(self, timeout: float = WRITE_TIMEOUT) -> Iterator[Transaction]:
        """``BEGIN IMMEDIATE`` (other processes wait up to ``WRITE_TIMEOUT``) ... ``COMMIT``."""
        if not self._write_lock.acquire(timeout=timeout):
            raise StoreUnavailable(f"{self.name} is busy")
        try:
            db = self._db
            try:
                db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                db.execute("BEGIN IMMEDIATE")
                yield _SqliteTransaction(db)
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(db)
                raise StoreUnavailable(f"{self.name}: {exc}") from exc
            except BaseException:
                _rollback(db)
                raise
        finally:
            self._write_lock.release()

    def version(self) -> int:
        """Moves on after a commit by any other connection (``PRAGMA data_version``)."""
        try:
            return self._watch.version()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.name}: {exc}") from exc

    def check_writable(self) -> None:
        """Raise StoreUnavailable unless the file takes writes."""
        try:
            check_sqlite_writable(self.path)
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoreUnavailable(f"{self.name}: {reason}") from exc

    def close(self) -> None:
        """Close every connection."""
        with self._write_lock:
            self._db.close()
        self._reads.close()
        self._watch.close()


class _SqliteTransaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        return self._db.execute(sql, args).fetchall()

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self._db.executemany(sql, rows)

    def notify(self, host: str = "") -> None:
        """Nothing to do: ``PRAGMA data_version`` tells the other processes."""


def _rollback(db: sqlite3.Connection) -> None:
    """End a failed transaction; the error that failed it is the one to report."""
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
    except sqlite3.Error:
        pass


class SqliteBackend:
    """The embedded default: ``secret`` (0600) and one SQLite file per component."""

    shared = False
    start_error: str | None = None

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.label = str(folder)
        self._secret = _read_or_create_secret(folder / SECRET_FILE)
        self._lock = threading.Lock()
        self._stores: dict[str, SqliteStore] = {}

    def secret(self) -> bytes:
        """The secret in the state directory's ``secret`` file."""
        return self._secret

    def store(self, name: str) -> Store:
        """``<name>.db`` in the state directory, opened once."""
        with self._lock:
            if name not in self._stores:
                self._stores[name] = SqliteStore(self.folder / f"{name}.db", name)
            return self._stores[name]

    def on_change(self, listener: ChangeListener) -> None:
        """Nothing to listen to: the files are on this machine and outlive no server."""

    def close(self) -> None:
        """Close every store opened through the backend."""
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()


def _read_or_create_secret(path: Path) -> bytes:
    return bytes.fromhex(read_or_create_secret(path, new_secret))


def new_secret() -> str:
    """A fresh token secret, as hex."""
    return secrets.token_hex(32)

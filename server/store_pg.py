"""PostgreSQL as the state store several boot servers share (psycopg 3).

One database holds the token secret, build numbers, timelines, netboot-once and the secrets
ledger of every server pointed at it. Writers are ordered by one transaction-scoped advisory
lock, as SQLite's ``BEGIN IMMEDIATE`` orders them in a file. A change to builds or netboot is
announced with ``NOTIFY`` in its own transaction; every server ``LISTEN``s on a connection of
its own and moves its ``version()`` on when a notification arrives, which invalidates its
caches.

Staleness bound: while the listening connection is up, a server's caches lag a commit on
another server by the notification's delivery time (milliseconds on a LAN). A listening
connection that breaks is noticed within ``LIVENESS_INTERVAL`` seconds (at once when the
server closes it); from then until it is back, ``version()`` changes at every call, so no
cache is used and every answer is read from the database (or, while that fails, from what was
last read: see ``BootService``).

Losing the database: after a connection failed, every use fails at once (no request ever
waits for an unreachable database, and the TFTP server resolves files on one thread); the
listening thread connects again every ``RETRY_DELAY`` seconds (each try taking at most
``CONNECT_TIMEOUT`` seconds when the host does not answer) and lets the others connect once
it could. A connection that had worked and broke (the database restarted) is replaced at once
for a read; a statement on a connection whose host stopped answering fails after
``CONNECT_TIMEOUT`` seconds (``tcp_user_timeout``).

Unreachable at start: with ``wait=False`` (``photonkick serve``) the store opens anyway; every
use fails as above until the database answers, and the first connection that succeeds creates
or migrates the schema before anything else runs on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from photonkick.server.store import (
    WRITE_TIMEOUT,
    ChangeListener,
    Row,
    Store,
    StoreUnavailable,
    new_secret,
)
from photonkick.server.store_schema import (
    POSTGRESQL_VERSION_TABLE,
    SchemaTooNew,
    postgresql_steps,
)

log = logging.getLogger("photonkick.server.store")
T = TypeVar("T")

CHANNEL = "photonkick_state"
"""The NOTIFY channel: a change to builds or netboot-once."""
CONNECT_TIMEOUT = 2
"""Seconds a connection attempt may take before the database counts as unreachable."""
STATEMENT_TIMEOUT_MS = 5000
"""A statement running longer than this is cancelled (a read never holds a request longer)."""
RETRY_DELAY = 1.0
"""Seconds between the listening thread's tries to reach a database that failed (reads and
writes fail at once meanwhile)."""
LIVENESS_INTERVAL = 5.0
"""Seconds between checks that the listening connection is still alive."""
WRITE_LOCK = 0x70686B01
"""Advisory lock key held by every write transaction: one writer at a time, all servers."""
MIGRATE_LOCK = 0x70686B02
"""Advisory lock key held while the schema is created or migrated."""


def describe(url: str) -> str:
    """The database a URL names, without user or password (for messages and logs)."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "the PostgreSQL database (unparsable URL)"
    host = parts.get("host") or "localhost"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"PostgreSQL database {parts.get('dbname') or '(default)'} on {host}{port}"


class PostgresStore:
    """The shared database: a connection per thread (autocommit; transactions explicit) and a
    listening connection that turns notifications into ``version()`` changes."""

    def __init__(self, url: str, *, wait: bool = True) -> None:
        """``wait``: raise StoreUnavailable when the database cannot be reached now; without
        it only a schema newer than this photonkick is refused here, and ``start_error`` says
        why the database could not be used (None when it could)."""
        self.name = describe(url)
        self._url = url
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[psycopg.Connection[Row]] = []
        self._unhealthy = False
        self._generation = 0
        self._listening = threading.Event()
        self._closing = threading.Event()
        self._listeners: list[ChangeListener] = []
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self.start_error: str | None = None
        try:
            self._connection()
        except StoreUnavailable as exc:
            if wait or isinstance(exc.__cause__, SchemaTooNew):
                raise
            self.start_error = str(exc)
        self._listener = threading.Thread(target=self._listen, name="pg-listen", daemon=True)
        self._listener.start()

    def _connect(self) -> psycopg.Connection[Row]:
        return psycopg.connect(
            self._url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            tcp_user_timeout=CONNECT_TIMEOUT * 1000,
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            application_name="photonkick",
        )

    def _connection(self) -> psycopg.Connection[Row]:
        """This thread's connection, opened (again) when needed."""
        conn: psycopg.Connection[Row] | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        if self._closing.is_set():
            raise StoreUnavailable(f"{self.name} is closed")
        if self._unhealthy:  # until the listening thread could connect again
            raise StoreUnavailable(f"{self.name} is unreachable; retrying")
        conn = None
        try:
            conn = self._connect()
            self._ensure_schema(conn)
        except (psycopg.Error, SchemaTooNew) as exc:
            if conn is not None:
                conn.close()
            self._unhealthy = True
            raise StoreUnavailable(f"{self.name}: {_first_line(exc)}") from exc
        with self._lock:
            self._all.append(conn)
        self._local.conn = conn
        self._local.used = False
        return conn

    def _run(self, work: Callable[[psycopg.Connection[Row]], T], *, retry: bool = False) -> T:
        """``work`` on this thread's connection; with ``retry`` (idempotent work), once more
        on a new connection when one that had worked broke (the database restarted)."""
        while True:
            conn = self._connection()
            try:
                result = work(conn)
            except psycopg.Error as exc:
                if self._forget_if_broken(conn) and retry:
                    retry = False
                    continue
                raise StoreUnavailable(f"{self.name}: {_first_line(exc)}") from exc
            self._local.used = True
            return result

    def _forget_if_broken(self, conn: psycopg.Connection[Row]) -> bool:
        """Drop a broken connection; True when it had worked before (worth one new try at
        once). A new connection that broke makes every use fail at once for a while."""
        if not (conn.broken or conn.closed):
            return False
        used = bool(getattr(self._local, "used", False))
        if not used:
            self._unhealthy = True
        conn.close()
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        self._local.conn = None
        return used

    def read(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        """Rows of one query (its own implicit transaction)."""
        query = _dialect(sql)
        return self._run(lambda conn: conn.execute(query, args).fetchall(), retry=True)

    @contextmanager
    def write(self, timeout: float = WRITE_TIMEOUT) -> Iterator[_PgTransaction]:
        """One transaction holding the write lock; committed (and notified) at the end."""
        conn = self._connection()
        try:
            with conn.transaction():
                conn.execute(
                    "SELECT set_config('lock_timeout', %s, true), pg_advisory_xact_lock(%s)",
                    (f"{int(timeout * 1000)}ms", WRITE_LOCK),
                )
                tx = _PgTransaction(conn)
                yield tx
                for host in sorted(tx.notified):
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, host))
        except psycopg.Error as exc:
            self._forget_if_broken(conn)
            raise StoreUnavailable(f"{self.name}: {_first_line(exc)}") from exc

    def version(self) -> int:
        """Moves on with every notification; at every call while not listening."""
        with self._lock:
            if not self._listening.is_set():
                self._generation += 1
            return self._generation

    def on_change(self, listener: ChangeListener) -> None:
        """Call ``listener(host)`` on the listening thread for every notification."""
        self._listeners.append(listener)

    def _bump(self) -> None:
        with self._lock:
            self._generation += 1

    def _listen(self) -> None:
        """Keep a LISTEN connection open, reconnecting after any failure."""
        failing = self.start_error is not None  # reported by whoever opened the store
        while not self._closing.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._bump()  # whatever was missed while not listening
                    self._listening.set()
                    self._unhealthy = False
                    if failing:
                        log.info("%s reachable again; listening for changes", self.name)
                    failing = False
                    self._follow(conn)
            except psycopg.Error as exc:
                self._listening.clear()
                if not failing and not self._closing.is_set():
                    log.error(
                        "%s: %s; answering from what was last read, reconnecting every %.0f s",
                        self.name,
                        _first_line(exc),
                        RETRY_DELAY,
                    )
                failing = True
            self._listening.clear()
            self._closing.wait(RETRY_DELAY)

    def _follow(self, conn: psycopg.Connection[Row]) -> None:
        checked = time.monotonic()
        while not self._closing.is_set():
            for notification in conn.notifies(timeout=0.5):
                self._bump()
                for listener in list(self._listeners):
                    listener(notification.payload)
            if self._unhealthy or time.monotonic() - checked >= LIVENESS_INTERVAL:
                conn.execute("SELECT 1")
                checked = time.monotonic()
                self._unhealthy = False  # another thread's failure: let it try again

    def _ensure_schema(self, conn: psycopg.Connection[Row]) -> None:
        """Create or move the schema forward (once per process, one server at a time) before
        the first use of the database. Raises SchemaTooNew or psycopg.Error."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                self._migrate(conn)
            self._schema_ready = True

    def _migrate(self, conn: psycopg.Connection[Row]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            conn.execute(POSTGRESQL_VERSION_TABLE)
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            current = row[0] if row else 0
            for number, statements in postgresql_steps(current):
                for statement in statements:
                    conn.execute(statement.encode())
                log.info("%s: schema version %d", self.name, number)
                if row is None:
                    conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
                    row = (number,)
                else:
                    conn.execute("UPDATE schema_version SET version = %s", (number,))

    def check_writable(self) -> None:
        """A write transaction that changes a row (rolled back: nothing stays)."""

        def probe(conn: psycopg.Connection[Row]) -> None:
            with conn.transaction(force_rollback=True):
                conn.execute("UPDATE schema_version SET version = version")

        self._run(probe)

    def close(self) -> None:
        """Stop listening and close every connection."""
        self._closing.set()
        self._listener.join(5)
        with self._lock:
            conns, self._all = list(self._all), []
        for conn in conns:
            conn.close()


class _PgTransaction:
    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self._conn = conn
        self.notified: set[str] = set()

    def execute(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        cursor = self._conn.execute(_dialect(sql), args)
        return cursor.fetchall() if cursor.description else []

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        batch = list(rows)
        if batch:
            with self._conn.cursor() as cursor:
                cursor.executemany(_dialect(sql), batch)

    def notify(self, host: str = "") -> None:
        self.notified.add(host)


class PostgresBackend:
    """Every component's state in one PostgreSQL database."""

    shared = True

    def __init__(self, url: str, *, wait: bool = True) -> None:
        """``wait``: see ``PostgresStore``; without it the secret is read at first use."""
        self._store = PostgresStore(url, wait=wait)
        self.label = self._store.name
        self._secret: bytes | None = None
        if self._store.start_error is None:
            try:
                self._secret = self._read_secret()
            except BaseException as exc:
                if wait or not isinstance(exc, StoreUnavailable):
                    self._store.close()
                    raise
                self._store.start_error = str(exc)

    @property
    def start_error(self) -> str | None:
        """Why the database could not be used when the backend was opened (None: it could)."""
        return self._store.start_error

    def _read_secret(self) -> bytes:
        rows = self._store.read("SELECT value FROM secret WHERE id = 1")
        if rows:  # no write needed (a read-only standby serves boot requests too)
            return bytes.fromhex(rows[0][0])
        with self._store.write() as db:
            db.execute(
                "INSERT INTO secret (id, value) VALUES (1, ?) ON CONFLICT (id) DO NOTHING",
                (new_secret(),),
            )
            rows = db.execute("SELECT value FROM secret WHERE id = 1")
        return bytes.fromhex(rows[0][0])

    def secret(self) -> bytes:
        """The secret in the database, shared by every server (read once). Raises
        StoreUnavailable while it has never been read and the database cannot be."""
        if self._secret is None:
            self._secret = self._read_secret()
        return self._secret

    def store(self, name: str) -> Store:
        """The one database, whatever the component."""
        return self._store

    def on_change(self, listener: ChangeListener) -> None:
        """Every notification of a change, by any server (this one too)."""
        self._store.on_change(listener)

    def close(self) -> None:
        """Close the database's connections."""
        self._store.close()


def _dialect(sql: str) -> bytes:
    """The shared SQL subset in psycopg's placeholder style (none of it holds a ``?`` or ``%``
    of its own)."""
    return sql.replace("?", "%s").encode()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]

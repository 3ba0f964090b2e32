"""The installer's log, shipped by the host while it installs (``POST /cb/<name>/<token>/log``).

Each build's log is stored in ``<state>/install-log.db`` (SQLite), redacted, committed before
the answer and capped (the oldest chunks go first). The shipper sends the byte offset of each
chunk and a random id per boot: a chunk already stored is not stored again, and a new boot
(a reinstall) starts a new log. Phases found in the lines become timeline events; an
installer failure, or a log that stops with no ``installed`` after it within
``server.install_log_timeout`` seconds, makes the build ``failed`` with the last log lines.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from photonkick.kickstarts.host_secrets import secret_items, secrets_token
from photonkick.kickstarts.spec import Host
from photonkick.kickstarts.tokens import host_token, token_matches
from photonkick.server.boot_service import BootService
from photonkick.server.installer_phases import findings, meaningful
from photonkick.server.log_safety import redact_tokens
from photonkick.server.timeline import (
    FAILED,
    REARMED,
    WRITE_TIMEOUT,
    StoreUnavailable,
    since_rearm,
)

log = logging.getLogger("photonkick.server.install_log")
DATABASE_FILE = "install-log.db"
MAX_LOG = 1024 * 1024
"""Bytes of log kept per build; older chunks are dropped first."""
TAIL_LINES = 40
"""Lines of log in ``log_tail``."""
CONTEXT_LINES = 20
"""Earlier lines read again to explain a failure found in a new chunk."""
ENDED = ("installed", FAILED)
"""Events after which a silent log is no failure."""
REDACTED = "<redacted>"
_CRYPT_HASH = re.compile(r"\$(?:1|5|6|y|gy|2[aby]|7)\$[^\s'\",;]+")
_BOOT_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
WATCH_EVERY = 1.0
"""Seconds between two looks for builds whose log stopped."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    host TEXT NOT NULL, build INTEGER NOT NULL, boot TEXT NOT NULL, received INTEGER NOT NULL,
    kept INTEGER NOT NULL, wall REAL NOT NULL, client TEXT NOT NULL,
    PRIMARY KEY (host, build)
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL, build INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_build ON chunks (host, build);
"""


class BadLogRequest(ValueError):
    """The query of a log POST is not the shipper's (answered 400)."""


@dataclass(frozen=True)
class LogPosition:
    """Where a build's stored log stands."""

    boot: str
    received: int
    wall: float
    client: str


def redact(text: str, secrets: list[str]) -> str:
    """``text`` without crypt hashes, tokens or any of ``secrets``."""
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return _CRYPT_HASH.sub(REDACTED, redact_tokens(text))


def parse_query(boot: str | None, offset: str | None) -> tuple[str, int]:
    """The shipper's boot id and byte offset; BadLogRequest for anything else."""
    if boot is None or not _BOOT_ID.fullmatch(boot):
        raise BadLogRequest("boot must be 1-64 letters, digits or dashes")
    if offset is None or not offset.isdigit() or len(offset) > 15:
        raise BadLogRequest("offset must be a byte count")
    return boot, int(offset)


class InstallLogs:
    """Every build's shipped log, its phases and the stopped-log watch. Thread-safe."""

    def __init__(self, service: BootService) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            service.state.path / DATABASE_FILE,
            timeout=WRITE_TIMEOUT,
            isolation_level=None,
            check_same_thread=False,
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._alive: dict[tuple[str, int], float] = {}
        """When a build's shipper last sent an empty or repeated chunk (kept in memory only)."""
        self._secret_values: dict[str, tuple[int, Host | None, list[str]]] = {}
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watch_loop, name="install-log", daemon=True)
        self._watch.start()

    def allowed(self, name: str, token: str) -> bool:
        """Whether the token is the host's current one (checked before the body is read)."""
        if self.service.host(name) is None:
            return False
        build = self.service.build(name)
        return token_matches(self.service.state.secret, name, build, token)

    def append(self, name: str, boot: str, offset: int, body: bytes, client: str) -> None:
        """Store the part of a chunk not stored yet, then record what its lines show.

        Raises StoreUnavailable when the database does not take it (answered 503).
        """
        build = self.service.build(name)
        text = body.decode("utf-8", "replace")
        with self._lock, self._unavailable():
            position = self._position(name, build)
            new_boot = position is None or position.boot != boot
            received = 0 if new_boot or position is None else position.received
            if not new_boot and offset + len(body) <= received:
                self._alive[(name, build)] = time.time()
                return
            skip = max(0, received - offset) if not new_boot else 0
            fresh = body[skip:].decode("utf-8", "replace") if skip else text
            before = [] if new_boot else self._lines(name, build, CONTEXT_LINES)
            self._store(
                name,
                build,
                boot,
                offset + len(body),
                redact(fresh, self._secrets(name, build)),
                client,
                new_boot,
            )
        self._record(name, build, fresh, before, client)

    def _record(self, name: str, build: int, text: str, before: list[str], client: str) -> None:
        lines = redact(text, self._secrets(name, build)).splitlines()
        timeline = self.service.timeline
        events = since_rearm(timeline.events(name, build))
        kinds = {e.kind for e in events}
        for found in findings(lines, before):
            if found.kind == FAILED:
                if kinds & set(ENDED):
                    continue
                tail = "\n".join(meaningful(before + lines, 8))
                timeline.record_callback(
                    name, build, FAILED, f"{found.detail}\n--- log tail ---\n{tail}", client
                )
                kinds.add(FAILED)
                log.info("%s: failed: %s", name, found.detail[:200])
            elif found.kind not in kinds:
                timeline.record(name, build, found.kind, found.detail, client)
                kinds.add(found.kind)

    def tail(self, name: str, build: int, lines: int = TAIL_LINES) -> str | None:
        """The last lines of the build's log; None when none arrived or it cannot be read."""
        try:
            with self._lock:
                found = self._lines(name, build, lines)
        except sqlite3.Error:
            return None
        return "\n".join(found) if found else None

    def _position(self, name: str, build: int) -> LogPosition | None:
        row = self._db.execute(
            "SELECT boot, received, wall, client FROM logs WHERE host = ? AND build = ?",
            (name, build),
        ).fetchone()
        return LogPosition(*row) if row else None

    def _lines(self, name: str, build: int, count: int) -> list[str]:
        rows = self._db.execute(
            "SELECT text FROM chunks WHERE host = ? AND build = ? ORDER BY id DESC LIMIT ?",
            (name, build, count),
        ).fetchall()
        text = "".join(row[0] for row in reversed(rows))
        return text.splitlines()[-count:]

    def _store(
        self,
        name: str,
        build: int,
        boot: str,
        received: int,
        text: str,
        client: str,
        new_boot: bool,
    ) -> None:
        db = self._db
        with _transaction(db):
            if new_boot:
                db.execute("DELETE FROM chunks WHERE host = ? AND build = ?", (name, build))
            db.execute(
                "INSERT INTO logs (host, build, boot, received, kept, wall, client) "
                "VALUES (?, ?, ?, ?, 0, ?, ?) ON CONFLICT(host, build) DO UPDATE SET "
                "boot = excluded.boot, received = excluded.received, wall = excluded.wall, "
                "client = excluded.client, kept = CASE WHEN ? THEN 0 ELSE kept END",
                (name, build, boot, received, time.time(), client, new_boot),
            )
            if text:
                db.execute(
                    "INSERT INTO chunks (host, build, text) VALUES (?, ?, ?)", (name, build, text)
                )
                db.execute(
                    "UPDATE logs SET kept = kept + ? WHERE host = ? AND build = ?",
                    (len(text), name, build),
                )
            self._cap(db, name, build)

    def _cap(self, db: sqlite3.Connection, name: str, build: int) -> None:
        """Drop the oldest chunks while the build keeps more than MAX_LOG."""
        while True:
            kept = db.execute(
                "SELECT kept FROM logs WHERE host = ? AND build = ?", (name, build)
            ).fetchone()[0]
            if kept <= MAX_LOG:
                return
            row = db.execute(
                "SELECT id, length(text) FROM chunks WHERE host = ? AND build = ? "
                "ORDER BY id LIMIT 1",
                (name, build),
            ).fetchone()
            if row is None:
                return
            db.execute("DELETE FROM chunks WHERE id = ?", (row[0],))
            db.execute(
                "UPDATE logs SET kept = kept - ? WHERE host = ? AND build = ?",
                (row[1], name, build),
            )

    def _secrets(self, name: str, build: int) -> list[str]:
        """Values photonkick knows to be secret for this build of the host."""
        host = self.service.host(name)
        cached = self._secret_values.get(name)
        # A reloaded spec makes new Host objects: the values are computed again.
        if cached is not None and cached[0] == build and cached[1] is host:
            return cached[2]
        secret = self.service.state.secret
        values = [host_token(secret, name, build), secrets_token(secret, name, build)]
        if host is not None:
            for item in secret_items(host, secret):
                values.append(item.value.strip())
                for line in item.value.splitlines():
                    values.append(line.split("=", 1)[-1].strip())
        found = [v for v in values if len(v) >= 4]
        self._secret_values[name] = (build, host, found)
        return found

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{DATABASE_FILE}: {exc}") from exc

    # -- the stopped-log watch --

    def check_stopped(self, now: float | None = None) -> list[str]:
        """Fail every build whose log stopped ``install_log_timeout`` seconds ago with no
        ``installed`` or ``failed`` since; returns the hosts failed now."""
        timeout = self.service.inventory.server.install_log_timeout
        now = time.time() if now is None else now
        with self._lock, self._unavailable():
            rows = self._db.execute("SELECT host, build, wall, client FROM logs").fetchall()
            alive = dict(self._alive)
        failed = []
        for name, build, stored_wall, client in rows:
            wall = max(stored_wall, alive.get((name, build), 0.0))
            if wall >= now - timeout:
                continue
            if self.service.host(name) is None or self.service.build(name) != build:
                continue
            every = self.service.timeline.events(name, build)
            if any(e.kind in ENDED for e in since_rearm(every)):
                continue
            if any(e.kind == REARMED and e.wall >= wall for e in every):
                continue  # rearmed since: the next install starts a new log
            with self._lock:
                last = self._lines(name, build, CONTEXT_LINES)
            shown = meaningful(last, 8)
            reason = f"the installer log stopped {now - wall:.0f} s ago with no installed"
            if shown:
                reason += f": {shown[-1]}"
            detail = reason + "\n--- log tail ---\n" + "\n".join(shown)
            self.service.timeline.record_callback(name, build, FAILED, detail, client)
            log.warning("%s: %s", name, reason[:300])
            failed.append(name)
        return failed

    def _watch_loop(self) -> None:
        while not self._stop.wait(WATCH_EVERY):
            try:
                self.check_stopped()
            except StoreUnavailable as exc:
                log.error("install log watch: %s; trying again", exc)
            except Exception:  # the watch must outlive any one bad row
                log.exception("install log watch failed")

    def close(self) -> None:
        """Stop the watch and close the database."""
        self._stop.set()
        self._watch.join(5)
        with self._lock:
            self._db.close()


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise

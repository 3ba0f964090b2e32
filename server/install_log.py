"""The installer's log, shipped by the host while it installs (``POST /cb/<name>/<token>/log``).

Each build's log is kept in the state's ``install-log`` store (``<state>/install-log.db``, or
the PostgreSQL database several servers share), redacted, committed before the answer and
capped (the oldest chunks go first). The shipper sends the byte offset of each chunk and a
random id per boot: a chunk already stored is not stored again, and a new boot (a reinstall)
starts a new log. Phases found in the lines become timeline events; an installer failure, or
a log that stops with no ``installed`` after it within ``server.install_log_timeout``
seconds, makes the build ``failed`` with the last log lines.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from photonkick.kickstarts.host_secrets import secret_items, secrets_token
from photonkick.kickstarts.spec import Host
from photonkick.kickstarts.tokens import host_token, token_matches
from photonkick.server.boot_service import BootService
from photonkick.server.installer_phases import findings, meaningful
from photonkick.server.log_safety import redact_tokens
from photonkick.server.store import Row, Store, Transaction
from photonkick.server.timeline import FAILED, REARMED, StoreUnavailable, since_rearm

log = logging.getLogger("photonkick.server.install_log")
STORE = "install-log"
"""The state's store of the logs (``<state>/install-log.db`` with SQLite)."""
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
Query = Callable[[str, Sequence[object]], list[Row]]
"""A store's read, or ``execute`` of its write transaction."""


class BadLogRequest(ValueError):
    """The query of a log POST is not the shipper's (answered 400)."""


@dataclass(frozen=True)
class LogPosition:
    """Where a build's stored log stands, and which server received it last."""

    host: str
    build: int
    boot: str
    received: int
    wall: float
    client: str
    server: str


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
    """Every build's shipped log, its phases and the stopped-log watch, in the state's
    ``install-log`` store. Thread-safe, and safe for several servers sharing the store."""

    def __init__(self, service: BootService, store: Store | None = None) -> None:
        """``store``: the state's ``install-log`` store unless given."""
        self.service = service
        self._store = store if store is not None else service.state.store(STORE)
        self._shared = service.state.backend.shared
        self._server = service.timeline.server_id
        self._lock = threading.Lock()
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
        """Store the part of a chunk not stored yet (committed before returning), then record
        what its lines show.

        Raises StoreUnavailable when the database does not take it (answered 503).
        """
        build = self.service.build(name)
        # A chunk stored already only says the shipper is alive: no write (the usual case).
        position = self._position(self._store.read, name, build)
        if _stored_already(position, boot, offset, body) and self._owns(position):
            self._mark_alive(name, build)
            return
        with self._store.write() as db:
            position = self._position(db.execute, name, build)
            if _stored_already(position, boot, offset, body):
                self._mark_alive(name, build)
                if not self._owns(position):  # the log now comes here: so does its watch
                    db.execute(
                        "UPDATE install_logs SET server = ? WHERE host = ? AND build = ?",
                        (self._server, name, build),
                    )
                return
            new_boot = position is None or position.boot != boot
            received = 0 if new_boot or position is None else position.received
            fresh = _decode(body[max(0, received - offset) :] if not new_boot else body)
            before = [] if new_boot else _lines(db.execute, name, build, CONTEXT_LINES)
            self._save(db, name, build, boot, offset + len(body), fresh, client, new_boot)
        self._record(name, build, fresh, before, client)

    def _mark_alive(self, name: str, build: int) -> None:
        with self._lock:
            self._alive[(name, build)] = time.time()

    def _owns(self, position: LogPosition | None) -> bool:
        """Whether this server watches the build's log for silence (see ``check_stopped``)."""
        return position is not None and self._owner(position.server)

    def _owner(self, server: str) -> bool:
        """Whether a log that ``server`` received is watched here: every log of a store no
        other server shares; in a shared one the logs this server received last (``""``:
        received before servers were named, by whichever server watches first)."""
        return not self._shared or server in ("", self._server)

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
            found = _lines(self._store.read, name, build, lines)
        except StoreUnavailable:
            return None
        return "\n".join(found) if found else None

    @staticmethod
    def _position(query: Query, name: str, build: int) -> LogPosition | None:
        rows = query(
            "SELECT host, build, boot, received, wall, client, server FROM install_logs "
            "WHERE host = ? AND build = ?",
            (name, build),
        )
        return LogPosition(*rows[0]) if rows else None

    def _save(
        self,
        db: Transaction,
        name: str,
        build: int,
        boot: str,
        received: int,
        fresh: str,
        client: str,
        new_boot: bool,
    ) -> None:
        """Within the write transaction: the new part of the log, redacted, and where the
        log stands now."""
        text = redact(fresh, self._secrets(name, build))
        if new_boot:
            db.execute("DELETE FROM install_log_chunks WHERE host = ? AND build = ?", (name, build))
        db.execute(
            "INSERT INTO install_logs (host, build, boot, received, kept, wall, client, server) "
            "VALUES (?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT(host, build) DO UPDATE SET "
            "boot = excluded.boot, received = excluded.received, wall = excluded.wall, "
            "client = excluded.client, server = excluded.server, "
            "kept = CASE WHEN ? = 1 THEN 0 ELSE install_logs.kept END",
            (name, build, boot, received, time.time(), client, self._server, int(new_boot)),
        )
        if text:
            db.execute(
                "INSERT INTO install_log_chunks (host, build, text) VALUES (?, ?, ?)",
                (name, build, text),
            )
            db.execute(
                "UPDATE install_logs SET kept = kept + ? WHERE host = ? AND build = ?",
                (len(text), name, build),
            )
        _cap(db, name, build)

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

    # -- the stopped-log watch --

    def check_stopped(self, now: float | None = None) -> list[str]:
        """Fail every build whose log stopped ``install_log_timeout`` seconds ago with no
        ``installed`` or ``failed`` since; returns the hosts failed now.

        With a shared store each server watches the logs it received last: the shipper posts
        to one server, whose memory alone knows of its empty "alive" posts. Another server
        never fails a build for a log that was shipped elsewhere.
        """
        timeout = self.service.inventory.server.install_log_timeout
        now = time.time() if now is None else now
        rows = self._store.read("SELECT host, build, wall, client, server FROM install_logs")
        with self._lock:
            alive = dict(self._alive)
        failed = []
        for name, build, stored_wall, client, server in rows:
            wall = max(stored_wall, alive.get((name, build), 0.0))
            if wall >= now - timeout or not self._owner(server):
                continue
            if self.service.host(name) is None or self.service.build(name) != build:
                continue
            every = self.service.timeline.events(name, build)
            if any(e.kind in ENDED for e in since_rearm(every)):
                continue
            if any(e.kind == REARMED and e.wall >= wall for e in every):
                continue  # rearmed since: the next install starts a new log
            shown = meaningful(_lines(self._store.read, name, build, CONTEXT_LINES), 8)
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
        """Stop the watch (the store is closed with the state)."""
        self._stop.set()
        self._watch.join(5)


def _stored_already(position: LogPosition | None, boot: str, offset: int, body: bytes) -> bool:
    """Whether every byte of a chunk of this boot's log is stored already."""
    return (
        position is not None and position.boot == boot and offset + len(body) <= position.received
    )


def _decode(body: bytes) -> str:
    """A chunk as text; a NUL (which PostgreSQL's text refuses) shows as U+FFFD like any
    byte that is not UTF-8."""
    return body.decode("utf-8", "replace").replace("\x00", "\ufffd")


def _lines(query: Query, name: str, build: int, count: int) -> list[str]:
    """The last ``count`` lines of a build's log, through a read or the write transaction."""
    rows = query(
        "SELECT text FROM install_log_chunks WHERE host = ? AND build = ? ORDER BY id DESC LIMIT ?",
        (name, build, count),
    )
    text = "".join(row[0] for row in reversed(rows))
    return text.splitlines()[-count:]


def _cap(db: Transaction, name: str, build: int) -> None:
    """Drop the oldest chunks while the build keeps more than MAX_LOG."""
    while True:
        kept = db.execute(
            "SELECT kept FROM install_logs WHERE host = ? AND build = ?", (name, build)
        )[0][0]
        if kept <= MAX_LOG:
            return
        rows = db.execute(
            "SELECT id, length(text) FROM install_log_chunks WHERE host = ? AND build = ? "
            "ORDER BY id LIMIT 1",
            (name, build),
        )
        if not rows:
            return
        db.execute("DELETE FROM install_log_chunks WHERE id = ?", (rows[0][0],))
        db.execute(
            "UPDATE install_logs SET kept = kept - ? WHERE host = ? AND build = ?",
            (rows[0][1], name, build),
        )

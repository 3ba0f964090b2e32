"""The one-time secrets URL and the end of a build's callbacks.

A host's postinstall fetches its secrets once (``GET /ks/<name>/<token>/secrets``):

* only with the build's secrets token (else the same 404 as an unknown host);
* only from the address that fetched this build's kickstart, when one did (PXE); hosts that
  got their kickstart from an ISO or guestinfo fetched nothing, so there the first fetch wins;
* only once: a second fetch is refused. Both refusals are recorded as an ``alarm`` event in
  the host's timeline and answered with the reason, which the real host then reports as its
  failure.

After ``ready`` the build's callback token stops working (403). Both facts live in the
state's ``secrets`` store (``<state>/secrets.db``, or the shared PostgreSQL database),
committed before the answer goes out, so a restart keeps them; a rearm opens them again for
the reinstall.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from photonkick.kickstarts.host_secrets import (
    secret_items,
    secrets_document,
    secrets_token_matches,
)
from photonkick.kickstarts.tokens import token_matches
from photonkick.server.boot_service import BootService
from photonkick.server.store import SqliteStore, Store
from photonkick.server.timeline import ALARM, REARMED

log = logging.getLogger("photonkick.server.secrets")
DATABASE_FILE = "secrets.db"
STORE = "secrets"
FETCHED = "secrets"
"""Timeline event kind: the build's secrets were handed out."""


@dataclass(frozen=True)
class Fetch:
    """Who fetched a build's secrets, and when (wall clock)."""

    client: str
    wall: float


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status and plain-text body."""

    status: int
    body: bytes


NOT_FOUND = Answer(404, b"not found\n")


class SecretsLedger:
    """Single-use secrets and closed callbacks per (host, build), in the state's store.

    Thread-safe and safe for several processes and servers: each claim is one write
    transaction, ordered after every other writer of the store. Every change is committed
    before it returns; a store that refuses a read or a write raises StoreUnavailable
    (answered 503).
    """

    def __init__(self, database: Path | Store) -> None:
        """``database``: a SQLite file (opened and closed here) or the state's store."""
        self._own_store = isinstance(database, Path)
        self._store: Store = (
            SqliteStore(database, STORE) if isinstance(database, Path) else database
        )

    def claim(self, host: str, build: int, client: str, wall: float) -> Fetch | None:
        """Take this build's secrets for ``client``; the earlier fetch when already taken."""
        with self._store.write() as db:
            rows = db.execute(
                "SELECT client, wall FROM fetched WHERE host = ? AND build = ?", (host, build)
            )
            if not rows:
                db.execute(
                    "INSERT INTO fetched (host, build, client, wall) VALUES (?, ?, ?, ?)",
                    (host, build, client, wall),
                )
        return Fetch(rows[0][0], rows[0][1]) if rows else None

    def close_callbacks(self, host: str, build: int) -> None:
        """The build is done: its callback token stops working."""
        with self._store.write() as db:
            db.execute(
                "INSERT INTO callbacks_closed (host, build) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (host, build),
            )

    def callbacks_closed(self, host: str, build: int) -> bool:
        """Whether the build's callbacks were closed."""
        rows = self._store.read(
            "SELECT 1 FROM callbacks_closed WHERE host = ? AND build = ?", (host, build)
        )
        return bool(rows)

    def reopen(self, host: str, build: int) -> None:
        """A rearmed build installs again: one more fetch and its callbacks are allowed."""
        with self._store.write() as db:
            db.execute("DELETE FROM fetched WHERE host = ? AND build = ?", (host, build))
            db.execute("DELETE FROM callbacks_closed WHERE host = ? AND build = ?", (host, build))

    def close(self) -> None:
        """Close the database when it was opened here."""
        if self._own_store:
            self._store.close()


class SecretsGate:
    """Answers secrets fetches and decides which callbacks are still accepted."""

    def __init__(self, service: BootService, ledger: SecretsLedger | None = None) -> None:
        self.service = service
        self.ledger = ledger or SecretsLedger(service.state.store(STORE))

    def fetch(self, name: str, token: str, client: str) -> Answer:
        """The build's secrets document, once, for the address entitled to it."""
        host = self.service.host(name)
        if host is None:
            return NOT_FOUND
        build = self.service.build(name)
        secret = self.service.state.secret
        if not secrets_token_matches(secret, name, build, token):
            log.warning("secrets for %s refused: wrong or old token (from %s)", name, client)
            return NOT_FOUND
        bound = self._kickstart_client(name, build)
        if bound is not None and client != bound:
            return self._alarm(
                name,
                build,
                client,
                403,
                f"secrets of {name} build {build} refused to {client}: "
                f"its kickstart was fetched by {bound}",
            )
        earlier = self.ledger.claim(name, build, client, time.time())
        if earlier is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(earlier.wall))
            return self._alarm(
                name,
                build,
                client,
                409,
                f"secrets of {name} build {build} were already fetched by {earlier.client} "
                f"at {when}; refused to {client}",
            )
        self.service.timeline.record(name, build, FETCHED, "", client)
        log.info("%s: secrets of build %d fetched by %s", name, build, client)
        return Answer(200, secrets_document(secret_items(host, secret)))

    def _alarm(self, name: str, build: int, client: str, status: int, reason: str) -> Answer:
        self.service.timeline.record(name, build, ALARM, reason, client)
        self.service.timeline.flush()
        log.warning("ALARM %s", reason)
        return Answer(status, reason.encode() + b"\n")

    def _kickstart_client(self, name: str, build: int) -> str | None:
        """The address of this build's first kickstart fetch since its last rearm."""
        bound = None
        for event in self.service.timeline.events(name, build):
            if event.kind == REARMED:
                bound = None
            elif event.kind == "kickstart" and bound is None and event.client:
                bound = event.client
        return bound

    def callbacks_closed(self, name: str, token: str) -> bool:
        """Whether this is the token of a build that is done (its callbacks answer 403)."""
        if self.service.host(name) is None:
            return False
        build = self.service.build(name)
        if not token_matches(self.service.state.secret, name, build, token):
            return False
        return self.ledger.callbacks_closed(name, build)

    def after_callback(self, name: str, event: str) -> None:
        """An accepted ``ready`` ends the build's callbacks."""
        if event == "ready":
            self.ledger.close_callbacks(name, self.service.build(name))

    def rearmed(self, name: str) -> None:
        """The host installs again: its build's secrets and callbacks open once more."""
        self.ledger.reopen(name, self.service.build(name))

"""What this server last read from a shared state database, kept on its own disk.

A server started while the database is unreachable answers boot requests from this file as
it would from what it read before the restart: the token secret, and each host's build and
whether its install ended, with the last time it was known to be current (the same
``LAST_KNOWN_FOR`` bound applies): when it was read, or later while no change notification
could have been missed (the ``confirm`` hook, run every ``CONFIRM_EVERY`` seconds and at the
end). It is written in the background, never on a request's path, and only ever read at
start; the database always wins once it answers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from photonkick.server.files import write_atomic

log = logging.getLogger("photonkick.server.store")
FILE = "last-known.json"
SAVE_DELAY = 1.0
"""Seconds between writes of the file (changes in between are written together)."""
CONFIRM_EVERY = 30.0
"""Seconds between runs of the ``confirm`` hook."""

HostState = tuple[int, bool, float]
"""A host's build, whether its install ended, and when that was read (wall clock)."""


class LastKnown:
    """The file ``last-known.json`` (0600: it holds the token secret) of one database."""

    def __init__(self, path: Path, database: str) -> None:
        """``database``: the label of the database (another database's file is ignored)."""
        self.path = path
        self.database = database
        self._lock = threading.Lock()
        self._secret: bytes | None = None
        self._hosts: dict[str, HostState] = {}
        self._load()
        self.confirm: Callable[[], None] = lambda: None
        """Called on the writer's thread: ``remember`` again what is still known current."""
        self._dirty = False
        self._failing = False
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="last-known", daemon=True)
        self._writer.start()

    @property
    def secret(self) -> bytes | None:
        """The token secret last read from the database, if ever."""
        return self._secret

    def hosts(self) -> dict[str, HostState]:
        """Every host's state as last read."""
        with self._lock:
            return dict(self._hosts)

    def remember_secret(self, secret: bytes) -> None:
        """Keep the database's secret (written soon when it is new)."""
        if secret == self._secret:
            return
        if self._secret is not None:
            log.warning(
                "%s holds another token secret than %s: tokens handed out while it was "
                "unreachable no longer work",
                self.database,
                self.path,
            )
        with self._lock:
            self._secret = secret
            self._dirty = True
        self._wake.set()

    def remember(self, host: str, build: int, installed: bool) -> None:
        """Keep a host's state as just read from the database, or known to be still current
        (written soon)."""
        with self._lock:
            self._hosts[host] = (build, installed, time.time())
            self._dirty = True
        self._wake.set()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            if data.get("database") != self.database:
                return
            secret = bytes.fromhex(data["secret"])
            hosts = {
                str(name): (int(build), bool(installed), float(wall))
                for name, (build, installed, wall) in data["hosts"].items()
            }
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("%s ignored: %s", self.path, exc)
            return
        self._secret, self._hosts = secret, hosts

    def _write_loop(self) -> None:
        confirmed = time.monotonic()
        while not self._closing.is_set():
            self._wake.wait(CONFIRM_EVERY)
            self._wake.clear()
            if time.monotonic() - confirmed >= CONFIRM_EVERY:
                confirmed = time.monotonic()
                self._confirm()
            self.flush()
            self._closing.wait(SAVE_DELAY)

    def _confirm(self) -> None:
        try:
            self.confirm()
        except Exception:  # the file is a convenience: it never stops the server
            log.exception("cannot confirm what is known of the hosts")

    def flush(self) -> None:
        """Write the file now when anything changed (a failure is logged, never raised)."""
        with self._lock:
            if not self._dirty or self._secret is None:
                return
            data = {"database": self.database, "secret": self._secret.hex(), "hosts": self._hosts}
            text = json.dumps(data, sort_keys=True)
            self._dirty = False
        try:
            write_atomic(self.path, text, mode=0o600)
        except OSError as exc:
            with self._lock:
                self._dirty = True
            if not self._failing:
                log.error("cannot write %s: %s (a restart may not know the hosts)", self.path, exc)
            self._failing = True
            return
        self._failing = False

    def close(self) -> None:
        """Confirm and write what is known, and stop the writer."""
        self._closing.set()
        self._wake.set()
        self._writer.join(5)
        self._confirm()
        self.flush()

"""Per-host timelines and netboot-once state, persisted in the state's store (the state
directory's SQLite, or PostgreSQL shared by several servers).

Every event has a wall-clock time and a monotonic time from the process that recorded it;
durations use the monotonic clock when both events come from the same run.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from photonkick.server.store import WRITE_TIMEOUT as WRITE_TIMEOUT
from photonkick.server.store import Row, SqliteStore, Store, Transaction
from photonkick.server.store import StoreUnavailable as StoreUnavailable

log = logging.getLogger("photonkick.server.timeline")
T = TypeVar("T")

PHASES = (
    "vm_created",
    "dhcp",
    "config",
    "kernel",
    "initrd",
    "kickstart",
    # From the installer's own log (photonkick.server.installer_phases):
    "partitioning",
    "repo",
    "packages",
    "bootloader",
    "postinstall",
    "installed",
    "local_boot",
    "firstboot",
    "ready",
)
"""The phases of one install, in the order they happen."""
FAILED = "failed"
CALLBACKS = ("installed", "firstboot", "ready")
"""The phases a host reports itself (and `failed`); fetches never make one of them stale."""
ALARM = "alarm"
"""A refused secrets fetch: someone else may hold the build's secrets."""
REARMED = "rearmed"
LATE_FAILURE = "failed_after_ready"
"""A `failed` callback after `ready` of the same build: kept, but it changes nothing."""
WRITE_DELAY = 0.05
"""Seconds the writer waits to batch events into one transaction."""
RETRY_DELAY = 1.0
"""Seconds between the background writer's tries while the database refuses writes."""
MAX_PENDING = 100_000
"""Events kept in memory while the database refuses writes; later ones are dropped."""
START_PHASES = ("vm_created", "dhcp", "config", "kernel", "initrd")
"""Time to ready counts from the first of these (VM created, else the first DHCP packet, else
the first boot-file fetch)."""


@dataclass(frozen=True)
class Event:
    """One thing that happened to a host."""

    host: str
    build: int
    kind: str
    detail: str
    client: str
    wall: float
    mono: float
    run: str
    server: str = ""
    """The id of the server that recorded it (several servers may share one store)."""


@dataclass(frozen=True)
class Clock:
    """Wall and monotonic time, injectable for tests."""

    wall: Callable[[], float] = time.time
    mono: Callable[[], float] = time.monotonic


class Timeline:
    """Thread-safe event log and netboot-once flags for every host.

    Callbacks and rearms are committed before their calls return (and raise StoreUnavailable
    when they cannot be); every other event (fetches, VM events) waits in memory for a
    background writer, so no request or TFTP transfer ever waits for the database. Reads see
    both, and never need a write to succeed.
    """

    def __init__(
        self, database: Path | Store, clock: Clock | None = None, server_id: str = ""
    ) -> None:
        """``database``: a SQLite file (opened and closed here) or a store of the state."""
        self.clock = clock or Clock()
        self.run = uuid.uuid4().hex[:12]
        self.server_id = server_id
        self._own_store = isinstance(database, Path)
        self._store: Store = (
            SqliteStore(database, "timeline") if isinstance(database, Path) else database
        )
        self.changes = 0
        """Counts netboot-state changes made through this object, so caches can tell."""
        self._changed = threading.Condition()
        self._pending_lock = threading.Lock()  # only list and dict operations under it
        self._pending: list[Event] = []
        self._listeners: list[Callable[[Event], None]] = []
        self._pending_ips: dict[str, str] = {}
        self._once: set[tuple[str, int, str]] = set()
        # Callbacks the database refused (as received, as reads show them), stored when it can.
        self._held: list[tuple[Event, Event]] = []
        self._held_disarms: set[tuple[str, int]] = set()
        self._overflow_logged = False
        self._known: dict[tuple[str, int | None], list[Event]] = {}
        self._read_failing = False
        self._write_lock = threading.Lock()
        self._closing = threading.Event()
        self._wake = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="timeline", daemon=True)
        self._writer.start()

    def _event(
        self, host: str, build: int, kind: str, detail: str, client: str, ago: float = 0.0
    ) -> Event:
        wall, mono = self.clock.wall() - ago, self.clock.mono() - ago
        return Event(host, build, kind, detail, client, wall, mono, self.run, self.server_id)

    def record(
        self,
        host: str,
        build: int,
        kind: str,
        detail: str = "",
        client: str = "",
        *,
        ago: float = 0.0,
    ) -> Event:
        """Append an event that happened ``ago`` seconds before now. It is written by a
        background thread within ``WRITE_DELAY`` seconds (or once the database takes writes
        again), and every read in this process sees it at once. Never waits for the
        database."""
        event = self._event(host, build, kind, detail, client, max(0.0, ago))
        if self._closing.is_set():
            log.warning("timeline closed: %s %s for %s not recorded", kind, detail[:80], host)
            return event
        with self._pending_lock:
            full = len(self._pending) >= MAX_PENDING
            if not full:
                self._pending.append(event)
                self._overflow_logged = False
            elif not self._overflow_logged:
                self._overflow_logged = True
                log.error(
                    "timeline: %d events wait for the database; new events are dropped until "
                    "it takes writes again",
                    len(self._pending),
                )
        self._wake.set()
        self._notify(event)
        return event

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` for every event recorded from now on, on the recording
        thread: it must return at once (queue the work, never do it)."""
        self._listeners.append(listener)

    def record_once(
        self, host: str, build: int, kind: str, detail: str = "", client: str = ""
    ) -> Event | None:
        """Append an event unless this build of the host already has one of that kind."""
        if any(e.kind == kind for e in self.events(host, build, last_known=True)):
            return None
        with self._pending_lock:
            if (host, build, kind) in self._once:
                return None
            self._once.add((host, build, kind))
        return self.record(host, build, kind, detail, client)

    def record_callback(
        self, host: str, build: int, kind: str, detail: str = "", client: str = ""
    ) -> Event | None:
        """Store a host's callback before returning, with its effect on netboot-once.

        Within one build (since its last rearm) the phase only moves forward: a replay, or a
        phase the build has already passed, returns None and stores nothing; a ``failed``
        after ``ready`` is stored as ``failed_after_ready`` and changes nothing else. Raises
        StoreUnavailable when the database does not take the write; the callback is then
        held in memory (see ``_hold``) and stored by the background writer when it can be.
        """
        event = self._event(host, build, kind, detail, client)
        try:
            result = self._transaction(lambda db: self._store_callback(db, event))
        except StoreUnavailable:
            self._hold(event)
            raise
        self._notify(result)
        return result

    def _store_callback(self, db: Transaction, event: Event) -> Event | None:
        """Within a write transaction: store a callback as ``callback_effect`` says."""
        host, build = event.host, event.build
        rows = db.execute("SELECT installed_build FROM netboot WHERE host = ?", (host,))
        stored_kind, disarm = callback_effect(
            since_rearm(_select_events(db.execute, host, build)),
            event.kind,
            event.detail,
            disarmed=bool(rows and rows[0][0] == build),
        )
        if stored_kind is None:
            return None
        stored = replace(event, kind=stored_kind)
        _insert_events(db, [stored])
        if disarm:
            db.execute(
                "INSERT INTO netboot (host, installed_build) VALUES (?, ?) ON CONFLICT(host) "
                "DO UPDATE SET installed_build = excluded.installed_build",
                (host, build),
            )
            db.notify(host)
            self._count_change()
        return stored

    def _hold(self, event: Event) -> None:
        """Keep a callback the database refused: the background writer stores it once it can
        (the host's retry is then a replay). Its netboot effect applies at once, so a host
        whose `installed` could not be stored boots locally instead of installing again."""
        since = since_rearm(self.events(event.host, event.build, last_known=True))
        shown, disarm = callback_effect(
            since, event.kind, event.detail, disarmed=self._disarmed_or_unknown(event)
        )
        if shown is None:  # a replay of what is stored or held already
            return
        with self._pending_lock:
            if any(_same_callback(event, received) for received, _ in self._held):
                return
            self._held.append((event, replace(event, kind=shown)))
            if disarm:
                self._held_disarms.add((event.host, event.build))
                self.changes += 1
        self._wake.set()
        self._notify(replace(event, kind=shown))  # shown to readers and listeners from now on

    def rearm(self, host: str, build: int | None = None) -> None:
        """Offer the install again on the next network boot (and, given the build, record
        the rearm in its timeline) before returning; raises StoreUnavailable."""

        def store(db: Transaction) -> None:
            db.execute("UPDATE netboot SET installed_build = NULL WHERE host = ?", (host,))
            db.notify(host)
            if build is not None:
                _insert_events(db, [rearmed])

        rearmed = self._event(host, build or 0, REARMED, "", "")
        self._transaction(store)
        self._count_change()
        self._notify(rearmed if build is not None else None)

    def bind_ip(self, host: str, ip: str) -> None:
        """Remember the address that fetched the host's boot config (written in the
        background like fetch events)."""
        with self._pending_lock:
            self._pending_ips[host] = ip
        self._wake.set()

    def flush(self) -> None:
        """Write the pending events now; raises StoreUnavailable when the database refuses."""
        with self._pending_lock:
            if not (self._pending or self._pending_ips or self._held):
                return
        self._transaction(lambda db: None)

    def _transaction(self, work: Callable[[Transaction], T]) -> T:
        """One write transaction: the pending events and addresses first (so the order
        stays), then ``work``. Gives up after about ``WRITE_TIMEOUT`` seconds."""
        if not self._write_lock.acquire(timeout=WRITE_TIMEOUT):
            raise StoreUnavailable(f"{self._store.name} is busy")
        try:
            with self._pending_lock:
                events = list(self._pending)
                ips = dict(self._pending_ips)
                held = list(self._held)
            with self._store.write() as db:
                self._insert_with_held(db, events, [received for received, _ in held])
                db.executemany(
                    "INSERT INTO netboot (host, boot_ip) VALUES (?, ?) "
                    "ON CONFLICT(host) DO UPDATE SET boot_ip = excluded.boot_ip",
                    list(ips.items()),
                )
                result = work(db)
            with self._pending_lock:
                # Only this writer removes, and only from the front: new events were appended.
                del self._pending[: len(events)]
                for host, ip in ips.items():
                    if self._pending_ips.get(host) == ip:
                        del self._pending_ips[host]
                del self._held[: len(held)]
                self._held_disarms.difference_update((e.host, e.build) for e, _ in held)
            return result
        finally:
            self._write_lock.release()

    def _insert_with_held(self, db: Transaction, events: list[Event], held: list[Event]) -> None:
        """Insert pending events and store held callbacks, in the order they happened."""
        batch: list[Event] = []
        for event in sorted([*events, *held], key=lambda e: e.mono):
            if event in held:
                _insert_events(db, batch)
                batch = []
                self._store_callback(db, event)
            else:
                batch.append(event)
        _insert_events(db, batch)

    def _write_loop(self) -> None:
        failing = False
        while not self._closing.is_set():
            self._wake.wait()
            self._wake.clear()
            time.sleep(WRITE_DELAY)  # gather a burst of events into one transaction
            try:
                self.flush()
            except StoreUnavailable as exc:  # keep the events in memory, try again
                if not failing:
                    log.error(
                        "timeline: cannot write to the database (%s); keeping events in memory "
                        "and retrying every %.0f s",
                        exc,
                        RETRY_DELAY,
                    )
                failing = True
                self._wake.set()
                self._closing.wait(RETRY_DELAY)
                continue
            if failing:
                log.info("timeline: the database takes writes again; pending events stored")
                failing = False
            self._notify()

    def _count_change(self) -> None:
        with self._pending_lock:
            self.changes += 1

    def _notify(self, event: Event | None = None) -> None:
        """Wake the waiters; a newly recorded event also goes to the listeners."""
        with self._changed:
            self._changed.notify_all()
        if event is None:
            return
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a listener must never break recording
                log.exception("timeline listener failed on %s of %s", event.kind, event.host)

    def events(
        self, host: str, build: int | None = None, *, last_known: bool = False
    ) -> list[Event]:
        """The host's events (of one build, or all), oldest first (by the time they
        happened, not the order they were recorded in), stored or pending.

        Raises StoreUnavailable when the store cannot be read; with ``last_known`` the
        stored events last read instead (what a boot request goes on from).
        """
        with self._pending_lock:
            pending = [
                e
                for e in (*self._pending, *(shown for _, shown in self._held))
                if e.host == host and (build is None or e.build == build)
            ]
        # Pending first: an event committed in between is then in both, never in neither.
        key = (host, build)
        try:
            stored = _select_events(self._store.read, host, build)
        except StoreUnavailable as exc:
            if not last_known:
                raise
            if not self._read_failing:
                self._read_failing = True
                log.error("timeline: cannot read the store (%s): going on from the last read", exc)
            stored = self._known.get(key, [])
        else:
            self._read_failing = False
            self._known[key] = stored
        seen = set(stored)
        return sorted(stored + [e for e in pending if e not in seen], key=lambda e: e.wall)

    def wait_for(
        self,
        host: str,
        build: int,
        kinds: set[str],
        *,
        since: float,
        timeout: float,
        stop: threading.Event | None = None,
    ) -> Event | None:
        """The first event of one of ``kinds`` recorded at or after ``since`` (wall clock).

        Wakes at once for events recorded in this process and re-reads the database every
        half second for those another process (a separate `photonkick serve`) records.
        None on timeout or when ``stop`` is set.
        """
        deadline = self.clock.mono() + timeout
        while True:
            for event in self.events(host, build):
                if event.kind in kinds and event.wall >= since:
                    return event
            remaining = deadline - self.clock.mono()
            if remaining <= 0 or (stop is not None and stop.is_set()):
                return None
            with self._changed:
                self._changed.wait(min(remaining, 0.5))

    def is_disarmed(self, host: str, build: int) -> bool:
        """Whether this build's install ended (`installed`, or `failed` before it) and was not
        rearmed since: its network boot then answers "boot the local disk" (netboot-once)."""
        with self._pending_lock:
            if (host, build) in self._held_disarms:
                return True
        rows = self._store.read("SELECT installed_build FROM netboot WHERE host = ?", (host,))
        return bool(rows and rows[0][0] == build)

    def _disarmed_or_unknown(self, event: Event) -> bool:
        """``is_disarmed``, or False when the store cannot be read either."""
        try:
            return self.is_disarmed(event.host, event.build)
        except StoreUnavailable:
            return False

    def boot_ips(self) -> dict[str, str]:
        """Every host's boot-config address, as remembered across restarts."""
        rows = self._store.read("SELECT host, boot_ip FROM netboot WHERE boot_ip IS NOT NULL")
        with self._pending_lock:
            return {**{host: ip for host, ip in rows}, **self._pending_ips}

    def version(self) -> tuple[int, int]:
        """Differs after any netboot change, by this process or another."""
        return self._store.version(), self.changes

    def close(self) -> None:
        """Write what is pending and close the database."""
        self._closing.set()
        self._wake.set()
        self._writer.join(5)
        try:
            self.flush()
        except StoreUnavailable as exc:
            with self._pending_lock:
                lost = len(self._pending) + len(self._held)
            log.error("timeline: %d events could not be stored: %s", lost, exc)
        if self._own_store:
            with self._write_lock:
                self._store.close()


def since_rearm(events: list[Event]) -> list[Event]:
    """The events after the last rearm: the current attempt of a build."""
    rearms = [i for i, e in enumerate(events) if e.kind == REARMED]
    return events[rearms[-1] + 1 :] if rearms else events


def callback_effect(
    events: list[Event], kind: str, detail: str, *, disarmed: bool
) -> tuple[str | None, bool]:
    """What a callback does to a build whose current attempt has ``events``: the kind to
    store (None for a replay or a phase already passed) and whether to disarm netboot."""
    reached = max((PHASES.index(e.kind) for e in events if e.kind in CALLBACKS), default=-1)
    if kind == FAILED:
        stored = LATE_FAILURE if reached >= PHASES.index("ready") else FAILED
    elif PHASES.index(kind) < reached:
        return None, False
    else:
        stored = kind
    if any(e.kind == stored and _same_report(e.detail, detail) for e in events):
        return None, False
    return stored, stored == "installed" or (stored == FAILED and not disarmed)


def _same_report(stored: str, detail: str) -> bool:
    """Whether two callback details report the same thing: a failure is its reason (the
    first line); the log tail after it comes over HTTP only, not through VMware Tools."""
    return stored.split("\n", 1)[0] == detail.split("\n", 1)[0]


def _same_callback(a: Event, b: Event) -> bool:
    return (a.host, a.build, a.kind, a.detail) == (b.host, b.build, b.kind, b.detail)


def _select_events(
    query: Callable[[str, Sequence[object]], list[Row]], host: str, build: int | None
) -> list[Event]:
    """The stored events of a host (of one build, or all) through ``query`` (a read, or a
    statement of the current write transaction)."""
    sql = "SELECT host, build, kind, detail, client, wall, mono, run, server FROM events "
    sql += "WHERE host = ?"
    args: tuple[object, ...] = (host,)
    if build is not None:
        sql += " AND build = ?"
        args += (build,)
    return [Event(*row) for row in query(sql + " ORDER BY id", args)]


def _insert_events(db: Transaction, events: list[Event]) -> None:
    if not events:
        return
    db.executemany(
        "INSERT INTO events (host, build, kind, detail, client, wall, mono, run, server) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (e.host, e.build, e.kind, e.detail, e.client, e.wall, e.mono, e.run, e.server)
            for e in events
        ],
    )


def duration(start: Event, end: Event) -> float:
    """Seconds between two events: monotonic within one run, wall clock across runs."""
    if start.run == end.run:
        return end.mono - start.mono
    return end.wall - start.wall


def phase_offsets(events: list[Event]) -> dict[str, float]:
    """Seconds from the start of the build to the first event of each phase."""
    firsts: dict[str, Event] = {}
    for event in events:
        firsts.setdefault(event.kind, event)
    start = next((firsts[k] for k in START_PHASES if k in firsts), None)
    if start is None:
        return {}
    return {kind: duration(start, ev) for kind, ev in firsts.items()}


def time_to_ready(events: list[Event]) -> float | None:
    """ready minus VM created, or minus the first boot-file fetch; None until ready."""
    return phase_offsets(events).get("ready")

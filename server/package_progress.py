"""How many RPMs each host's installer fetched from photonkick, and how many bytes.

Every package an installer downloads comes from photonkick's release tree (``repos=``), so
counting them needs nothing in the guest. The repo path only notes the fetch in memory; a
background thread adds what is new to the state's ``packages`` store (``<state>/packages.db``,
or the PostgreSQL database several servers share), where every server's API, `status` and a
restarted server read it. A package name counts once per build, whichever server it was
fetched from (the store keeps the names). When a build reports ``installed`` its count becomes
the host's total, shown next to the count of the host's next install ("packages 120 of 310").
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from photonkick.server.state_dir import StateDir
from photonkick.server.store import Store, StoreUnavailable, Transaction
from photonkick.server.timeline import REARMED, Event

log = logging.getLogger("photonkick.server.packages")
STORE = "packages"
"""The state's store of the counts (``<state>/packages.db`` with SQLite)."""
WRITE_EVERY = 0.5
"""Seconds between two writes of the fetches noted."""
MIB = 1024 * 1024
NAMES_PER_READ = 500
"""Names looked up in the store by one query."""
Key = tuple[str, int]
Names = dict[str, int]
"""Package file name -> size."""


@dataclass(frozen=True)
class PackageCount:
    """RPMs fetched by one install, and the total of the host's last finished install."""

    count: int
    size: int
    total: int | None = None

    def text(self) -> str:
        """``packages N (M MiB)``, or ``packages N of T (M MiB)`` when a total is known."""
        of = f" of {self.total}" if self.total is not None else ""
        return f"packages {self.count}{of} ({self.size / MIB:.1f} MiB)"


@dataclass(frozen=True)
class _Op:
    """A change waiting for the store, in the order it happened: fetched ``names``, or the
    build ``finished`` (its count becomes the host's total) or was ``reset`` (rearmed)."""

    kind: str
    key: Key
    names: Names | None = None


Stored = tuple[int | None, int | None, int | None]
"""The stored count and size of a build (None: none stored) and its host's total."""


class PackageProgress:
    """Per-build RPM counts in the state's store. Thread-safe; ``note`` never waits for the
    database, and every read shows this server's unwritten fetches at once."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._seen: dict[Key, Names] = {}
        """Names noted here per build: a fetch again is no new count (forgotten when another
        server may have rearmed the host: the store then decides)."""
        self._pending: dict[Key, Names] = {}
        self._ops: list[_Op] = []
        self._totals: dict[str, tuple[int, int]] = {}
        """Totals of builds finished here whose finish is not written yet."""
        self._known: dict[Key, Stored] = {}
        self._flushes = 0
        self._failing = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="packages", daemon=True)
        self._writer.start()

    def note(self, host: str, build: int, name: str, size: int) -> None:
        """One RPM fetched by the host's installer (a name fetched again counts once)."""
        key = (host, build)
        with self._lock:
            seen = self._seen.setdefault(key, {})
            if name in seen:
                return
            seen[name] = size
            self._pending.setdefault(key, {})[name] = size
        self._wake.set()

    def progress(self, host: str, build: int) -> PackageCount | None:
        """The build's count so far (None before its first RPM) with the host's last total:
        the store's, with what this server has not written yet."""
        key = (host, build)
        for _ in range(3):  # a write in between would count the same fetches twice
            with self._lock:
                flushes = self._flushes
                stored_valid, unwritten = self._unwritten(key)
                total = self._totals.get(host)
            stored = self._read(key)
            if stored_valid and unwritten:
                unwritten = self._not_stored(key, unwritten)
            with self._lock:
                if flushes == self._flushes:
                    break
        base_count, base_size = (stored[0] or 0, stored[1] or 0) if stored_valid else (0, 0)
        count = base_count + len(unwritten)
        size = base_size + sum(unwritten.values())
        if count == 0:
            return None
        return PackageCount(count, size, total[0] if total else stored[2])

    def _unwritten(self, key: Key) -> tuple[bool, Names]:
        """Under the lock: whether the stored count still holds (no rearm waits to be
        written) and the names noted since that are not written yet."""
        valid, names = True, Names()
        for op in self._ops:
            if op.key != key:
                continue
            if op.kind == "reset":
                valid, names = False, Names()
            elif op.names:
                names.update(op.names)
        names.update(self._pending.get(key, {}))
        return valid, names

    def _not_stored(self, key: Key, names: Names) -> Names:
        """``names`` less those stored already (fetched from another server too), read after
        the stored count: a commit in between can only make the sum short, never too high."""
        listed = list(names)
        try:
            for start in range(0, len(listed), NAMES_PER_READ):
                batch = listed[start : start + NAMES_PER_READ]
                marks = ", ".join("?" for _ in batch)
                rows = self._store.read(
                    "SELECT name FROM package_names WHERE host = ? AND build = ? "
                    f"AND name IN ({marks})",
                    (*key, *batch),
                )
                stored = {row[0] for row in rows}
                names = {n: size for n, size in names.items() if n not in stored}
        except StoreUnavailable:
            pass
        return names

    def _read(self, key: Key) -> Stored:
        """What the store holds for the build; what was last read when it cannot be read."""
        try:
            stored = read_stored(self._store, *key)
        except StoreUnavailable:
            with self._lock:
                return self._known.get(key, (None, None, None))
        with self._lock:
            self._known[key] = stored
        return stored

    def on_event(self, event: Event) -> None:
        """Timeline listener: ``installed`` makes the count the host's total; a rearm starts
        the build's count over."""
        key = (event.host, event.build)
        if event.kind not in ("installed", REARMED):
            return
        with self._lock:
            names = self._pending.pop(key, None)
            if names:
                self._ops.append(_Op("names", key, names))
            if event.kind == REARMED:
                self._ops.append(_Op("reset", key))
                self._seen.pop(key, None)
            else:
                self._ops.append(_Op("finished", key))
                seen = self._seen.get(key)
                if seen:  # shown at once; the store's own count is written as the total
                    self._totals[event.host] = (len(seen), sum(seen.values()))
        self._wake.set()

    def forget(self, host: str) -> None:
        """State listener: another server changed the host (``""``: any host), perhaps
        rearmed it: the store, not this server's memory, says which fetches are new."""
        with self._lock:
            for key in [k for k in self._seen if host in ("", k[0])]:
                del self._seen[key]

    def flush(self) -> None:
        """Write what was noted; raises StoreUnavailable (keeping it for the next try)."""
        with self._lock:
            ops = self._ops + [_Op("names", k, n) for k, n in self._pending.items()]
            self._ops, self._pending = [], {}
        if not ops:
            return
        try:
            with self._store.write() as db:
                for op in ops:
                    _apply(db, op)
        except BaseException:
            with self._lock:  # before anything noted since, so the order stays
                self._ops = ops + self._ops
            raise
        with self._lock:
            self._flushes += 1
            waiting = {op.key[0] for op in self._ops if op.kind == "finished"}
            for host in {op.key[0] for op in ops if op.kind == "finished"} - waiting:
                self._totals.pop(host, None)  # the store has it now

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            self._stop.wait(WRITE_EVERY)
            try:
                self.flush()
            except StoreUnavailable as exc:
                if not self._failing:
                    log.error("package counts not written (%s); retrying", exc)
                self._failing = True
                self._wake.set()
                continue
            self._failing = False

    def close(self) -> None:
        """Write what was noted and stop (the store is closed with the state)."""
        self._stop.set()
        self._wake.set()
        self._writer.join(5)
        try:
            self.flush()
        except StoreUnavailable as exc:
            log.error("package counts not written: %s", exc)


def _apply(db: Transaction, op: _Op) -> None:
    """One change, within the write transaction."""
    host, build = op.key
    if op.kind == "reset":
        db.execute("DELETE FROM package_names WHERE host = ? AND build = ?", (host, build))
        db.execute("DELETE FROM package_counts WHERE host = ? AND build = ?", (host, build))
    elif op.kind == "finished":
        db.execute(
            "INSERT INTO package_totals (host, count, size) SELECT host, count, size "
            "FROM package_counts WHERE host = ? AND build = ? "
            "ON CONFLICT(host) DO UPDATE SET count = excluded.count, size = excluded.size",
            (host, build),
        )
    elif op.names:
        count = size = 0
        for name, bytes_ in op.names.items():
            if db.execute(
                "INSERT INTO package_names (host, build, name) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING RETURNING name",
                (host, build, name),
            ):
                count, size = count + 1, size + bytes_
        if count:
            db.execute(
                "INSERT INTO package_counts (host, build, count, size) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(host, build) DO UPDATE SET count = package_counts.count + "
                "excluded.count, size = package_counts.size + excluded.size",
                (host, build, count, size),
            )


def read_stored(store: Store, host: str, build: int) -> Stored:
    """The build's stored count and size and the host's total. Raises StoreUnavailable."""
    rows = store.read(
        "SELECT (SELECT count FROM package_counts WHERE host = ? AND build = ?), "
        "(SELECT size FROM package_counts WHERE host = ? AND build = ?), "
        "(SELECT count FROM package_totals WHERE host = ?)",
        (host, build, host, build, host),
    )
    count, size, total = rows[0]
    return count, size, total


def stored_progress(state: StateDir, host: str, build: int) -> PackageCount | None:
    """What the servers wrote for the build (None too when the store cannot be read)."""
    try:
        count, size, total = read_stored(state.store(STORE), host, build)
    except StoreUnavailable:
        return None
    if not count:
        return None
    return PackageCount(count, size or 0, total)

"""`photonkick state migrate --from DIR --to URL`: a state directory's SQLite state into an
empty PostgreSQL database, in one transaction (all of it arrives, or nothing)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from photonkick.kickstarts.errors import PhotonkickError
from photonkick.server.store import SECRET_FILE, Row, SqliteBackend, StoreUnavailable

TABLES: dict[str, tuple[str, str]] = {
    # table: (component whose SQLite file holds it, columns copied in this order)
    "builds": ("state", "host, build"),
    "events": ("timeline", "host, build, kind, detail, client, wall, mono, run, server"),
    "netboot": ("timeline", "host, installed_build, boot_ip"),
    "fetched": ("secrets", "host, build, client, wall"),
    "callbacks_closed": ("secrets", "host, build"),
    "install_logs": ("install-log", "host, build, boot, received, kept, wall, client, server"),
    "install_log_chunks": ("install-log", "host, build, text"),
    "package_counts": ("packages", "host, build, count, size"),
    "package_totals": ("packages", "host, count, size"),
    "package_names": ("packages", "host, build, name"),
}
"""What is moved; events and log chunks in the order they were stored, so timelines and logs
read the same."""
IN_ORDER = ("events", "install_log_chunks")


class MigrateError(PhotonkickError):
    """The migration cannot start or did not complete; nothing was changed in the target."""


@dataclass(frozen=True)
class Moved:
    """How many rows of each table were moved."""

    counts: dict[str, int]

    def summary(self) -> str:
        """One line for the user."""
        return ", ".join(f"{n} {table}" for table, n in self.counts.items())


def migrate_state(source: Path, url: str) -> Moved:
    """Copy the token secret and every table of the SQLite state in ``source`` into the
    empty PostgreSQL database at ``url``. Raises MigrateError, changing nothing, when the
    source is no state directory, the target cannot be reached or already holds state."""
    if not (source / SECRET_FILE).is_file():
        raise MigrateError(f"{source} is not a photonkick state directory (no {SECRET_FILE} file)")
    from photonkick.server.store_pg import PostgresStore

    sqlite = SqliteBackend(source)
    try:
        rows = _read_all(sqlite, source)
        secret = sqlite.secret().hex()
    finally:
        sqlite.close()
    try:
        target = PostgresStore(url)
    except StoreUnavailable as exc:
        raise MigrateError(f"cannot open the target: {exc}") from exc
    try:
        with target.write() as db:
            if db.execute("SELECT 1 FROM secret") or any(
                db.execute(f"SELECT 1 FROM {table} LIMIT 1") for table in TABLES
            ):
                raise MigrateError(
                    f"{target.name} already holds photonkick state; migrate into an empty database"
                )
            db.execute("INSERT INTO secret (id, value) VALUES (1, ?)", (secret,))
            for table, (_, columns) in TABLES.items():
                marks = ", ".join("?" for _ in columns.split(","))
                db.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows[table])
            db.notify()
    except StoreUnavailable as exc:
        raise MigrateError(f"nothing was migrated: {exc}") from exc
    finally:
        target.close()
    return Moved({table: len(found) for table, found in rows.items()})


def _read_all(sqlite: SqliteBackend, source: Path) -> dict[str, list[Row]]:
    """Every row to move, read through the SQLite store (which brings old files up to the
    current schema first, as `photonkick serve` would)."""
    rows: dict[str, list[Row]] = {}
    try:
        for table, (component, columns) in TABLES.items():
            order = " ORDER BY id" if table in IN_ORDER else ""
            rows[table] = sqlite.store(component).read(f"SELECT {columns} FROM {table}{order}")
    except StoreUnavailable as exc:
        raise MigrateError(f"cannot read the state in {source}: {exc}") from exc
    return rows

"""Every table photonkick keeps, for both backends, versioned: the one place the schema lives.

A database records the version it is at (SQLite: ``PRAGMA user_version`` of each file;
PostgreSQL: the ``schema_version`` table) and is moved forward step by step when photonkick
opens it. A database newer than this photonkick is refused rather than misread.
"""

from __future__ import annotations

import sqlite3

_EVENTS_V1 = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host TEXT NOT NULL, build INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
    client TEXT NOT NULL, wall REAL NOT NULL, mono REAL NOT NULL, run TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_host ON events (host, build);
CREATE TABLE IF NOT EXISTS netboot (
    host TEXT PRIMARY KEY, installed_build INTEGER, boot_ip TEXT
);
"""
_SERVER_COLUMN = "ALTER TABLE events ADD COLUMN server TEXT NOT NULL DEFAULT ''"
_INSTALL_LOG_V1 = """
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
_PACKAGES_V1 = """
CREATE TABLE IF NOT EXISTS counts (
    host TEXT NOT NULL, build INTEGER NOT NULL, count INTEGER NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (host, build)
);
CREATE TABLE IF NOT EXISTS totals (
    host TEXT PRIMARY KEY, count INTEGER NOT NULL, size INTEGER NOT NULL
);
"""

SQLITE_MIGRATIONS: dict[str, tuple[str, ...]] = {
    "state": ("CREATE TABLE IF NOT EXISTS builds (host TEXT PRIMARY KEY, build INTEGER NOT NULL)",),
    "timeline": (_EVENTS_V1, _SERVER_COLUMN),
    "secrets": (
        """
        CREATE TABLE IF NOT EXISTS fetched (
            host TEXT NOT NULL, build INTEGER NOT NULL, client TEXT NOT NULL,
            wall REAL NOT NULL, PRIMARY KEY (host, build)
        );
        CREATE TABLE IF NOT EXISTS callbacks_closed (
            host TEXT NOT NULL, build INTEGER NOT NULL, PRIMARY KEY (host, build)
        );
        """,
    ),
    # Written before versions were recorded (step 1 finds its tables there already); step 2
    # gives the tables the names they have in PostgreSQL's one namespace.
    "install-log": (
        _INSTALL_LOG_V1,
        """
        ALTER TABLE logs RENAME TO install_logs;
        ALTER TABLE install_logs ADD COLUMN server TEXT NOT NULL DEFAULT '';
        ALTER TABLE chunks RENAME TO install_log_chunks
        """,
    ),
    "packages": (
        _PACKAGES_V1,
        """
        ALTER TABLE counts RENAME TO package_counts;
        ALTER TABLE totals RENAME TO package_totals;
        CREATE TABLE package_names (
            host TEXT NOT NULL, build INTEGER NOT NULL, name TEXT NOT NULL,
            PRIMARY KEY (host, build, name)
        )
        """,
    ),
}
"""Per SQLite file (by its name without ``.db``): step N brings user_version N-1 to N."""

POSTGRESQL_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE secret (id INTEGER PRIMARY KEY CHECK (id = 1), value TEXT NOT NULL);
    CREATE TABLE builds (host TEXT PRIMARY KEY, build INTEGER NOT NULL);
    CREATE TABLE events (
        id BIGSERIAL PRIMARY KEY,
        host TEXT NOT NULL, build INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
        client TEXT NOT NULL, wall DOUBLE PRECISION NOT NULL, mono DOUBLE PRECISION NOT NULL,
        run TEXT NOT NULL, server TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_host ON events (host, build);
    CREATE TABLE netboot (host TEXT PRIMARY KEY, installed_build INTEGER, boot_ip TEXT);
    CREATE TABLE fetched (
        host TEXT NOT NULL, build INTEGER NOT NULL, client TEXT NOT NULL,
        wall DOUBLE PRECISION NOT NULL, PRIMARY KEY (host, build)
    );
    CREATE TABLE callbacks_closed (
        host TEXT NOT NULL, build INTEGER NOT NULL, PRIMARY KEY (host, build)
    );
    """,
    """
    CREATE TABLE install_logs (
        host TEXT NOT NULL, build INTEGER NOT NULL, boot TEXT NOT NULL, received BIGINT NOT NULL,
        kept BIGINT NOT NULL, wall DOUBLE PRECISION NOT NULL, client TEXT NOT NULL,
        server TEXT NOT NULL DEFAULT '', PRIMARY KEY (host, build)
    );
    CREATE TABLE install_log_chunks (
        id BIGSERIAL PRIMARY KEY, host TEXT NOT NULL, build INTEGER NOT NULL, text TEXT NOT NULL
    );
    CREATE INDEX install_log_chunks_build ON install_log_chunks (host, build);
    CREATE TABLE package_counts (
        host TEXT NOT NULL, build INTEGER NOT NULL, count BIGINT NOT NULL, size BIGINT NOT NULL,
        PRIMARY KEY (host, build)
    );
    CREATE TABLE package_totals (
        host TEXT PRIMARY KEY, count BIGINT NOT NULL, size BIGINT NOT NULL
    );
    CREATE TABLE package_names (
        host TEXT NOT NULL, build INTEGER NOT NULL, name TEXT NOT NULL,
        PRIMARY KEY (host, build, name)
    );
    """,
)
"""Step N brings a PostgreSQL database from schema_version N-1 to N."""

POSTGRESQL_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"


class SchemaTooNew(Exception):
    """The database was written by a newer photonkick."""


def migrate_sqlite(db: sqlite3.Connection, component: str) -> None:
    """Bring one SQLite file (autocommit connection) to the newest version of its schema."""
    steps = SQLITE_MIGRATIONS[component]
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(steps):
            raise SchemaTooNew(
                f"schema version {version} is newer than this photonkick ({len(steps)})"
            )
        if version == 0 and component == "timeline" and _has_table(db, "events"):
            version = 1  # written before versions were recorded
        for number, step in enumerate(steps[version:], start=version + 1):
            for statement in _statements(step):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return row.fetchone() is not None


def _statements(script: str) -> list[str]:
    """The statements of a migration step (none of them contains a ``;`` of its own)."""
    return [s.strip() for s in script.split(";") if s.strip()]


def postgresql_steps(current: int) -> list[tuple[int, list[str]]]:
    """The steps that bring a PostgreSQL database at ``current`` to the newest version."""
    if current > len(POSTGRESQL_MIGRATIONS):
        raise SchemaTooNew(
            f"schema version {current} is newer than this photonkick ({len(POSTGRESQL_MIGRATIONS)})"
        )
    return [
        (number, _statements(step))
        for number, step in enumerate(POSTGRESQL_MIGRATIONS[current:], start=current + 1)
    ]

"""`photonkick state migrate`: a SQLite state directory into PostgreSQL, whole, and only into an
empty database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from serve_process import ServeProcess

from photonkick.server.package_progress import STORE as PACKAGES
from photonkick.server.package_progress import PackageCount, PackageProgress, stored_progress
from photonkick.server.secrets_gate import STORE, Fetch, SecretsLedger
from photonkick.server.state_dir import StateDir
from photonkick.server.timeline import Timeline

PHOTONKICK = str(Path(sys.executable).parent / "photonkick")


def fill(folder: Path) -> None:
    """A state directory with builds, timelines, netboot-once and the secrets ledger."""
    state = StateDir(folder)
    state.next_build("web01")
    timeline = Timeline(state.store("timeline"), server_id="old")
    for i in range(50):
        timeline.record("db01", 1, "config", f"fetch {i}", "192.0.2.7")
    timeline.bind_ip("db01", "192.0.2.7")
    timeline.record_callback("db01", 1, "installed")
    timeline.record_callback("web01", 2, "failed", "line 9")
    timeline.rearm("web01", 2)
    timeline.close()
    ledger = SecretsLedger(state.store(STORE))
    assert ledger.claim("db01", 1, "192.0.2.7", 1000.0) is None
    ledger.close_callbacks("db01", 1)
    with state.store("install-log").write() as db:  # what a shipped log leaves
        db.execute(
            "INSERT INTO install_logs (host, build, boot, received, kept, wall, client, server) "
            "VALUES ('db01', 1, 'b1', 12, 12, 1000.0, '192.0.2.7', 'old')"
        )
        db.executemany(
            "INSERT INTO install_log_chunks (host, build, text) VALUES ('db01', 1, ?)",
            [("one\n",), ("two\n",), ("three\n",)],
        )
    packages = PackageProgress(state.store(PACKAGES))
    packages.note("db01", 1, "bash.rpm", 300)
    packages.note("db01", 1, "curl.rpm", 200)
    packages.close()
    state.close()


def migrate(source: Path, url: str) -> subprocess.CompletedProcess[str]:
    command = [PHOTONKICK, "state", "migrate", "--from", str(source), "--to", url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_migrate_moves_everything_and_reads_the_same(tmp_path: Path, pg_url: str) -> None:
    source = tmp_path / "state"
    fill(source)
    before = StateDir(source)
    old = Timeline(before.store("timeline"))
    expected = {h: old.events(h) for h in ("db01", "web01")}
    done = migrate(source, pg_url)
    assert done.returncode == 0, done.stderr
    assert (
        "1 builds, 53 events, 2 netboot, 1 fetched, 1 callbacks_closed, 1 install_logs, "
        "3 install_log_chunks, 1 package_counts, 0 package_totals, 2 package_names"
    ) in done.stdout

    after = StateDir(tmp_path / "elsewhere", pg_url)
    new = Timeline(after.store("timeline"))
    try:
        assert after.secret == before.secret  # every token issued before stays valid
        assert after.build("web01").build == 2 and after.build("db01").build == 1
        assert {h: new.events(h) for h in expected} == expected
        assert new.is_disarmed("db01", 1) and not new.is_disarmed("web01", 2)
        assert new.boot_ips() == {"db01": "192.0.2.7"}
        ledger = SecretsLedger(after.store(STORE))
        assert ledger.claim("db01", 1, "192.0.2.99", 2000.0) == Fetch("192.0.2.7", 1000.0)
        assert ledger.callbacks_closed("db01", 1)
        chunks = after.store("install-log").read("SELECT text FROM install_log_chunks ORDER BY id")
        assert "".join(row[0] for row in chunks) == "one\ntwo\nthree\n"
        assert stored_progress(after, "db01", 1) == PackageCount(2, 500)
        # The migrated store goes on: the next build follows the migrated one.
        assert after.next_build("web01").build == 3
    finally:
        new.close()
        after.close()
        old.close()
        before.close()


def test_migrate_refuses_a_database_that_holds_state(tmp_path: Path, pg_url: str) -> None:
    source = tmp_path / "state"
    fill(source)
    StateDir(tmp_path / "server", pg_url).close()  # a server already started on it
    refused = migrate(source, pg_url)
    assert refused.returncode == 1
    assert "already holds photonkick state; migrate into an empty database" in refused.stderr
    state = StateDir(tmp_path / "server", pg_url)
    assert state.build("web01").build == 1  # nothing was changed
    state.close()


def test_migrate_refuses_a_folder_that_is_no_state(tmp_path: Path, pg_url: str) -> None:
    refused = migrate(tmp_path, pg_url)
    assert refused.returncode == 1
    assert f"{tmp_path} is not a photonkick state directory (no secret file)" in refused.stderr
    assert not (tmp_path / "secret").exists()


OLD_TIMELINE = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host TEXT NOT NULL, build INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
    client TEXT NOT NULL, wall REAL NOT NULL, mono REAL NOT NULL, run TEXT NOT NULL
);
CREATE INDEX events_host ON events (host, build);
CREATE TABLE netboot (host TEXT PRIMARY KEY, installed_build INTEGER, boot_ip TEXT);
INSERT INTO events (host, build, kind, detail, client, wall, mono, run)
    VALUES ('db01', 1, 'installed', '', '192.0.2.7', 1.0, 1.0, 'oldrun');
INSERT INTO netboot (host, installed_build) VALUES ('db01', 1);
"""


def test_a_timeline_written_before_schema_versions_is_upgraded_in_place(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "timeline.db")) as db:
        db.executescript(OLD_TIMELINE)
    timeline = Timeline(tmp_path / "timeline.db", server_id="new")
    assert [(e.kind, e.server) for e in timeline.events("db01")] == [("installed", "")]
    assert timeline.is_disarmed("db01", 1)
    assert timeline.record_callback("db01", 1, "ready") is not None
    timeline.close()
    with closing(sqlite3.connect(tmp_path / "timeline.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        rows = db.execute("SELECT kind, server FROM events ORDER BY id").fetchall()
    assert rows == [("installed", ""), ("ready", "new")]


OLD_INSTALL_LOG = """
CREATE TABLE logs (
    host TEXT NOT NULL, build INTEGER NOT NULL, boot TEXT NOT NULL, received INTEGER NOT NULL,
    kept INTEGER NOT NULL, wall REAL NOT NULL, client TEXT NOT NULL,
    PRIMARY KEY (host, build)
);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL, build INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX chunks_build ON chunks (host, build);
INSERT INTO logs VALUES ('h00', 1, 'b1', 24, 24, 1000.0, '127.0.0.1');
INSERT INTO chunks (host, build, text) VALUES ('h00', 1, 'old line one' || char(10));
INSERT INTO chunks (host, build, text) VALUES ('h00', 1, 'old line two' || char(10));
"""
OLD_PACKAGES = """
CREATE TABLE counts (
    host TEXT NOT NULL, build INTEGER NOT NULL, count INTEGER NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (host, build)
);
CREATE TABLE totals (host TEXT PRIMARY KEY, count INTEGER NOT NULL, size INTEGER NOT NULL);
INSERT INTO counts VALUES ('h00', 1, 120, 125829120);
INSERT INTO totals VALUES ('h00', 310, 325058560);
"""


def test_install_logs_and_package_counts_of_an_older_photonkick_keep_working(
    tmp_path: Path,
) -> None:
    """A state directory whose install-log.db and packages.db an older photonkick wrote (their
    own tables, no schema version): `serve` upgrades them in place and shows what they hold,
    and goes on adding to it."""
    state = tmp_path / "state"
    state.mkdir()
    for name, script in (("install-log.db", OLD_INSTALL_LOG), ("packages.db", OLD_PACKAGES)):
        with closing(sqlite3.connect(state / name)) as db:
            db.executescript(script)
    serve = ServeProcess(tmp_path, 1, state, tmp_path / "data")
    serve.start()
    try:
        path = f"/cb/h00/{serve.token('h00')}/log?boot=b1&offset=24"
        assert serve.request("POST", path, b"new line three\n")[0] == 200
        status, _, body = serve.request("GET", "/api/v1/hosts/h00")
        assert status == 200
        found = json.loads(body)
        assert found["log_tail"] == "old line one\nold line two\nnew line three"
        assert found["packages"] == {"count": 120, "size": 125829120, "total": 310}
    finally:
        serve.stop()
    for name in ("install-log.db", "packages.db"):
        with closing(sqlite3.connect(state / name)) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == 2

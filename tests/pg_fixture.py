"""A throwaway PostgreSQL cluster from Debian's ``postgresql`` package, as pytest fixtures.

The session fixture runs ``initdb`` and ``pg_ctl`` (from /usr/lib/postgresql/*/bin) as the
unprivileged user ``nobody`` in a temporary directory, listening on 127.0.0.1 at a free port
and on a unix socket in that directory. Each test gets a database of its own. Where
PostgreSQL is absent the tests skip and say why; ``PHOTONKICK_PG_REQUIRED=1`` (CI) makes that
a failure.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ports import free_port

DEBIAN_PACKAGE = "postgresql"
USER = "nobody"


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("PHOTONKICK_PG_REQUIRED") == "1":
        pytest.fail(f"PostgreSQL tier required: {reason}")
    pytest.skip(f"PostgreSQL tier: {reason} (apt-get install {DEBIAN_PACKAGE})")


class PgCluster:
    """A running cluster; ``url(db)`` is a connection URL, ``stop``/``start`` control it."""

    def __init__(self, bindir: Path, folder: Path, port: int, fsync: bool = False) -> None:
        """``fsync`` off (the tests' default): PostgreSQL's own crash safety is not what the
        tests check (they kill photonkick, and stop PostgreSQL cleanly), and a commit then
        costs no disk flush on a shared test machine."""
        self.fsync = fsync
        self.bindir = bindir
        self.folder = folder
        self.data = folder / "data"
        self.port = port

    def _as_user(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", USER, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        """initdb, owned by the unprivileged user."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, USER)
        self._as_user(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def start(self) -> None:
        """pg_ctl start, waiting until it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        if not self.fsync:
            options += " -c fsync=off"
        self._as_user(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self) -> None:
        """pg_ctl stop -m fast: connections are cut at once."""
        self._as_user(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")

    def kill(self) -> None:
        """pg_ctl stop -m immediate, whatever state the cluster is in."""
        self._as_user(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-m",
            "immediate",
            "stop",
            check=False,
        )

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A fresh database; its URL."""
        name = "t" + uuid.uuid4().hex[:12]
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}".encode())
        return self.url(name)


def find_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One cluster for the session (started here, stopped at the end)."""
    bindir = find_bindir()
    if bindir is None:
        _skip_or_fail("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _skip_or_fail("the psycopg module is not installed (bash .ci/setup --test)")
    assert bindir is not None
    folder = Path(tempfile.mkdtemp(prefix="photonkick-pg-"))
    os.chmod(folder, 0o755)
    cluster = PgCluster(bindir, folder / "cluster", free_port())
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.kill()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """A fresh, empty database of the session's cluster."""
    return pg_cluster.create_database()


def wait_until_ready(cluster: PgCluster, timeout: float = 30) -> None:
    """Wait until the cluster accepts connections again."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(cluster.url(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

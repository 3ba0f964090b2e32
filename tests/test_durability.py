"""Faults against a real `photonkick serve` process: kill -9 after each acknowledged callback,
another process holding the database's write lock, a full file system, a state directory that
cannot be written, and a build started by another process."""

from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from serve_process import ServeProcess, config_name

from photonkick.server.state_dir import StateDir
from photonkick.server.timeline import Timeline

TRIALS = 30
REARM_TRIALS = 5
FAST = 2.0
"""Seconds within which a fetch must answer while the database is locked or full (the lock is
held far longer, so a fetch that waited for it could not answer in time)."""
LOCKER = """
import select, sqlite3, sys
dbs = [sqlite3.connect(path, isolation_level=None) for path in sys.argv[1:]]
for db in dbs:
    db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
select.select([sys.stdin], [], [], 60)  # held until the test closes stdin
for db in dbs:
    db.execute("ROLLBACK")
"""


def serve_process(tmp_path: Path, state_url: str | None = None) -> ServeProcess:
    data = tmp_path / "releases"
    (data / "5.0" / "isolinux").mkdir(parents=True)
    (data / "5.0" / "isolinux" / "small.bin").write_bytes(os.urandom(4096))
    return ServeProcess(tmp_path, TRIALS, tmp_path / "state", data, state_url=state_url)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    server = serve_process(tmp_path)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_serve(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServeProcess]:
    """`photonkick serve` with its state in SQLite, or in a fresh PostgreSQL database."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    server = serve_process(tmp_path, url)
    yield server
    server.stop()


def host_json(serve: ServeProcess, name: str) -> dict[str, object]:
    status, _, body = serve.request("GET", f"/api/v1/hosts/{name}")
    assert status == 200, body
    found: dict[str, object] = json.loads(body)
    return found


def test_acknowledged_callbacks_survive_kill_9(any_serve: ServeProcess) -> None:
    """Each 200 is followed at once by SIGKILL; after a restart the API and the boot config
    both show the callback (and each rearm) every time."""
    serve = any_serve
    lost: list[str] = []
    for i in range(TRIALS + REARM_TRIALS):
        serve.start()
        if i > 0:
            lost += check_stored(serve, i - 1)
        if i < TRIALS:
            status, _ = serve.callback(f"h{i:02d}", "installed")
        else:
            status, _, _ = serve.request("POST", f"/api/v1/hosts/h{i - TRIALS:02d}/rearm")
        assert status == 200
        serve.kill9()
    serve.start()
    lost += check_stored(serve, TRIALS + REARM_TRIALS - 1)
    print(f"kill -9 trials: {TRIALS} callbacks, {REARM_TRIALS} rearms, {len(lost)} lost")
    assert lost == []


def check_stored(serve: ServeProcess, trial: int) -> list[str]:
    """What trial ``trial`` of the kill -9 test lost (nothing, when it was stored)."""
    if trial < TRIALS:
        host, phase, boots = trial, "installed", b"LOCALBOOT 0"
    else:
        host, phase, boots = trial - TRIALS, "waiting", b"DEFAULT install"
    name = f"h{host:02d}"
    shown = host_json(serve, name)["phase"]
    config = serve.tftp(config_name(host))
    return [] if shown == phase and boots in config else [f"{name}: {shown}"]


@contextmanager
def write_lock(*databases: Path) -> Iterator[None]:
    """Another process holds BEGIN EXCLUSIVE on the databases until the block ends."""
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, *map(str, databases)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert locker.stdout is not None and locker.stdin is not None
    try:
        assert locker.stdout.readline().strip() == "locked"
        yield
    finally:
        locker.stdin.close()
        locker.wait(15)
    assert locker.returncode == 0


def kickstart_path(config: bytes) -> str:
    """The kickstart URL path on a boot config's ``ks=``."""
    found = re.search(rb"ks=http://127\.0\.0\.1:\d+(/ks/\S+\.json)", config)
    assert found, config
    return found.group(1).decode()


def timed_tftp(serve: ServeProcess, name: str, source: str) -> tuple[bytes, float]:
    start = time.monotonic()
    content = serve.tftp(name, source)
    return content, time.monotonic() - start


def check_serving_while_sick(serve: ServeProcess, host: int, source: str) -> None:
    """Boot files, boot configs for a new address and the kickstart come from memory; the
    callback answers 503 with Retry-After; the API, dashboard and metrics answer and show the
    fetches that wait in memory."""
    name = f"h{host:02d}"
    small = serve.data / "5.0" / "isolinux" / "small.bin"
    content, took = timed_tftp(serve, "releases/5.0/isolinux/small.bin", source)
    assert content == small.read_bytes() and took < FAST, took
    config, took = timed_tftp(serve, config_name(host), source)
    assert b"DEFAULT install" in config and took < FAST, took
    status, _, body = serve.request("GET", kickstart_path(config))
    assert status == 200 and json.loads(body)["hostname"] == name
    # The one-time secrets cannot be spent while they cannot be recorded: 503, try again.
    status, headers, _ = serve.request("GET", serve.secrets_path(name))
    assert status == 503 and headers["Retry-After"].isdigit(), status
    for _ in range(3):  # the host's curl retries
        status, headers = serve.callback(name, "installed")
        assert status == 503 and headers["Retry-After"].isdigit(), status
    for page in ("/api/v1/hosts", "/metrics", "/"):
        assert serve.request("GET", page)[0] == 200, page
    # Held in memory meanwhile: shown, and the host boots locally rather than reinstalling.
    assert host_json(serve, name)["phase"] == "installed"
    assert b"LOCALBOOT 0" in serve.tftp(config_name(host), source)


def check_recovered(serve: ServeProcess, host: int, source: str) -> None:
    """The retried callback is stored; after kill -9 and a restart the fetches made while the
    database was sick are there too, and the failure was logged once, not per retry."""
    name = f"h{host:02d}"
    assert serve.callback(name, "installed")[0] == 200
    serve.kill9()
    serve.start()
    assert host_json(serve, name)["phase"] == "local_boot"  # installed, then booted locally
    status, _, body = serve.request("GET", f"/api/v1/hosts/{name}")
    kinds = [(e["kind"], e["client"]) for e in json.loads(body)["events"]]
    assert ("config", source) in kinds and ("kickstart", "127.0.0.1") in kinds, kinds
    assert [kind for kind, _ in kinds].count("installed") == 1, kinds
    assert b"LOCALBOOT 0" in serve.tftp(config_name(host), source)
    logged = serve.log_text()
    assert logged.count(f"{name}: installed not stored") == 1, logged
    assert logged.count("timeline: cannot write to the database") == 1, logged


@contextmanager
def locked(serve: ServeProcess) -> Iterator[None]:
    """Another process holds the write lock of the server's store until the block ends."""
    if serve.state_url is None:
        with write_lock(*(serve.state / db for db in ("timeline.db", "state.db", "secrets.db"))):
            yield
        return
    import psycopg

    from photonkick.server.store_pg import WRITE_LOCK

    with psycopg.connect(serve.state_url, autocommit=True) as locker:
        locker.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
        yield


def test_a_write_locked_database_does_not_stop_booting(any_serve: ServeProcess) -> None:
    serve = any_serve
    serve.start()
    assert serve.callback("h00", "installed")[0] == 200
    with locked(serve):
        check_serving_while_sick(serve, 1, "127.0.0.2")
        assert serve.callback("h03", "installed")[0] == 503  # and this host gives up
    # What was refused is stored by the server itself once the database takes writes again.
    deadline = time.monotonic() + 15
    while stored_kinds(serve, "h03") != ["installed"]:
        assert time.monotonic() < deadline, "a refused callback was never stored"
        time.sleep(0.2)
    check_recovered(serve, 1, "127.0.0.2")


def stored_kinds(serve: ServeProcess, host: str) -> list[str]:
    """The host's event kinds as the database has them (not what the server holds)."""
    query = "SELECT kind FROM events WHERE host = ? ORDER BY id"
    if serve.state_url is not None:
        import psycopg

        with psycopg.connect(serve.state_url) as conn:
            return [kind for (kind,) in conn.execute(query.replace("?", "%s"), (host,))]
    with closing(sqlite3.connect(serve.state / "timeline.db")) as db:
        return [kind for (kind,) in db.execute(query, (host,))]


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the tests as root)")


@contextmanager
def tmpfs(path: Path, *options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` for the block."""
    need_root()
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(folder: Path) -> Path:
    """Write a file into ``folder`` until its file system has no block left."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_full_file_system_does_not_stop_booting(serve: ServeProcess) -> None:
    with tmpfs(serve.state, "size=32m", "mode=0700"):
        serve.start()
        assert serve.callback("h00", "installed")[0] == 200
        filler = fill(serve.state)
        check_serving_while_sick(serve, 1, "127.0.0.2")
        # The kickstart's own reporting command retries a 503 until the disk has room again.
        report = pk_report(serve, 2)
        curl = subprocess.Popen(["bash", "-c", f"{report}\npk_report installed"])
        time.sleep(4)
        assert curl.poll() is None  # still retrying
        filler.unlink()
        assert curl.wait(60) == 0
        check_recovered(serve, 1, "127.0.0.2")
        assert host_json(serve, "h02")["phase"] == "installed"


def pk_report(serve: ServeProcess, host: int) -> str:
    """The callback function of the host's real postinstall script."""
    config = serve.tftp(config_name(host))
    status, _, body = serve.request("GET", kickstart_path(config))
    assert status == 200
    lines = "\n".join(json.loads(body)["postinstall"]).splitlines()
    found = [line for line in lines if line.startswith("pk_report()")]
    assert found, lines
    return found[0]  # the postinstall's own (the first-boot script it writes has another)


def test_serve_refuses_a_read_only_state_directory(serve: ServeProcess) -> None:
    """An existing state on a read-only mount: one clear line, exit 1, nothing served."""
    StateDir(serve.state).close()
    Timeline(serve.state / "timeline.db").close()
    before = sorted((p.name, p.stat().st_size) for p in serve.state.iterdir())
    need_root()
    bound = subprocess.run(["mount", "--bind", str(serve.state), str(serve.state)])
    if bound.returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(serve.state)], check=True)
        result = subprocess.run(serve.command(), capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(["umount", str(serve.state)], check=True)
    assert refusal(result) == (
        f"photonkick: the state directory {serve.state} is not writable: Read-only file system"
    )
    assert "photonkick serving" not in result.stdout
    assert sorted((p.name, p.stat().st_size) for p in serve.state.iterdir()) == before


def test_serve_refuses_a_read_only_database() -> None:
    """The databases belong to root, the server runs as nobody: refused at start."""
    need_root()
    nobody = 65534
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        root.chmod(0o755)  # let the unprivileged server reach the spec and its state
        serve = ServeProcess(root, 1, root / "state", root / "releases")
        StateDir(serve.state).close()
        Timeline(serve.state / "timeline.db").close()
        for path in [serve.state, *serve.state.iterdir()]:
            if not path.name.startswith("timeline.db"):
                os.chown(path, nobody, nobody)
        result = subprocess.run(
            ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups"]
            + serve.command(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    line = refusal(result)
    assert line.startswith(f"photonkick: the state directory {serve.state} is not writable: ")
    assert "readonly database" in line


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a serve that refused to start (spec warnings aside)."""
    assert result.returncode == 1, result.stderr
    lines = [x for x in result.stderr.splitlines() if x and not x.startswith("warning: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_build_started_by_another_process_is_served_at_once(serve: ServeProcess) -> None:
    """`up` in its own process starts a new build and rearms: the very next boot-config fetch
    from the running server offers the install with the new token (no cache delay)."""
    serve.start()
    state = StateDir(serve.state)
    timeline = Timeline(serve.state / "timeline.db")
    try:
        for build in range(1, 11):
            assert serve.callback("h00", "installed", build=build)[0] == 200
            assert b"LOCALBOOT 0" in serve.tftp(config_name(0))  # cached as installed
            assert state.next_build("h00").build == build + 1
            timeline.rearm("h00")
            config = serve.tftp(config_name(0))
            assert b"DEFAULT install" in config, build
            kickstart = f"/ks/h00/{serve.token('h00', build + 1)}.json"
            assert kickstart.encode() in config
            assert serve.request("GET", kickstart)[0] == 200
    finally:
        timeline.close()
        state.close()


def test_replayed_and_late_callbacks_over_http(serve: ServeProcess) -> None:
    """Every replay is answered 200 and stored once; after `ready` the build's callbacks are
    closed but for a retried `ready`, so a late `failed` changes nothing: the host stays ready
    and boots locally."""
    serve.start()
    for event in ("installed", "installed", "firstboot", "installed", "firstboot", "ready"):
        assert serve.callback("h00", event)[0] == 200, event
    assert serve.callback("h00", "ready")[0] == 200
    for event in ("installed", "failed"):
        assert serve.callback("h00", event, b"reason=replayed+or+forged")[0] == 403, event
    shown = host_json(serve, "h00")
    assert shown["phase"] == "ready" and shown["failed"] is None, shown
    status, _, body = serve.request("GET", "/api/v1/hosts/h00")
    kinds = [e["kind"] for e in json.loads(body)["events"]]
    assert kinds == ["installed", "firstboot", "ready"]
    assert b"LOCALBOOT 0" in serve.tftp(config_name(0))
    status, _, metrics = serve.request("GET", "/metrics")
    assert b'photonkick_host_failed{host="h00"} 0' in metrics

"""`photonkick serve` started while its PostgreSQL state is unreachable: it boots hosts from
what it last read (before its restart), tells hosts it knows nothing about to boot their local
disk, answers callbacks 503 at once, and catches up by itself once the database is back."""

from __future__ import annotations

import json
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_fixture import PgCluster, wait_until_ready
from serve_process import ServeProcess, config_name

from photonkick.server.last_known import FILE as LAST_KNOWN
from photonkick.server.last_known import LastKnown

INSTALL = b"DEFAULT install"
LOCAL = b"LOCALBOOT 0"
UNKNOWN = b"the state database cannot be read"
KERNEL = b"K" * 100_000
ANSWER_WITHIN = 3.0
"""Seconds any request may take while the database is unreachable."""


def releases(tmp_path: Path) -> Path:
    """An imported release with a (fake, small) kernel and initrd."""
    isolinux = tmp_path / "releases" / "5.0" / "isolinux"
    isolinux.mkdir(parents=True)
    (isolinux / "vmlinuz").write_bytes(KERNEL)
    (isolinux / "initrd.img").write_bytes(b"I" * 50_000)
    return tmp_path / "releases"


def timed(call: object) -> tuple[object, float]:
    """What ``call()`` returned and the seconds it took."""
    assert callable(call)
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def test_serve_started_with_the_database_down_boots_and_catches_up(
    tmp_path: Path, pg_url: str, pg_cluster: PgCluster
) -> None:
    serve = ServeProcess(tmp_path, 3, tmp_path / "state", releases(tmp_path), state_url=pg_url)
    serve.start()
    try:
        serve.secret()
        assert INSTALL in serve.tftp(config_name(0))  # h00 read while the database is up
        assert serve.callback("h02", "installed")[0] == 200  # h02 installed: local boot
        assert LOCAL in serve.tftp(config_name(2))
    finally:
        serve.stop()
    known = serve.state / LAST_KNOWN
    assert stat.S_IMODE(known.stat().st_mode) == 0o600  # it holds the token secret
    assert set(json.loads(known.read_text())["hosts"]) == {"h00", "h02"}

    pg_cluster.stop()
    try:
        _, took = timed(serve.start)
        print(f"serve started with the database down in {took:.2f} s")
        assert took < 10
        log = serve.log_text()
        assert "refused; serving without it" in log, log
        assert "boot configs and kickstarts of 2 of 3 hosts" in log

        # Booting: configs, loaders' files, kernel and initrd, the kickstart of an armed host.
        assert INSTALL in serve.tftp(config_name(0))
        assert LOCAL in serve.tftp(config_name(2))  # its install ended: never again
        unknown = serve.tftp(config_name(1))  # never read: netboot-once unknown
        assert LOCAL in unknown and UNKNOWN in unknown
        ipxe = serve.request("GET", "/ipxe/00-50-56-00-30-00.ipxe")
        assert ipxe[0] == 200 and b"kernel" in ipxe[2]
        assert serve.request("GET", "/releases/5.0/isolinux/vmlinuz")[2] == KERNEL
        assert serve.tftp("releases/5.0/isolinux/initrd.img") == b"I" * 50_000
        (status, _, body), took = timed(
            lambda: serve.request("GET", f"/ks/h00/{serve.token('h00')}.json")
        )
        assert status == 200 and json.loads(body)["hostname"] == "h00"
        assert took < ANSWER_WITHIN
        assert serve.request("GET", f"/ks/h01/{serve.token('h01')}.json")[0] == 503

        # Nothing that must be stored is acknowledged; the API and dashboard say why.
        (status, headers), took = timed(lambda: serve.callback("h00", "installed"))
        print(f"callback with the database down: {status} in {took * 1000:.0f} ms")
        assert status == 503 and headers["Retry-After"].isdigit()
        assert took < ANSWER_WITHIN
        api = serve.request("GET", "/api/v1/hosts")
        assert api[0] == 503 and json.loads(api[2])["error"] == "the state database is unavailable"
        assert serve.request("GET", "/")[0] == 503
        assert serve.request("GET", "/metrics")[0] == 503
    finally:
        pg_cluster.start()
    wait_until_ready(pg_cluster)

    # Back by itself: the callback the host retries is stored and seen everywhere.
    back = time.monotonic()
    while serve.callback("h00", "installed")[0] != 200:
        assert time.monotonic() - back < 30, serve.log_text()
        time.sleep(0.2)
    print(f"callback stored {time.monotonic() - back:.2f} s after the database was back")
    status, _, body = serve.request("GET", "/api/v1/hosts/h00")
    assert status == 200
    found = json.loads(body)
    assert "installed" in [e["kind"] for e in found["events"]]
    assert LOCAL in serve.tftp(config_name(0))
    assert INSTALL in serve.tftp(config_name(1))  # read now: armed
    log = serve.log_text()
    assert "reachable again" in log
    assert "Traceback" not in log
    serve.stop()


@pytest.fixture
def silent_database() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung database host)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield sock.getsockname()[1]


def test_a_silent_database_never_holds_a_boot_request(tmp_path: Path, silent_database: int) -> None:
    url = f"postgresql://photonkick@127.0.0.1:{silent_database}/photonkick"
    serve = ServeProcess(tmp_path, 1, tmp_path / "state", releases(tmp_path), state_url=url)
    _, took = timed(serve.start)
    print(f"serve started with a silent database in {took:.2f} s")
    try:
        assert took < 10
        assert "connection timeout expired; serving without it" in serve.log_text()
        slowest = 0.0
        deadline = time.monotonic() + 6  # two of the background reconnect attempts
        while time.monotonic() < deadline:
            config, took = timed(lambda: serve.tftp(config_name(0)))
            assert isinstance(config, bytes) and UNKNOWN in config
            slowest = max(slowest, took)
            (status, _, _), took = timed(lambda: serve.request("POST", "/cb/h00/x/installed"))
            assert status == 503
            slowest = max(slowest, took)
            (status, _, _), took = timed(lambda: serve.request("GET", "/ks/h00/x.json"))
            assert status == 503
            slowest = max(slowest, took)
        print(f"slowest answer with a silent database: {slowest * 1000:.0f} ms")
        assert slowest < 1.0
        assert "Traceback" not in serve.log_text()
    finally:
        serve.stop()


def test_last_known_is_kept_per_database_and_confirmed_at_the_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / LAST_KNOWN
    known = LastKnown(path, "PostgreSQL database a on db:5432")
    known.remember_secret(b"s" * 32)
    known.remember("h00", 2, False)
    known.confirm = lambda: known.remember("h01", 1, True)  # what a server still knows
    known.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = LastKnown(path, "PostgreSQL database a on db:5432")
    assert again.secret == b"s" * 32
    hosts = again.hosts()
    assert {name: state[:2] for name, state in hosts.items()} == {
        "h00": (2, False),
        "h01": (1, True),
    }
    assert all(time.time() - state[2] < 60 for state in hosts.values())
    again.close()
    other = LastKnown(path, "PostgreSQL database b on db:5432")  # another database
    assert other.secret is None and other.hosts() == {}
    other.close()
    path.write_text("{not json")
    broken = LastKnown(path, "PostgreSQL database a on db:5432")
    assert broken.secret is None
    broken.close()
    assert f"{path} ignored" in caplog.text

"""Two `photonkick serve` processes on different loopback addresses sharing one PostgreSQL
state: what one server stores, the other answers at once; losing a server or the database
for a while stops no boot and loses nothing acknowledged."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_fixture import PgCluster, wait_until_ready
from serve_process import ServeProcess, config_name

HOSTS = 8
A, B = "127.0.0.2", "127.0.0.3"
SEEN_WITHIN = 2.0
"""Seconds within which a change through one server must show on the other (a notification
takes milliseconds; the bound leaves room for a loaded test machine)."""
OUTAGE = 10.0
"""Seconds the database is stopped."""
RECOVERY = 5.0
"""Seconds a server may take to read the database again once it is back."""
INSTALL = b"DEFAULT install"
LOCAL = b"LOCALBOOT 0"
LOG_TIMEOUT = 5
"""server.install_log_timeout of both servers (the smallest the spec takes)."""
RPMS = {"bash-5.2-1.ph5.x86_64.rpm": 3 * 1024 * 1024, "curl-8.1-1.ph5.x86_64.rpm": 1024 * 1024}


@pytest.fixture
def servers(tmp_path: Path, pg_url: str) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    data = tmp_path / "releases"
    (data / "5.0" / "isolinux").mkdir(parents=True)
    (data / "5.0" / "RPMS" / "x86_64").mkdir(parents=True)
    for rpm, size in RPMS.items():
        (data / "5.0" / "RPMS" / "x86_64" / rpm).write_bytes(b"r" * size)
    pair = []
    for name, address in (("a", A), ("b", B)):
        root = tmp_path / name
        root.mkdir()
        server = ServeProcess(root, HOSTS, root / "state", data, address, pg_url)
        timeout = (
            f'server: {{url: "http://{address}:{server.port}", install_log_timeout: {LOG_TIMEOUT}}}'
        )
        server.spec.write_text(timeout + "\n" + server.spec.read_text().split("\n", 1)[1])
        pair.append(server)
    for server in pair:
        server.start()
        server.secret()  # read while the database is up
    yield pair[0], pair[1]
    for server in pair:
        server.stop()


def kickstart_path(config: bytes) -> str:
    """The kickstart URL path on a boot config's ``ks=``."""
    found = re.search(rb"ks=http://[\d.]+:\d+(/ks/\S+\.json)", config)
    assert found, config
    return found.group(1).decode()


def host_json(server: ServeProcess, name: str) -> dict[str, object]:
    """The API's view of a host; a 503 (the store unreadable for a moment after it came back)
    is asked again for up to RECOVERY seconds."""
    deadline = time.monotonic() + RECOVERY
    while True:
        status, _, body = server.request("GET", f"/api/v1/hosts/{name}")
        if status != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200, body
    found: dict[str, object] = json.loads(body)
    return found


def poll(check: object, within: float = SEEN_WITHIN) -> float:
    """Seconds until ``check()`` is true; fails after ``within``."""
    assert callable(check)
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, "the other server did not see the change"
        time.sleep(0.01)
    return time.monotonic() - start


def test_a_callback_on_b_changes_what_a_answers(
    servers: tuple[ServeProcess, ServeProcess],
) -> None:
    a, b = servers
    config = a.tftp(config_name(0))
    assert INSTALL in config
    kickstart = kickstart_path(config)
    # One secret: B serves the kickstart A pointed the host at.
    assert b.request("GET", kickstart)[0] == 200
    assert b.callback("h00", "installed")[0] == 200
    took = poll(lambda: LOCAL in a.tftp(config_name(0)))
    print(f"installed on B -> local boot on A after {took * 1000:.0f} ms")
    events = host_json(a, "h00")["events"]
    assert isinstance(events, list)
    servers_of = {e["kind"]: e["server"] for e in events}
    assert servers_of["config"].endswith(f"/{A}:{a.port}")
    assert servers_of["installed"].endswith(f"/{B}:{b.port}")
    assert host_json(a, "h00")["phase"] == "local_boot"


def test_a_new_build_retires_the_old_token_on_every_server(
    servers: tuple[ServeProcess, ServeProcess], pg_url: str
) -> None:
    """A rebuild started elsewhere (as `photonkick up` on another machine does): both servers
    refuse the old token and accept the new one."""
    a, b = servers
    old = kickstart_path(a.tftp(config_name(1)))
    assert a.request("GET", old)[0] == 200
    script = (
        "import sys\nfrom pathlib import Path\nfrom photonkick.server.state_dir import StateDir\n"
        "print(StateDir(Path(sys.argv[1]), sys.argv[2]).next_build('h01').build)\n"
    )
    started = subprocess.run(
        [sys.executable, "-c", script, str(a.root / "elsewhere"), pg_url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert started.stdout.strip() == "2"
    poll(lambda: a.request("GET", old)[0] == 404 and b.request("GET", old)[0] == 404)
    new = kickstart_path(b.tftp(config_name(1)))
    assert new != old
    assert a.request("GET", new)[0] == 200
    assert a.callback("h01", "installed", build=2)[0] == 200
    assert a.callback("h01", "installed", build=1)[0] == 404


def test_killing_b_leaves_a_serving(servers: tuple[ServeProcess, ServeProcess]) -> None:
    a, b = servers
    assert INSTALL in b.tftp(config_name(2))
    b.kill9()
    assert INSTALL in a.tftp(config_name(2))
    assert a.callback("h02", "installed")[0] == 200
    assert LOCAL in a.tftp(config_name(2))


def test_a_database_outage_stops_no_boot_and_loses_nothing_acknowledged(
    servers: tuple[ServeProcess, ServeProcess], pg_cluster: PgCluster
) -> None:
    a, b = servers
    # Known before the outage: h03 installed through A (local boot), h04 and h05 to install.
    for host in (3, 4, 5):
        assert INSTALL in a.tftp(config_name(host)) and INSTALL in b.tftp(config_name(host))
    assert a.callback("h03", "installed")[0] == 200
    # B is not asked about h03 again before the outage: the notification alone makes it read
    # h03's new state (milliseconds; the wait leaves room for a loaded machine).
    time.sleep(1.0)
    pg_cluster.stop()
    refused: list[int] = []
    try:
        deadline = time.monotonic() + OUTAGE
        while time.monotonic() < deadline:
            for server in (a, b):
                assert LOCAL in server.tftp(config_name(3))
                assert INSTALL in server.tftp(config_name(5))
            refused.append(b.callback("h04", "installed")[0])
            time.sleep(0.5)
    finally:
        pg_cluster.start()
    # A callback that could not be stored is never acknowledged: the host is told to retry.
    assert set(refused) == {503}
    wait_until_ready(pg_cluster)
    deadline = time.monotonic() + 30
    while b.callback("h04", "installed")[0] != 200:
        assert time.monotonic() < deadline, "B never took the callback again"
        time.sleep(0.5)
    poll(lambda: LOCAL in a.tftp(config_name(4)), within=10)

    # Nothing acknowledged was lost, and the fetches served during the outage were stored.
    def kinds(server: ServeProcess, host: str) -> list[str]:
        events = host_json(server, host)["events"]
        assert isinstance(events, list)
        return [e["kind"] for e in events]

    assert "installed" in kinds(b, "h03") and "installed" in kinds(a, "h04")
    assert LOCAL in b.tftp(config_name(3))

    def outage_fetches_stored() -> bool:
        # Each round of the outage fetched h03's config from both servers.
        return kinds(a, "h03").count("local_boot") >= 2 * len(refused)

    poll(outage_fetches_stored, within=10)
    assert "Traceback" not in a.log_text() + b.log_text()
    assert os.path.exists(a.state / "admin-token")


def log_path(server: ServeProcess, host: str, boot: str, offset: int) -> str:
    """The shipper's POST path for one chunk."""
    return f"/cb/{host}/{server.token(host)}/log?boot={boot}&offset={offset}"


def test_a_log_shipped_to_both_servers_at_once_is_stored_once_in_order(
    servers: tuple[ServeProcess, ServeProcess],
) -> None:
    """Eight shippers (four per server) post the same chunks in order at the same time, as
    retries whose answers were lost would: each line is stored once, in order, redacted, and
    both servers show the same tail."""
    a, b = servers
    token = a.token("h06")
    lines = [f"2026-12-02 07:00:{i:02d},000 - step {i}" for i in range(39)]
    lines[0] = "2026-12-02 07:00:00,000 - running ['sgdisk', '-Z', '/dev/sda']"
    lines[5] += f" url http://x/ks/h06/{token}.json"
    chunks = [("\n".join(lines[i : i + 2]) + "\n").encode() for i in range(0, 39, 2)]
    offsets = [sum(len(c) for c in chunks[:i]) for i in range(len(chunks))]
    start = threading.Barrier(8)
    statuses: list[int] = []

    def ship(server: ServeProcess) -> None:
        start.wait()
        for chunk, offset in zip(chunks, offsets, strict=True):
            statuses.append(server.request("POST", log_path(server, "h06", "b1", offset), chunk)[0])

    shippers = [threading.Thread(target=ship, args=(s,)) for s in (a, b) * 4]
    for shipper in shippers:
        shipper.start()
    for shipper in shippers:
        shipper.join(120)
    assert set(statuses) == {200} and len(statuses) == 8 * len(chunks)
    expected = [line.replace(token, "<token>") for line in lines]  # as redact_tokens shows it
    for server in (a, b):
        found = host_json(server, "h06")
        assert isinstance(found["log_tail"], str)
        assert found["log_tail"].splitlines() == expected
        events = found["events"]
        assert isinstance(events, list)
        assert [e["kind"] for e in events].count("partitioning") == 1
    assert token not in a.log_text() + b.log_text()


def test_the_server_a_log_is_shipped_to_owns_its_silence_timeout(
    servers: tuple[ServeProcess, ServeProcess],
) -> None:
    """The shipper's empty posts reach A only: B never fails the build for a silent log;
    once the posts stop, A does, and B shows it."""
    a, b = servers
    chunk = b"2026-12-02 07:00:00,000 - mkfs.ext4 /dev/sda3\n"
    assert a.request("POST", log_path(a, "h07", "b1", 0), chunk)[0] == 200
    assert host_json(b, "h07")["log_tail"] == chunk.decode().strip()
    alive_until = time.monotonic() + LOG_TIMEOUT + 3
    while time.monotonic() < alive_until:
        assert a.request("POST", log_path(a, "h07", "b1", len(chunk)), b"")[0] == 200
        time.sleep(1)
    assert host_json(b, "h07")["failed"] is None
    stopped = time.monotonic()
    while not host_json(b, "h07")["failed"]:
        assert time.monotonic() - stopped < LOG_TIMEOUT + 10, "the silent log never failed"
        time.sleep(0.2)
    found = host_json(b, "h07")
    assert str(found["failed"]).startswith("the installer log stopped")
    events = found["events"]
    assert isinstance(events, list)
    failures = [e for e in events if e["kind"] == "failed"]
    assert len(failures) == 1 and failures[0]["server"].endswith(f"/{A}:{a.port}")


INSTALLER = "127.0.0.9"
"""The address an installer fetches its kickstart and RPMs from."""


def fetch(server: ServeProcess, path: str) -> float:
    """GET a URL path from the installer's address with curl; the seconds it took."""
    url = f"http://{server.address}:{server.port}{path}"
    cmd = ["curl", "-fsS", "--interface", INSTALLER, "-o", "/dev/null", url]
    started = time.monotonic()
    subprocess.run(cmd, check=True, timeout=30)
    return time.monotonic() - started


def packages(server: ServeProcess, host: str) -> object:
    """The API's package count of a host."""
    return host_json(server, host)["packages"]


def test_packages_fetched_from_a_are_counted_on_b(
    servers: tuple[ServeProcess, ServeProcess],
) -> None:
    """An installer fetching RPMs from A: B's API shows the count; `installed` reported to B
    makes it the host's total; a rearm through B starts the count over on both servers."""
    a, b = servers
    fetch(a, f"/ks/h05/{a.token('h05')}.json")
    for rpm in RPMS:
        fetch(a, f"/releases/5.0/RPMS/x86_64/{rpm}")
    fetch(a, f"/releases/5.0/RPMS/x86_64/{next(iter(RPMS))}")  # a retry counts once
    counted = {"count": 2, "size": 4 * 1024 * 1024, "total": None}
    assert packages(a, "h05") == counted  # at once on the server that counted
    took = poll(lambda: packages(b, "h05") == counted)
    print(f"packages counted on A -> shown by B after {took * 1000:.0f} ms")
    _, _, page = b.request("GET", "/")
    assert b"packages 2 (4.0 MiB)" in page

    assert b.callback("h05", "installed")[0] == 200
    assert b.request("POST", "/api/v1/hosts/h05/rearm")[0] == 200
    poll(lambda: packages(a, "h05") is None and packages(b, "h05") is None)
    fetch(a, f"/releases/5.0/RPMS/x86_64/{next(iter(RPMS))}")  # the reinstall, counted anew
    again = {"count": 1, "size": 3 * 1024 * 1024, "total": 2}
    poll(lambda: packages(a, "h05") == again and packages(b, "h05") == again)


def test_while_the_database_is_down_logs_are_refused_and_rpms_served_and_counted_later(
    servers: tuple[ServeProcess, ServeProcess], pg_cluster: PgCluster
) -> None:
    """A log chunk that cannot be stored is answered 503 with Retry-After (the shipper sends
    it again); RPMs are served at once all the same, and their count reaches the store, and
    the other server, once the database is back."""
    a, b = servers
    fetch(a, f"/ks/h03/{a.token('h03')}.json")
    chunk = b"2026-12-02 07:00:00,000 - running ['sgdisk', '-Z', '/dev/sda']\n"
    pg_cluster.stop()
    try:
        status, headers, _ = a.request("POST", log_path(a, "h03", "b1", 0), chunk)
        assert status == 503 and headers["Retry-After"].isdigit()
        took = fetch(a, f"/releases/5.0/RPMS/x86_64/{next(iter(RPMS))}")
        assert took < 1.0, f"an RPM waited {took:.1f} s for the database"
    finally:
        pg_cluster.start()
    wait_until_ready(pg_cluster)
    deadline = time.monotonic() + 30
    while a.request("POST", log_path(a, "h03", "b1", 0), chunk)[0] != 200:
        assert time.monotonic() < deadline, "A never took the log again"
        time.sleep(0.5)
    assert host_json(b, "h03")["log_tail"] == chunk.decode().strip()
    counted = {"count": 1, "size": 3 * 1024 * 1024, "total": None}
    poll(lambda: packages(b, "h03") == counted, within=10)
    assert "Traceback" not in a.log_text() + b.log_text()

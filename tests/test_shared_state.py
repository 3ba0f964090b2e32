"""Two `photonkick serve` processes on different loopback addresses sharing one PostgreSQL
state: what one server stores, the other answers at once; losing a server or the database
for a while stops no boot and loses nothing acknowledged."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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


@pytest.fixture
def servers(tmp_path: Path, pg_url: str) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    data = tmp_path / "releases"
    (data / "5.0" / "isolinux").mkdir(parents=True)
    pair = []
    for name, address in (("a", A), ("b", B)):
        root = tmp_path / name
        root.mkdir()
        pair.append(ServeProcess(root, HOSTS, root / "state", data, address, pg_url))
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

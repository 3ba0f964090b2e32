"""Package progress from the server's own view: RPM fetches counted per host over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_process import MAC, ServeProcess

from photonkick.server.package_progress import (
    STORE,
    PackageCount,
    PackageProgress,
    stored_progress,
)
from photonkick.server.state_dir import StateDir
from photonkick.server.timeline import REARMED, Event

SPEC = """
server: {url: "http://127.0.0.1:PORT"}
vsphere: {host: 127.0.0.1, user: nobody, password: {env: PK_TEST_VS}}
hosts:
  - {name: h00, mac: "MAC0"}
  - {name: h01, mac: "MAC1"}
"""
RPMS = {"bash-5.2-1.ph5.x86_64.rpm": 3 * 1024 * 1024, "curl-8.1-1.ph5.x86_64.rpm": 1024 * 1024}


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServeProcess]:
    monkeypatch.setenv("PK_TEST_VS", "unused")
    data = tmp_path / "data"
    rpms = data / "5.0" / "RPMS" / "x86_64"
    rpms.mkdir(parents=True)
    for name, size in RPMS.items():
        (rpms / name).write_bytes(b"r" * size)
    (rpms / "repodata.xml").write_bytes(b"<repo/>")
    proc = ServeProcess(tmp_path, 2, tmp_path / "state", data)
    spec = SPEC.replace("PORT", str(proc.port))
    proc.spec.write_text(spec.replace("MAC0", MAC.format(0)).replace("MAC1", MAC.format(1)))
    proc.start()
    yield proc
    proc.stop()


def curl(serve: ServeProcess, path: str, source: str) -> None:
    """GET with curl from a loopback address of the given machine."""
    url = f"http://127.0.0.1:{serve.port}{path}"
    cmd = ["curl", "-fsS", "--interface", source, "-o", "/dev/null", url]
    subprocess.run(cmd, check=True, timeout=30)


def packages(serve: ServeProcess, host: str = "h00") -> Any:
    status, _, body = serve.request("GET", f"/api/v1/hosts/{host}")
    assert status == 200
    return json.loads(body)["packages"]


def wait_for(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_rpms_count_for_the_host_whose_address_fetched_its_kickstart(
    serve: ServeProcess, tmp_path: Path
) -> None:
    installer = "127.0.0.7"
    curl(serve, f"/ks/h00/{serve.token('h00')}.json", installer)
    for name in RPMS:
        curl(serve, f"/releases/5.0/RPMS/x86_64/{name}", installer)
    curl(serve, "/releases/5.0/RPMS/x86_64/bash-5.2-1.ph5.x86_64.rpm", installer)  # a retry
    curl(serve, "/releases/5.0/RPMS/x86_64/repodata.xml", installer)  # not a package
    curl(serve, "/releases/5.0/RPMS/x86_64/curl-8.1-1.ph5.x86_64.rpm", "127.0.0.8")  # nobody's
    assert packages(serve) == {"count": 2, "size": 4 * 1024 * 1024, "total": None}
    assert packages(serve, "h01") is None
    status, _, page = serve.request("GET", "/")
    assert status == 200 and b"packages 2 (4.0 MiB)" in page

    # Finished: the next install of the host shows its count against this total.
    assert serve.callback("h00", "installed")[0] == 200
    assert serve.request("POST", "/api/v1/hosts/h00/rearm")[0] == 200
    assert packages(serve) is None
    curl(serve, "/releases/5.0/RPMS/x86_64/curl-8.1-1.ph5.x86_64.rpm", installer)
    assert packages(serve) == {"count": 1, "size": 1024 * 1024, "total": 2}
    status, _, page = serve.request("GET", "/hosts/h00")
    assert status == 200 and b"packages 1 of 2 (1.0 MiB)" in page

    # Written in the background: `status` reads it from the state folder.
    exe = Path(sys.executable).parent / "photonkick"
    args = [str(exe), "status", str(serve.spec), "--offline", "--state", str(serve.state)]
    state = StateDir(serve.state)
    try:
        wait_for(lambda: stored_progress(state, "h00", 1) == PackageCount(1, 1024 * 1024, 2))
    finally:
        state.close()
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "packages 1 of 2 (1.0 MiB)" in done.stdout
    # ... and a restarted server counts on from there.
    serve.stop()
    serve.start()
    assert packages(serve) == {"count": 1, "size": 1024 * 1024, "total": 2}


@pytest.fixture(params=["sqlite", "postgresql"])
def state_args(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str | None]:
    """Where two servers' state is: the state directory's SQLite, or a fresh PostgreSQL
    database (shared by both)."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    return tmp_path / "state", url


def test_two_servers_count_from_16_threads_once_and_in_the_store(
    state_args: tuple[Path, str | None],
) -> None:
    """Two servers' counters on one store (as two `photonkick serve` on one database), eight
    fetching threads each, the same names on both: every name counts once, no read ever shows
    more than was fetched, and the store holds the count; installed, rearm and a count anew."""
    states = [StateDir(*state_args), StateDir(*state_args)]
    servers = [PackageProgress(state.store(STORE)) for state in states]
    for state, server in zip(states, servers, strict=True):
        state.on_change(server.forget)
    done = threading.Event()
    seen: list[int] = []
    try:

        def fetch(worker: int) -> None:
            for i in range(200):
                servers[worker % 2].note("h", 1, f"p{i % 150}-{worker % 4 // 2}.rpm", 10)

        def watch() -> None:
            while not done.is_set():
                for server in servers:
                    found = server.progress("h", 1)
                    seen.append(found.count if found else 0)

        watcher = threading.Thread(target=watch)
        watcher.start()
        threads = [threading.Thread(target=fetch, args=(w,)) for w in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for server in servers:
            server.flush()
        done.set()
        watcher.join()
        assert seen and max(seen) <= 300
        for server in servers:
            assert server.progress("h", 1) == PackageCount(300, 3000)
        assert stored_progress(states[0], "h", 1) == PackageCount(300, 3000)

        servers[1].on_event(Event("h", 1, "installed", "", "", 0.0, 0.0, "r"))
        assert servers[1].progress("h", 1) == PackageCount(300, 3000, 300)  # at once
        servers[1].on_event(Event("h", 1, REARMED, "", "", 0.0, 0.0, "r"))
        assert servers[1].progress("h", 1) is None
        servers[1].flush()
        assert servers[0].progress("h", 1) is None
        servers[0].forget("h")  # what the rearm's notification does (PostgreSQL: by itself)
        servers[0].note("h", 1, "p0-0.rpm", 5)
        assert servers[0].progress("h", 1) == PackageCount(1, 5, 300)
    finally:
        for server in servers:
            server.close()
    assert stored_progress(states[1], "h", 1) == PackageCount(1, 5, 300)
    for state in states:
        state.close()

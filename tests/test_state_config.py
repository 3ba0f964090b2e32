"""Choosing the state store: ``server.state`` in the spec (a secret) or ``--state-url``; a
wrong value is a clear error, and the URL's password never reaches a message or a log."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from ports import free_port
from serve_process import popen_serve

from photonkick.kickstarts.errors import SpecError
from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.tokens import host_token
from photonkick.server.state_dir import StateDir, StateError
from photonkick.server.timeline import Timeline

PHOTONKICK = str(Path(sys.executable).parent / "photonkick")
HOSTS = """
hosts:
  - {name: web01, mac: "00:50:56:00:00:01"}
"""
PASSWORD = "s3cr3t-Pa55word"


def test_state_from_the_environment_is_a_secret(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec("server:\n  url: http://192.0.2.1:8080\n  state: {env: PK_STATE}\n" + HOSTS)
    url = f"postgresql://pk:{PASSWORD}@db.example/photonkick"
    inventory = load_inventory(spec, {"PK_STATE": url})
    assert inventory.server.state is not None
    assert inventory.server.state.reveal() == url
    assert PASSWORD not in repr(inventory.server)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sqlite:///tmp/x.db", "F:3:10: server.state: must be a postgresql:// URL"),
        ("{env: NOT_SET}", "F:3:10: server.state: environment variable NOT_SET is not set"),
    ],
)
def test_a_wrong_state_names_file_line_and_key(
    write_spec: Callable[[str], Path], value: str, message: str
) -> None:
    spec = write_spec(f"server:\n  url: http://192.0.2.1:8080\n  state: {value}\n" + HOSTS)
    with pytest.raises(SpecError) as info:
        load_inventory(spec, {})
    assert [str(p).replace(str(spec), "F") for p in info.value.problems] == [message]


def test_an_unreachable_database_is_a_clear_error_without_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"postgresql://pk:{PASSWORD}@127.0.0.1:1/photonkick"
    with pytest.raises(StateError) as info:
        StateDir(tmp_path, url)
    message = str(info.value)
    assert message.startswith(
        "cannot open the state database: PostgreSQL database photonkick on 127.0.0.1:1: "
    )
    assert PASSWORD not in message + caplog.text


def test_serve_starts_without_the_spec_state_and_says_what_is_degraded(
    write_spec: Callable[[str], Path], tmp_path: Path
) -> None:
    """An unreachable database does not stop `serve` (booting never waits for it): one
    warning names the database, the reason and what is degraded, never the password."""
    port = free_port()
    spec = write_spec(
        f"server:\n  url: http://127.0.0.1:{port}\n  state: {{env: PK_STATE}}\n" + HOSTS
    )
    url = f"postgresql://pk:{PASSWORD}@127.0.0.1:1/photonkick"
    env = {"PK_STATE": url, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc, banner, _ = popen_serve(spec, port, env)
    proc.terminate()
    _, stderr = proc.communicate(timeout=30)
    warning = next(line for line in stderr.splitlines() if "serving without it" in line)
    assert "PostgreSQL database photonkick on 127.0.0.1:1: connection failed" in warning
    assert "callbacks, rearms, secrets, the API and the dashboard answer 503" in warning
    assert PASSWORD not in banner + stderr
    assert "Traceback" not in stderr


def test_serve_and_show_share_builds_through_the_spec_state(
    write_spec: Callable[[str], Path], tmp_path: Path, pg_url: str
) -> None:
    """`show` on another machine (another state directory) sees the build the database has."""
    spec = write_spec("server:\n  url: http://127.0.0.1:8080\n  state: {env: PK_STATE}\n" + HOSTS)
    state = StateDir(tmp_path / "one", pg_url)
    state.next_build("web01")
    state.close()
    show = [PHOTONKICK, "show", str(spec), "web01", "--reveal", "--state", str(tmp_path / "two")]
    done = subprocess.run(
        show,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PK_STATE": pg_url, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert f"/cb/web01/{host_token(state.secret, 'web01', 2)}/" in done.stdout
    assert host_token(state.secret, "web01", 1) not in done.stdout


def test_inventory_reads_addresses_from_the_shared_state(
    write_spec: Callable[[str], Path], tmp_path: Path, pg_url: str
) -> None:
    spec = write_spec("server:\n  url: http://127.0.0.1:8080\n  state: {env: PK_STATE}\n" + HOSTS)
    state = StateDir(tmp_path / "server", pg_url)
    timeline = Timeline(state.store("timeline"), server_id="a")
    timeline.record("web01", 1, "guest_ip", "192.0.2.44")
    timeline.close()
    state.close()
    done = subprocess.run(
        [PHOTONKICK, "inventory", str(spec), "--host", "web01", "--state", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PK_STATE": pg_url, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ansible_host"] == "192.0.2.44"

"""Log records carry no token and no control character a client sent, from any logger."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.tokens import host_token, same_token, token_matches
from photonkick.server.boot_service import BootService
from photonkick.server.http import create_app
from photonkick.server.log_safety import escape_controls, protect_logs, redact_tokens
from photonkick.server.state_dir import StateDir
from photonkick.server.timeline import Timeline

TOKEN = "ts6raphhamgb5fhzv7zmtf3b4k"
ADMIN = "cusm-xlOd-cUj5LKH15TcCnkTa1wXHK8HiM1kcG3neQ"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"GET /ks/web01/{TOKEN}.json 404", "GET /ks/web01/<token>.json 404"),
        (f"POST /cb/web01/{TOKEN}/ready 200", "POST /cb/web01/<token>/ready 200"),
        ("Exception on /CB/x/forged-token/ready [POST]", "Exception on /CB/x/<token>/ready [POST]"),
        (f"GET /x/{TOKEN.upper()} 404", "GET /x/<token> 404"),
        (f"Bearer {ADMIN}", "Bearer <token>"),
        ("GET /releases/5.0/RPMS/x86_64/bash-5.2.15-1.ph5.x86_64.rpm 200", None),
        ("web01: installed", None),
    ],
)
def test_redact_tokens(text: str, expected: str | None) -> None:
    assert redact_tokens(text) == (expected or text)


def test_escape_controls() -> None:
    assert escape_controls("a\nb\r\x00\x1b[2J\u2028é\x85") == "a\\nb\\r\\x00\\x1b[2J\\u2028é\\x85"
    assert escape_controls("line 1\nline 2\r", keep_newlines=True) == "line 1\nline 2\\r"


def test_tokens_compare_as_bytes() -> None:
    secret = bytes(32)
    good = host_token(secret, "web01", 1)
    assert token_matches(secret, "web01", 1, good)
    for bad in ("é", "\udcff", "\x00", good + "é", good[:-1] + "\ufffd", ""):
        assert not token_matches(secret, "web01", 1, bad)
    assert same_token(ADMIN, ADMIN) and not same_token(ADMIN, ADMIN + "\xff")


def test_every_logger_is_redacted_and_escaped(caplog: pytest.LogCaptureFixture) -> None:
    protect_logs()
    protect_logs()  # twice is once
    with caplog.at_level(logging.INFO):
        logging.getLogger("waitress").info("Exception while serving /ks/web01/%s.json", TOKEN)
        logging.getLogger("photonkick.server").info("%s: %s", "db01", "failed: x\nforged line")
    assert TOKEN not in caplog.text and "\nforged" not in caplog.text
    assert "/ks/web01/<token>.json" in caplog.text and "x\\nforged line" in caplog.text


def test_flask_exception_log_has_no_token(
    tmp_path: Path, write_spec: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    spec = write_spec(
        """
        server: {url: "http://127.0.0.1:8080"}
        hosts: [{name: web01, mac: "00:50:56:00:10:01"}]
        """
    )
    state = StateDir(tmp_path / "state")
    timeline = Timeline(tmp_path / "timeline.db")
    service = BootService(load_inventory(spec), state, timeline, tmp_path / "releases")
    token = host_token(state.secret, "web01", 1)

    def broken(name: str, presented: str, client: str) -> bytes:
        raise RuntimeError(f"a bug while serving {presented}")

    service.kickstart = broken  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.INFO):
            answer = create_app(service, ADMIN).test_client().get(f"/ks/web01/{token}.json")
    finally:
        timeline.close()
    assert answer.status_code == 500
    assert "a bug while serving <token>" in caplog.text, caplog.text
    assert "Exception on /ks/web01/<token>.json [GET]" in caplog.text
    assert token not in caplog.text

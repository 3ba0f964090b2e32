"""`photonkick serve`'s usage errors: exit 2 with one line, never a traceback."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from photonkick.server.cli import listen_address, main

EXE = Path(sys.executable).parent / "photonkick"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0", ("0.0.0.0", 69)),
        (":6969", ("0.0.0.0", 6969)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::]", ("::", 69)),
        ("::1", ("::1", 69)),
        ("boot.lab.example:0", ("boot.lab.example", 0)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert listen_address(69)(text) == expected


@pytest.mark.parametrize(
    "text",
    ["foo:bar", "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:-1", "fe80::x", "[::1", "[::1]x", "a b:80",
     "1.2.3.4:８０", "-x:80"],
)  # fmt: skip
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        listen_address(69)(text)


@pytest.mark.parametrize("option", ["--http", "--tftp"])
def test_bad_address_is_one_line_and_exit_2(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--example", option, "foo:bar"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {option}: 'foo:bar'" in err, err


def _serve(tmp_path: Path, http: str) -> subprocess.CompletedProcess[str]:
    command = [str(EXE), "serve", "--example", "--state", str(tmp_path / "state")]
    command += ["--http", http, "--tftp", "127.0.0.1:0"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_an_address_of_no_interface_here_exits_2(tmp_path: Path) -> None:
    for http in ("192.0.2.1:8080", "no-such-host.invalid:8080"):
        result = _serve(tmp_path, http)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        last = result.stderr.splitlines()[-1]
        assert last.startswith(f"photonkick: cannot listen for HTTP on {http}: "), last


def test_a_busy_port_exits_1_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _serve(tmp_path, f"127.0.0.1:{port}")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"photonkick: cannot listen for HTTP on 127.0.0.1:{port}: Address already in use"
    )

"""Hostile specs: alias bombs and deep nesting are refused at FILE:LINE:COL, also on reload."""

from __future__ import annotations

import logging
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from ports import free_port

from photonkick.kickstarts.errors import SpecError
from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.source import MAX_DEPTH
from photonkick.server.boot_server import BootServer, Listen
from photonkick.server.state_dir import StateDir

HEADER = 'server: {url: "http://127.0.0.1:8080"}\n'
HOST = 'hosts:\n  - {name: web01, mac: "00:50:56:00:10:01"}\n'
# Nine levels of nine aliases each: 9**9 (387 million) scalars once expanded, in 342 bytes.
BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)
ALIAS_MESSAGE = "YAML alias *{} is not supported (put shared keys in defaults or a profile)"
# A bound on the failure mode only: an expanding parser would need gigabytes and minutes.
CHILD_MEMORY = 512 * 1024 * 1024
CHILD_SECONDS = 30


def problems(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_inventory(path, {})
    return [str(p).replace(str(path), "F") for p in info.value.problems]


def test_check_refuses_an_alias_bomb_at_its_first_alias(tmp_path: Path) -> None:
    assert len(BOMB) < 400
    spec = tmp_path / "bomb.yaml"
    spec.write_text(HEADER + BOMB + HOST)

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))

    exe = Path(sys.executable).parent / "photonkick"
    result = subprocess.run(
        [str(exe), "check", str(spec)],
        capture_output=True,
        text=True,
        timeout=CHILD_SECONDS,
        preexec_fn=limit_memory,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"{spec}:3:8: b[0]: " + ALIAS_MESSAGE.format("a")
    assert len([line for line in lines if "YAML alias" in line]) == 8 * 9
    assert "Traceback" not in result.stderr


def test_one_alias_is_refused_with_its_key_path(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        HEADER
        + "defaults:\n  users: &ops [{name: ops}]\n"
        + 'hosts:\n  - {name: web01, mac: "00:50:56:00:10:01", users: *ops}\n'
    )
    assert problems(spec) == ["F:5:52: hosts[0].users: " + ALIAS_MESSAGE.format("ops")]


def test_alias_as_a_key_or_merge_is_refused(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        HEADER
        + "profiles:\n  base: &base {disk: /dev/sdb}\n  web:\n    <<: *base\n    *base : 1\n"
        + HOST
    )
    assert problems(spec) == [
        "F:5:5: profiles.web: keys must be plain strings",
        "F:6:5: profiles.web: " + ALIAS_MESSAGE.format("base"),
    ]


def test_an_undefined_alias_is_refused_the_same_way(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(HEADER + "defaults: {disk: *nowhere}\n" + HOST)
    assert problems(spec) == ["F:2:18: defaults.disk: " + ALIAS_MESSAGE.format("nowhere")]


def test_an_anchor_without_alias_is_harmless(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(HEADER + "defaults: &d {disk: /dev/sdb}\n" + HOST)
    assert load_inventory(spec, {}).hosts[0].name == "web01"


@pytest.mark.parametrize("opener", ["[", "{a: ", "- "])
def test_deep_nesting_is_refused(write_spec: Callable[[str], Path], opener: str) -> None:
    closer = {"[": "]", "{a: ": "}", "- ": ""}[opener]
    depth = 5000
    if opener == "- ":
        body = "defaults:\n" + "".join(" " * (i + 1) + "-\n" for i in range(depth // 10))
    else:
        body = "defaults: " + opener * depth + "1" + closer * depth + "\n"
    spec = write_spec(HEADER + body + HOST)
    (message,) = problems(spec)
    assert message.startswith("F:") and message.endswith(
        f"(yaml): nesting deeper than {MAX_DEPTH} levels"
    )


def test_ordinary_nesting_is_fine(write_spec: Callable[[str], Path]) -> None:
    nested = "{a: " * 20 + "1" + "}" * 20
    spec = write_spec(HEADER + HOST + f"    kickstart: {{x: {nested}}}\n")
    messages = problems(spec)  # unknown installer key, but parsed and located
    assert messages and all("nesting" not in m for m in messages)


def test_reload_of_a_bomb_logs_it_and_keeps_the_last_good_spec(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = tmp_path / "lab.yaml"
    spec.write_text(HEADER + HOST)
    server = BootServer(
        spec,
        load_inventory(spec),
        StateDir(tmp_path / ".photonkick"),
        tmp_path / "releases",
        Listen("127.0.0.1", free_port(), "127.0.0.1", 0),
    )
    server.start()
    try:
        spec.write_text(HEADER + BOMB + HOST.replace("web01", "web02"))
        with caplog.at_level(logging.ERROR, logger="photonkick.server"):
            assert server.reload() is False
        assert f"spec not reloaded: {spec}:3:8: b[0]: YAML alias *a" in caplog.text
        assert [h.name for h in server.service.inventory.hosts] == ["web01"]
        config = server.service.tftp_file("pxelinux.cfg/01-00-50-56-00-10-01", "127.0.0.1")
        assert config is not None
    finally:
        server.stop()

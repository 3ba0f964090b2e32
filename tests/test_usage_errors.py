"""Every verb's usage errors, through the installed command: exit 2, one line, nothing written.

The helpers raise typed errors (UsageError, HostNotFound, FleetInputError); only ``main()``
turns them into the exit code, so no verb prints its own error and carries on.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from photonkick.server.cli import build_parser

EXE = Path(sys.executable).parent / "photonkick"

SPEC = """\
server: {url: https://pk.example, boot_url: "http://192.0.2.1:8080"}
photon: {installer: "2.7"}
hosts:
  - name: a
    mac: "00:50:56:00:00:01"
    users: [{name: ops, password_hash: "$6$salt$hash"}]
"""

# verb -> (arguments, a part of the one line expected on stderr)
BAD_ARGUMENTS: dict[str, tuple[list[str], str]] = {
    "check": ([], "give a SPEC file"),
    "render": (["s.yaml"], "required: --out"),
    "show": (["s.yaml", "zz"], "no host 'zz' in s.yaml (hosts: a)"),
    "serve": (["s.yaml", "--http", "foo:bar"], "foo:bar"),
    "import-iso": (["x.iso", "y.iso"], "x.iso is an ISO, not a spec"),
    "iso": (["s.yaml", "zz", "-o", "out.iso", "--seed-only"], "no host 'zz'"),
    "up": (["s.yaml"], "no vsphere section"),
    "rebuild": (["s.yaml"], "rebuild needs host names"),
    "down": (["s.yaml"], "down needs host names, or --all"),
    "status": ([], "give a SPEC file"),
    "inventory": (["s.yaml", "--host", "zz"], "no host 'zz'"),
    "doctor": (["--bogus"], "unrecognized arguments: --bogus"),
    "example": (["--out", "taken"], "exist already"),
    "state": (["migrate", "--from", "s.yaml"], "required: --to"),
}


def _verbs() -> set[str]:
    parser = build_parser()
    subparsers = next(
        a
        for a in parser._actions
        if isinstance(a, argparse._SubParsersAction)  # noqa: SLF001
    )
    return set(subparsers.choices)


def test_every_verb_has_a_case() -> None:
    assert set(BAD_ARGUMENTS) == _verbs()


@pytest.mark.parametrize("verb", sorted(BAD_ARGUMENTS))
def test_a_bad_argument_exits_2_with_one_line(verb: str, tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SPEC)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "lab.yaml").write_text("mine\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    args, expected = BAD_ARGUMENTS[verb]
    result = subprocess.run(
        [str(EXE), verb, *args], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("photonkick") and expected in lines[0]
    assert result.stdout == ""
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "taken" / "lab.yaml").read_text() == "mine\n"

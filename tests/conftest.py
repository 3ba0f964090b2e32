"""Shared fixtures: specs written into tmp_path, a fixed token secret, the example spec."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from photonkick.kickstarts.kickstart import BuildInfo

pytest_plugins = ["vcsim_fixture", "pg_fixture"]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "kickstarts" / "examples" / "lab.yaml"
FIXED_SECRET = bytes(range(32))


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[[str], Path]:
    """Write dedented YAML to tmp_path/spec.yaml and return its path."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write


@pytest.fixture
def build1() -> Callable[[str], BuildInfo]:
    """Build 1 of every host under a fixed secret: deterministic tokens and salts."""
    return lambda name: BuildInfo(1, FIXED_SECRET)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", help="rewrite tests/golden from current output"
    )


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """Compare text with tests/golden/<name>, or rewrite it under --update-golden."""

    def check(name: str, actual: str) -> None:
        path = REPO / "tests" / "golden" / name
        if request.config.getoption("--update-golden"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual)
        assert path.exists(), f"{path} is missing: run pytest --update-golden and review it"
        assert actual == path.read_text(), f"{name} differs from its golden file"

    return check

"""Shared fixtures: specs written into tmp_path, a fixed token secret, the example spec."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from photonkick.kickstarts.kickstart import BuildInfo

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

"""Quality gates run as tests: ruff (lint and format) and mypy --strict."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGES = ("kickstarts", "pxe", "server", "templates")


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert found, f"{name} is not installed: run .ci/setup --test"
    return found


def test_ruff_lint() -> None:
    result = subprocess.run([_tool("ruff"), "check", "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = subprocess.run(
        [_tool("ruff"), "format", "--check", "."], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict(tmp_path: Path) -> None:
    # mypy cannot see through the editable install's package-dir mapping; give it the
    # photonkick.* layout as folder links instead.
    root = tmp_path / "photonkick"
    root.mkdir()
    for package in PACKAGES:
        (root / package).symlink_to(REPO / package, target_is_directory=True)
    args = [_tool("mypy"), "--config-file", str(REPO / "pyproject.toml"), "--no-incremental"]
    for package in PACKAGES:
        args += ["-p", f"photonkick.{package}"]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

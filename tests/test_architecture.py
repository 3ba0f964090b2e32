"""Layering: the pure packages do no I/O, and nothing is importable under a bare folder name."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PURE = ("kickstarts", "pxe", "templates")
BANNED_IMPORTS = {
    "flask",
    "tftpy",
    "pyVmomi",
    "pyVim",
    "socket",
    "subprocess",
    "time",
    "threading",
    "waitress",
    "sqlite3",
    "pycdlib",
}
FOLDERS = ("kickstarts", "pxe", "server", "templates")


def _modules(folder: str) -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("path", [m for f in PURE for m in _modules(f)])
def test_pure_packages_do_no_io(path: str) -> None:
    tree = ast.parse((REPO / path).read_text(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            for name in names:
                assert name.split(".")[0] not in BANNED_IMPORTS, f"{path}: imports {name}"
                assert not name.startswith("photonkick.server"), f"{path}: imports {name}"
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "open":
            raise AssertionError(f"{path}:{node.lineno}: open() belongs in photonkick.server")
        if isinstance(node, ast.Attribute) and node.attr in ("write_text", "write_bytes", "mkdir"):
            raise AssertionError(f"{path}:{node.lineno}: writes files")


def test_every_module_imports_alone_without_bare_names() -> None:
    modules = [
        "photonkick." + m[:-3].replace("/", ".").removesuffix(".__init__")
        for f in FOLDERS
        for m in _modules(f)
        if not m.endswith("__main__.py")
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bare = [n for n in {list(FOLDERS)!r} if n in sys.modules]\n"
        "assert not bare, bare\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning:photonkick", "-c", code],
        cwd="/",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_wheel_ships_every_module_and_template(tmp_path: Path) -> None:
    """A regular (not editable) install must carry every module, template and example."""
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("photonkick-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        "photonkick/" + str(p.relative_to(REPO))
        for folder in FOLDERS
        for p in (REPO / folder).rglob("*")
        if p.is_file()
        and p.suffix in (".py", ".j2", ".yaml", ".txt", ".typed")
        and "__pycache__" not in p.parts
    }
    assert not wanted - shipped, f"missing from the wheel: {sorted(wanted - shipped)}"

"""Layering: the pure packages do no I/O, and nothing is importable under a bare folder name."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PURE = ("kickstarts", "pxe", "templates")
# The one pure module that reads files: the spec, and the files the spec names (secrets,
# SSH keys). Reading stays there; nothing in the pure packages writes.
READER = "kickstarts/source.py"
BANNED_IMPORTS = {
    "asyncio",
    "flask",
    "multiprocessing",
    "tftpy",
    "pyVmomi",
    "pyVim",
    "shutil",
    "socket",
    "subprocess",
    "tempfile",
    "time",
    "threading",
    "waitress",
    "sqlite3",
    "pycdlib",
}
# What the pure packages may use of ``os``: reading the environment is their input.
OS_ALLOWED = {"environ", "fspath", "sep", "PathLike"}
# Path methods that change the filesystem, and those that read contents or listings.
PATH_WRITES = {
    "write_text",
    "write_bytes",
    "mkdir",
    "touch",
    "unlink",
    "rmdir",
    "rename",
    "chmod",
    "symlink_to",
    "hardlink_to",
}
PATH_READS = {"read_text", "read_bytes", "iterdir", "glob", "rglob"}
CLOCK_CALLS = {"now", "utcnow", "today"}
FOLDERS = ("kickstarts", "pxe", "server", "templates")


def _modules(folder: str) -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / folder).rglob("*.py"))


def _writes(call: ast.Call, mode_position: int) -> bool:
    """Whether an ``open`` call has a mode that writes (w, a, x or +), or one not literal."""
    mode: ast.expr | None = None
    if len(call.args) > mode_position:
        mode = call.args[mode_position]
    for keyword in call.keywords:
        if keyword.arg == "mode":
            mode = keyword.value
    if mode is None:
        return False
    if not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)):
        return True
    return any(c in mode.value for c in "wax+")


def _dotted(node: ast.expr) -> str:
    """``a.b.c`` for a chain of names and attributes, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def io_problems(source: str, path: str) -> list[str]:
    """Every way the module ``path`` with this source does I/O it must leave to the server."""
    reader = path == READER
    tree = ast.parse(source, path)
    aliases = {"os": "os", "datetime": "datetime", "date": "datetime.date"}
    problems = []

    def problem(node: ast.AST, what: str) -> None:
        problems.append(f"{path}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name
                if alias.name.split(".")[0] in BANNED_IMPORTS:
                    problem(node, f"imports {alias.name}")
                if alias.name.startswith("photonkick.server"):
                    problem(node, f"imports {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in BANNED_IMPORTS or module.startswith("photonkick.server"):
                problem(node, f"imports {module}")
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
                if module == "os" and alias.name not in OS_ALLOWED:
                    problem(node, f"imports os.{alias.name}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            head, _, rest = name.partition(".")
            full = f"{aliases[head]}.{rest}".rstrip(".") if head in aliases else name
            if full in ("open", "io.open", "builtins.open"):
                if _writes(node, 1):
                    problem(node, "open() for writing")
                elif not reader:
                    problem(node, f"open() belongs in {READER} or photonkick.server")
            elif isinstance(node.func, ast.Attribute) and node.func.attr == "open":
                if _writes(node, 0):
                    problem(node, ".open() for writing")
                elif not reader:
                    problem(node, f".open() belongs in {READER} or photonkick.server")
            elif full.startswith("datetime.") and full.rsplit(".", 1)[-1] in CLOCK_CALLS:
                problem(node, f"reads the clock ({name}())")
        if isinstance(node, ast.Attribute):
            full = _dotted(node)
            head, _, rest = full.partition(".")
            resolved = f"{aliases[head]}.{rest}" if head in aliases and rest else full
            if resolved.startswith("os.") and resolved.split(".")[1] not in OS_ALLOWED:
                problem(node, f"uses {resolved}")
            if node.attr in PATH_WRITES:
                problem(node, f"writes files (.{node.attr})")
            if node.attr in PATH_READS and not reader:
                problem(node, f"reads files (.{node.attr}) outside {READER}")
    return problems


@pytest.mark.parametrize("path", [m for f in PURE for m in _modules(f)])
def test_pure_packages_do_no_io(path: str) -> None:
    assert io_problems((REPO / path).read_text(), path) == []


CAUGHT = {
    "import os\nfd = os.open('x', os.O_RDONLY)": "uses os.open",
    "from os import open as o": "imports os.open",
    "import os as system\nsystem.replace('a', 'b')": "uses os.replace",
    "from pathlib import Path\nPath('x').write_text('y')": "writes files (.write_text)",
    "p.write_bytes(b'')": "writes files (.write_bytes)",
    "p.mkdir(parents=True)": "writes files (.mkdir)",
    "p.unlink()": "writes files (.unlink)",
    "open('x', 'w')": "open() for writing",
    "open('x', mode='a')": "open() for writing",
    "open('x', flags)": "open() for writing",
    "p.open('w')": ".open() for writing",
    "p.open(mode='r+')": ".open() for writing",
    "open('x')": "open() belongs in",
    "p.read_text()": "reads files (.read_text)",
    "import shutil": "imports shutil",
    "from shutil import copyfile": "imports shutil",
    "import tempfile": "imports tempfile",
    "import time": "imports time",
    "from time import monotonic": "imports time",
    "import datetime\ndatetime.datetime.now()": "reads the clock",
    "from datetime import datetime\ndatetime.utcnow()": "reads the clock",
    "from datetime import date as d\nd.today()": "reads the clock",
    "import socket": "imports socket",
    "import subprocess": "imports subprocess",
    "import threading": "imports threading",
    "from threading import Thread": "imports threading",
    "from photonkick.server.state_dir import StateDir": "imports photonkick.server",
}


@pytest.mark.parametrize("snippet", CAUGHT)
def test_the_purity_guard_catches(snippet: str) -> None:
    problems = io_problems(snippet, "kickstarts/example.py")
    assert any(CAUGHT[snippet] in p for p in problems), problems


ALLOWED = [
    "import os\nhome = os.environ.get('HOME')",
    "text = 'a-b'.replace('-', '_')",
    "from pathlib import Path\nroot = Path('x').resolve()",
    "import datetime\nepoch = datetime.datetime(1970, 1, 1)",
    "import hashlib\nhashlib.sha256(b'').hexdigest()",
]


@pytest.mark.parametrize("snippet", ALLOWED)
def test_the_purity_guard_allows_pure_code(snippet: str) -> None:
    assert io_problems(snippet, "kickstarts/example.py") == []


def test_the_reader_module_may_read_but_not_write() -> None:
    assert io_problems("p.read_text(encoding='utf-8')\nopen(p)", READER) == []
    assert io_problems("p.write_text('x')", READER) != []
    assert io_problems("open(p, 'w')", READER) != []


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

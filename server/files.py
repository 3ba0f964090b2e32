"""File safety in one place: whole-or-nothing writes and private (0600) files created once.

Files written whole or not at all: a temporary file beside the target, then a rename. A
reader (or a crash) never sees a half-written file under its real name. The temporary file
is named ``.<name>.<random>.part`` in the target's folder (``PARTIAL_GLOB`` finds the
ones a killed process left behind), gets its final mode before the rename, and is flushed
to disk, as is the folder entry, before the function returns.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

PARTIAL_GLOB = ".*.part"

Writer = Callable[[BinaryIO], object]


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) with permissions ``mode``."""
    content = data.encode() if isinstance(data, str) else data
    write_atomic_with(path, lambda f: f.write(content), mode=mode)


def write_atomic_with(
    path: Path,
    writer: Writer,
    *,
    mode: int = 0o644,
    verify: Callable[[Path], None] | None = None,
) -> None:
    """Replace ``path`` with what ``writer`` writes into the open temporary file.

    ``verify`` may inspect (and reject, by raising) the finished temporary file before it
    takes the name ``path``. On any error the temporary file is removed and ``path`` is
    left as it was.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if verify is not None:
            verify(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def create_exclusive(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` with ``data`` and permissions ``mode``; FileExistsError if it exists.

    The file never exists with looser permissions than ``mode`` (less the umask), not even
    for a moment.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def read_or_create_secret(path: Path, generate: Callable[[], str]) -> str:
    """The secret kept in ``path``, created from ``generate()`` as a 0600 file when missing."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = generate()
    create_exclusive(path, (value + "\n").encode())
    return value


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

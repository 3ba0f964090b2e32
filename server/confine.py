"""One confinement for every file a client names, over TFTP or HTTP."""

from __future__ import annotations

import stat
from pathlib import Path, PurePosixPath


def confined_file(root: Path, name: str) -> Path | None:
    """The regular file ``name`` under ``root``, symlinks resolved, or None if it is not one.

    None also when the name is empty, absolute, holds a NUL or a ``..`` part, resolves outside
    ``root``, or cannot be looked up at all (too long, a symlink loop, no permission).
    """
    relative = PurePosixPath(name)
    if not name or "\0" in name or relative.is_absolute() or ".." in relative.parts:
        return None
    try:
        base = root.resolve(strict=True)
        target = base.joinpath(*relative.parts).resolve(strict=True)
        info = target.stat()
    except (OSError, RuntimeError, ValueError):
        return None
    if not target.is_relative_to(base) or not stat.S_ISREG(info.st_mode):
        return None
    return target

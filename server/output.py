"""The only writer of rendered trees: all of it or nothing, never a half-written folder."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from photonkick.kickstarts.artifacts import Tree
from photonkick.kickstarts.errors import PhotonkickError
from photonkick.server.files import create_exclusive

MARKER = ".photonkick-render"


class OutputError(PhotonkickError):
    """The output folder cannot be replaced."""


def write_tree(tree: Tree, outdir: Path) -> None:
    """Write ``tree`` as ``outdir``, replacing an earlier render in one rename.

    A folder that exists, is not empty and was not rendered by photonkick is refused.
    """
    outdir = outdir.absolute()
    if outdir.exists() and any(outdir.iterdir()) and not (outdir / MARKER).exists():
        raise OutputError(
            f"{outdir} is not empty and was not written by photonkick; choose another --out"
        )
    outdir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.new-", dir=outdir.parent))
    try:
        for rel, artifact in tree.items():
            target = staging.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = 0o600 if artifact.private else 0o644
            create_exclusive(target, artifact.content, mode)
        (staging / MARKER).write_text("rendered by photonkick\n")
        staging.chmod(0o755)
        _swap(staging, outdir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap(staging: Path, outdir: Path) -> None:
    if not outdir.exists():
        staging.rename(outdir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.old-", dir=outdir.parent))
    old.rmdir()
    outdir.rename(old)
    try:
        staging.rename(outdir)
    except BaseException:
        old.rename(outdir)
        raise
    shutil.rmtree(old, ignore_errors=True)

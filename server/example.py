"""The bundled example spec, for a first lab: printed whole, or written with its secret file.

The bundled spec reads the database password from ``db-password.txt`` beside it. Printed
on its own, the spec has no such file next to it, so the printed form carries a fresh
random password inline instead; ``write_example`` writes both files, the password in a
0600 file, which is the form to keep.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from photonkick.kickstarts.errors import PhotonkickError
from photonkick.server.cli_common import example_spec
from photonkick.server.files import write_atomic

SPEC_NAME = "lab.yaml"
SECRET_NAME = "db-password.txt"
_SECRET_REF = f"{{file: {SECRET_NAME}}}"


class ExampleError(PhotonkickError):
    """The example cannot be written where it was asked for."""


def new_password() -> str:
    """A random password for the example's database (about 144 bits)."""
    return secrets.token_urlsafe(18)


def printed_example(password: str) -> str:
    """The example spec as one self-contained text: the password written inline."""
    text = example_spec().read_text()
    if _SECRET_REF not in text:
        raise ExampleError(f"the bundled example no longer reads {SECRET_NAME}")
    inline = f'"{password}"  # inline here; keep it in a 0600 file instead: {_SECRET_REF}'
    return text.replace(_SECRET_REF, inline, 1)


def write_example(folder: Path, password: str) -> tuple[Path, Path]:
    """Write the example spec and its secret file (mode 0600) into ``folder``.

    Refuses, writing nothing, when either file exists already.
    """
    spec, secret = folder / SPEC_NAME, folder / SECRET_NAME
    taken = [str(p) for p in (spec, secret) if p.exists() or p.is_symlink()]
    if taken:
        raise ExampleError(f"{' and '.join(taken)} exist already; choose another folder")
    if folder.exists() and not folder.is_dir():
        raise ExampleError(f"{folder}: exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(secret, password + "\n", 0o600)
    write_atomic(spec, example_spec().read_text(), 0o644)
    return spec, secret

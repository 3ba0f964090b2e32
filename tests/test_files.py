"""Atomic writes: the whole new file or the old one, never a part, on a real filesystem."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from photonkick.server.files import (
    PARTIAL_GLOB,
    create_exclusive,
    read_or_create_secret,
    write_atomic,
    write_atomic_with,
)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_bytes_and_text_with_the_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_atomic(tmp_path / "secret.txt", "s3cret\n", 0o600)
        write_atomic(tmp_path / "blob", b"\x00\xff", 0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "secret.txt").read_bytes() == b"s3cret\n"
    assert (tmp_path / "secret.txt").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "blob").read_bytes() == b"\x00\xff"
    assert (tmp_path / "blob").stat().st_mode & 0o777 == 0o644
    assert _names(tmp_path) == ["blob", "secret.txt"]


def test_replaces_an_existing_file_in_one_step(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.write_text("old")
    inode = target.stat().st_ino
    write_atomic(target, "new")
    assert target.read_text() == "new"
    assert target.stat().st_ino != inode  # a rename, not a rewrite in place


def test_a_failing_writer_leaves_the_old_file_and_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "out.iso"
    target.write_bytes(b"old contents")

    def broken(f: BinaryIO) -> None:
        f.write(b"half")
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"):
        write_atomic_with(target, broken)
    assert target.read_bytes() == b"old contents"
    assert _names(tmp_path) == ["out.iso"]


def test_verify_sees_the_finished_file_and_can_refuse_it(tmp_path: Path) -> None:
    target = tmp_path / "x"
    seen: list[bytes] = []

    def refuse(tmp: Path) -> None:
        seen.append(tmp.read_bytes())
        assert tmp.parent == tmp_path and tmp.match(PARTIAL_GLOB)
        raise ValueError("not what was expected")

    with pytest.raises(ValueError):
        write_atomic_with(target, lambda f: f.write(b"payload"), verify=refuse)
    assert seen == [b"payload"]
    assert _names(tmp_path) == []


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a real filesystem that runs out of space."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_keeps_the_old_file_and_leaves_no_partial(small_fs: Path) -> None:
    target = small_fs / "manifest.json"
    write_atomic(target, "old\n")
    with pytest.raises(OSError) as caught:
        write_atomic(target, b"x" * (1 << 20))
    assert caught.value.errno == 28  # ENOSPC
    assert target.read_text() == "old\n"
    assert _names(small_fs) == ["manifest.json"]


def test_a_secret_is_created_once_as_a_private_file_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "admin-token"
    made: list[str] = []

    def generate() -> str:
        made.append("tok3n")
        return "tok3n"

    old = os.umask(0)
    try:
        assert read_or_create_secret(path, generate) == "tok3n"
        assert read_or_create_secret(path, generate) == "tok3n"
    finally:
        os.umask(old)
    assert made == ["tok3n"]
    assert path.read_text() == "tok3n\n"
    assert path.stat().st_mode & 0o777 == 0o600


def test_create_exclusive_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "key"
    create_exclusive(path, b"first")
    with pytest.raises(FileExistsError):
        create_exclusive(path, b"second")
    assert path.read_bytes() == b"first"
    assert path.stat().st_mode & 0o077 == 0

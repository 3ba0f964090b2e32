"""Find the photon-os-installer version inside an installer initrd, without root or mounts.

The Photon ISO's ``isolinux/initrd.img`` is a newc cpio archive compressed with gzip (the
installer's ISO builder runs ``find . | cpio -o -H newc | gzip -9``). Its RPM database is
deleted when the initrd is built, but the installer's Python package metadata stays: the
installer itself reads its version from it at import (``pkg_resources`` or
``importlib.metadata``). So the version is the ``Version:`` header of
``site-packages/photon_installer-<version>*.egg-info/PKG-INFO`` (a setuptools install, as
Photon's RPM builds it) or ``...dist-info/METADATA`` (a wheel install).

The archive is read as a stream: gzip, xz, zstd (through the ``zstd`` tool) or plain cpio,
including an uncompressed early cpio (microcode) in front of the compressed one.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import subprocess
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from photonkick.kickstarts.errors import PhotonkickError

__all__ = ["InitrdError", "InstallerInInitrd", "installer_version"]

_HEADER = 110
_NEWC_MAGICS = (b"070701", b"070702")
_TRAILER = "TRAILER!!!"
_METADATA_LIMIT = 1 << 20
_METADATA = re.compile(
    r"(?:usr/)?lib(?:64)?/python3[^/]*/(?:site|dist)-packages/"
    r"photon[_-]installer-(?P<name_version>[^/-]+)[^/]*\.(?P<kind>egg-info|dist-info)"
    r"(?P<file>/PKG-INFO|/METADATA)?",
    re.IGNORECASE,
)
_VERSION_HEADER = re.compile(r"^Version:[ \t]*(\S+)[ \t]*$", re.MULTILINE)


class InitrdError(PhotonkickError):
    """The initrd cannot be read, or holds no photon-os-installer metadata."""


@dataclass(frozen=True)
class InstallerInInitrd:
    """The installer version found in an initrd, and the archive member it came from."""

    version: str
    member: str


def installer_version(initrd: Path) -> InstallerInInitrd:
    """The photon-os-installer version recorded in the initrd's Python package metadata.

    Raises InitrdError naming the file when it is not a (compressed) cpio archive or has
    no ``photon_installer`` metadata under ``site-packages``.
    """
    try:
        with initrd.open("rb") as raw:
            found = _scan(raw, initrd)
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise InitrdError(f"cannot read {initrd}: {e}") from e
    if found is None:
        raise InitrdError(
            f"{initrd}: no photon-os-installer package metadata in this initrd "
            "(no site-packages/photon_installer-*.egg-info or *.dist-info); "
            "set photon.installer in the spec to the installer version of this ISO"
        )
    return found


def _scan(raw: BinaryIO, initrd: Path) -> InstallerInInitrd | None:
    """Walk the uncompressed archives in front, then the compressed one, until found."""
    stream = _Buffered(raw)
    while stream.peek(6) in _NEWC_MAGICS:
        found = _walk_cpio(stream, initrd)
        if found is not None:
            return found
        _skip_zero_padding(stream)
    magic = stream.peek(6)
    if not magic:
        return None
    raw.seek(raw.tell() - stream.buffered)
    with _decompressed(raw, magic, initrd) as inner:
        unpacked = _Buffered(inner)
        if unpacked.peek(6) not in _NEWC_MAGICS:
            raise InitrdError(f"{initrd}: the compressed data is not a newc cpio archive")
        while unpacked.peek(6) in _NEWC_MAGICS:
            found = _walk_cpio(unpacked, initrd)
            if found is not None:
                return found
            _skip_zero_padding(unpacked)
    return None


@contextmanager
def _decompressed(raw: BinaryIO, magic: bytes, initrd: Path) -> Iterator[_Readable]:
    if magic.startswith(b"\x1f\x8b"):
        with gzip.GzipFile(fileobj=raw) as gz:
            yield gz
    elif magic.startswith(b"\xfd7zXZ"):
        with lzma.LZMAFile(raw) as xz:
            yield xz
    elif magic.startswith(b"\x28\xb5\x2f\xfd"):
        with _zstd_stream(raw, initrd) as zst:
            yield zst
    else:
        raise InitrdError(
            f"{initrd}: not an initrd photonkick can read (neither a cpio archive nor "
            f"gzip, xz or zstd data; it starts with {magic.hex()})"
        )


@contextmanager
def _zstd_stream(raw: BinaryIO, initrd: Path) -> Iterator[_Readable]:
    tool = shutil.which("zstd")
    if tool is None:
        raise InitrdError(f"{initrd}: is zstd-compressed; install the zstd tool to read it")
    # The tool reads the file descriptor itself: put it where our buffered reads are.
    os.lseek(raw.fileno(), raw.tell(), os.SEEK_SET)
    with subprocess.Popen(
        [tool, "-dcq"], stdin=raw, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as proc:
        assert proc.stdout is not None
        try:
            yield proc.stdout
        finally:
            proc.kill()


class _Readable(Protocol):
    def read(self, n: int, /) -> bytes: ...


class _Buffered:
    """A read-only stream with ``peek`` of any length, over any readable stream."""

    def __init__(self, inner: _Readable) -> None:
        self._inner = inner
        self._head = b""

    @property
    def buffered(self) -> int:
        """Bytes read from the inner stream but not yet consumed."""
        return len(self._head)

    def read(self, n: int) -> bytes:
        out = self._head[:n]
        self._head = self._head[n:]
        return out + self._read_inner(n - len(out))

    def peek(self, n: int) -> bytes:
        if len(self._head) < n:
            self._head += self._read_inner(n - len(self._head))
        return self._head[:n]

    def _read_inner(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self._inner.read(n - len(out))
            if not chunk:
                break
            out += chunk
        return out


def _skip_zero_padding(stream: _Buffered) -> None:
    """Archives are padded with NUL bytes (to 512 bytes or more) before the next one."""
    while stream.peek(4) == b"\0\0\0\0":
        stream.read(4)


def _walk_cpio(stream: _Buffered, initrd: Path) -> InstallerInInitrd | None:
    """Read one newc archive up to its trailer; the metadata member when one turns up."""
    offset = 0
    from_name: InstallerInInitrd | None = None
    while True:
        header = stream.read(_HEADER)
        if len(header) < _HEADER or header[:6] not in _NEWC_MAGICS:
            raise InitrdError(f"{initrd}: damaged cpio archive (bad header at byte {offset})")
        try:
            size = int(header[54:62], 16)
            name_size = int(header[94:102], 16)
        except ValueError:
            raise InitrdError(f"{initrd}: damaged cpio archive at byte {offset}") from None
        name = stream.read(name_size)[:-1].decode("utf-8", "replace")
        stream.read(_pad(_HEADER + name_size))
        offset += _HEADER + name_size + _pad(_HEADER + name_size)
        if name == _TRAILER:
            return from_name
        member = name.removeprefix("./").lstrip("/")
        match = _METADATA.fullmatch(member)
        if match and size <= _METADATA_LIMIT and (match["file"] or size):
            data = stream.read(size)
            version = _version_header(data.decode("utf-8", "replace"))
            if version is not None:
                return InstallerInInitrd(version, member)
        elif match and from_name is None:
            from_name = InstallerInInitrd(match["name_version"], member)
            _skip(stream, size)
        else:
            _skip(stream, size)
        stream.read(_pad(size))
        offset += size + _pad(size)


def _version_header(text: str) -> str | None:
    headers = text.split("\n\n", 1)[0]
    match = _VERSION_HEADER.search(headers)
    return match.group(1) if match else None


def _skip(stream: _Buffered, size: int) -> None:
    while size > 0:
        chunk = stream.read(min(size, 1 << 20))
        if not chunk:
            return
        size -= len(chunk)


def _pad(n: int) -> int:
    return -n % 4

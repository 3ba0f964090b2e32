"""Import a Photon ISO for network installs: kernel, initrd and the RPM repository.

``import_iso`` lays out ``<data_dir>/<release>/`` as::

    isolinux/vmlinuz
    isolinux/initrd.img
    RPMS/...                 (x86_64/, noarch/, repodata/ as on the ISO)
    manifest.json            (release, source ISO, volume id, size and SHA-256 of each file)

The ISO is read with pycdlib (no mount, no root). Every file is copied through a temporary
file and a rename, so an interrupted import never leaves a partial file under its real
name; the manifest is written last. Importing the same ISO again copies nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from photonkick.server._isofs import IsoError, IsoImage
from photonkick.server.files import PARTIAL_GLOB, write_atomic, write_atomic_with

__all__ = [
    "MANIFEST",
    "ImportedRelease",
    "IsoError",
    "import_iso",
    "read_manifest",
    "release_from_rpms",
]

MANIFEST = "manifest.json"
KERNEL = "isolinux/vmlinuz"
INITRD = "isolinux/initrd.img"
REPO = "RPMS"
REPOMD = "RPMS/repodata/repomd.xml"
MARKER = "PHOTON_VMWARE_CD"
FORMAT = 1
_HEAD = 1 << 20
_CHUNK = 1 << 20
_RELEASE_RPM = re.compile(r"photon-release-(\d+(?:\.\d+)*)-[^/]+\.rpm")
_RELEASE_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]*")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ImportedRelease:
    """What ``import_iso`` left under ``root`` and what it had to do for it."""

    release: str
    root: Path
    manifest: Path
    volume_id: str
    files: int
    total_bytes: int
    copied: tuple[str, ...]
    removed: tuple[str, ...]
    skipped_symlinks: tuple[str, ...]

    @property
    def kernel(self) -> Path:
        """``isolinux/vmlinuz`` under the release folder."""
        return self.root / KERNEL

    @property
    def initrd(self) -> Path:
        """``isolinux/initrd.img`` under the release folder."""
        return self.root / INITRD

    @property
    def repo(self) -> Path:
        """The RPM repository (``RPMS/``) under the release folder."""
        return self.root / REPO

    @property
    def changed(self) -> bool:
        """Whether this import copied or removed anything."""
        return bool(self.copied or self.removed)


def release_from_rpms(paths: Iterable[str]) -> set[str]:
    """Photon release versions named by ``photon-release-<version>-*.rpm`` files in ``paths``."""
    return {m.group(1) for p in paths if (m := _RELEASE_RPM.fullmatch(p.rsplit("/", 1)[-1]))}


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of an imported release folder, or None if absent or unreadable."""
    try:
        data = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    if not isinstance(data.get("files"), dict):
        return None
    return data


def import_iso(
    iso: Path,
    data_dir: Path,
    progress: Progress | None = None,
    *,
    release: str | None = None,
    verify: bool = False,
) -> ImportedRelease:
    """Copy what network installs need from the Photon ISO ``iso`` to ``data_dir/<release>``.

    The release comes from the ``photon-release-<version>-*.rpm`` in the ISO's ``RPMS/``
    (the volume id ``PHOTON_<yyyymmdd>`` is a build date, not a release); ``release``
    overrides it. ``progress(done, total)`` is called with bytes as files are read.
    Re-importing the ISO recorded in the manifest copies nothing when every file is still
    there with its size; ``verify`` re-reads and re-hashes everything instead, and repairs
    what differs.
    A file that is not an ISO, or an ISO without ``isolinux/vmlinuz``,
    ``isolinux/initrd.img`` or an RPM repository, raises ``IsoError`` before anything
    is written.
    """
    iso = iso.absolute()
    with IsoImage(iso) as image:
        missing = [f"/{p}" for p in (KERNEL, INITRD) if not image.is_file(p)]
        if missing:
            raise IsoError(f"{iso}: not a Photon OS ISO: it has no {' and no '.join(missing)}")
        if not image.is_file(REPOMD):
            raise IsoError(f"{iso}: has no RPM repository (/{REPOMD} is missing)")
        repo = list(image.entries(REPO))
        detected = release_from_rpms(e.path for e in repo if e.kind == "file")
        chosen, source = _choose_release(iso, detected, release)
        # Targets get the canonical names even where the ISO spells them otherwise.
        plan = {KERNEL: image.get(KERNEL), INITRD: image.get(INITRD)}
        plan |= {REPO + e.path[len(REPO) :]: e for e in repo if e.kind == "file"}
        sources = {rel: e.path for rel, e in plan.items() if e is not None}
        sizes = {rel: e.size for rel, e in plan.items() if e is not None}
        symlinks = tuple(REPO + e.path[len(REPO) :] for e in repo if e.kind == "symlink")
        root = data_dir.absolute() / chosen
        if root.exists() and not root.is_dir():
            raise IsoError(f"{root}: exists and is not a folder")
        identity = {
            "name": iso.name,
            "size": iso.stat().st_size,
            "head_sha256": _head_sha256(iso),
        }
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "release": chosen,
            "release_from": source,
            "detected_releases": sorted(detected),
            "volume_id": image.volume_id,
            "photon_vmware_cd": image.is_file(MARKER),
            "source": identity,
            "skipped_symlinks": list(symlinks),
        }
        total = sum(sizes.values())
        old = read_manifest(root)
        if old is not None and not verify and _same_import(old, manifest, sizes, root):
            if progress:
                progress(total, total)
            return _result(root, manifest, sizes, (), (), symlinks)
        try:
            trusted = None if verify else old
            copied, removed, files = _sync(
                image, root, sources, sizes, old, trusted, total, progress
            )
            manifest["files"] = files
            _write_json(root / MANIFEST, manifest)
        except OSError as e:
            raise IsoError(f"cannot import {iso} into {root}: {e}") from e
        return _result(root, manifest, sizes, copied, removed, symlinks)


def _choose_release(iso: Path, detected: set[str], forced: str | None) -> tuple[str, str]:
    if forced is not None:
        if not _RELEASE_NAME.fullmatch(forced):
            raise IsoError(
                f"release {forced!r} is not usable as a folder name (letters, digits, . _ + -)"
            )
        return forced, "caller"
    if not detected:
        raise IsoError(
            f"{iso}: cannot tell the Photon release: no photon-release-<version>-*.rpm "
            "under /RPMS; give the release explicitly"
        )
    if len(detected) > 1:
        raise IsoError(
            f"{iso}: several photon-release RPMs ({', '.join(sorted(detected))}); "
            "give the release explicitly"
        )
    return next(iter(detected)), "photon-release RPM"


def _head_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.sha256(f.read(_HEAD)).hexdigest()


def _same_import(
    old: dict[str, Any], new: dict[str, Any], sizes: dict[str, int], root: Path
) -> bool:
    """The same ISO was imported here before and every file is still in place."""
    if any(old.get(k) != new.get(k) for k in ("release", "volume_id")):
        return False
    # The ISO's size and first MiB (volume descriptors, path tables, root folder) identify
    # it; its file name may change.
    source, old_source = new["source"], old.get("source")
    if not isinstance(old_source, dict) or any(
        old_source.get(k) != source[k] for k in ("size", "head_sha256")
    ):
        return False
    files = old["files"]
    if set(files) != set(sizes):
        return False
    for rel, size in sizes.items():
        entry = files[rel]
        if not isinstance(entry, dict) or entry.get("size") != size:
            return False
        target = root / rel
        if not target.is_file() or target.is_symlink() or target.stat().st_size != size:
            return False
    return True


def _sync(
    image: IsoImage,
    root: Path,
    sources: dict[str, str],
    sizes: dict[str, int],
    old: dict[str, Any] | None,
    trusted: dict[str, Any] | None,
    total: int,
    progress: Progress | None,
) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, dict[str, Any]]]:
    """Make ``root`` hold exactly the planned files; the old manifest goes first.

    Files of ``old`` that the ISO no longer has are removed; the SHA-256 values recorded
    in ``trusted`` stand for the files on disk (others are hashed).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)
    _remove_partials(root)
    old_files: dict[str, Any] = {} if old is None else old["files"]
    known_files: dict[str, Any] = {} if trusted is None else trusted["files"]
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    if progress:
        progress(0, total)
    copied: list[str] = []
    files: dict[str, dict[str, Any]] = {}
    for rel, size in sorted(sizes.items()):
        target = root / rel
        known = _known_sha256(target, size, known_files.get(rel))
        if known is not None:
            digest = _hash_chunks(image.stream(sources[rel]), advance)
            if digest == known:
                files[rel] = {"size": size, "sha256": digest}
                continue
            digest = _copy(image.stream(sources[rel]), target, None)
        else:
            digest = _copy(image.stream(sources[rel]), target, advance)
        files[rel] = {"size": size, "sha256": digest}
        copied.append(rel)
    removed = []
    for rel in sorted(set(old_files) - set(sizes)):
        target = root / rel
        if _inside(root, target) and target.is_file() and not target.is_symlink():
            target.unlink()
            removed.append(rel)
            _prune(root, target.parent)
    return tuple(copied), tuple(removed), files


def _known_sha256(target: Path, size: int, entry: object) -> str | None:
    """SHA-256 of the file already at ``target`` if it has the right size, else None."""
    try:
        stat = target.lstat()
    except FileNotFoundError:
        return None
    if not target.is_file() or target.is_symlink() or stat.st_size != size:
        return None
    if isinstance(entry, dict) and entry.get("size") == size and "sha256" in entry:
        return str(entry["sha256"])
    with target.open("rb") as f:
        return _hash_chunks(iter(lambda: f.read(_CHUNK), b""), None)


def _hash_chunks(chunks: Iterator[bytes], advance: Callable[[int], None] | None) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
        if advance:
            advance(len(chunk))
    return h.hexdigest()


def _copy(chunks: Iterator[bytes], target: Path, advance: Callable[[int], None] | None) -> str:
    """Stream ``chunks`` into ``target`` via a temporary file and a rename; return SHA-256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()

    def write(f: BinaryIO) -> None:
        for chunk in chunks:
            f.write(chunk)
            h.update(chunk)
            if advance:
                advance(len(chunk))

    write_atomic_with(target, write)
    return h.hexdigest()


def _remove_partials(root: Path) -> None:
    """Temporary files an earlier, killed import left behind."""
    for path in root.rglob(PARTIAL_GLOB):
        if path.is_file() and not path.is_symlink():
            path.unlink()


def _inside(root: Path, path: Path) -> bool:
    return ".." not in Path(os.path.relpath(path, root)).parts


def _prune(root: Path, folder: Path) -> None:
    while folder != root and _inside(root, folder):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _result(
    root: Path,
    manifest: dict[str, Any],
    sizes: dict[str, int],
    copied: tuple[str, ...],
    removed: tuple[str, ...],
    symlinks: tuple[str, ...],
) -> ImportedRelease:
    return ImportedRelease(
        release=str(manifest["release"]),
        root=root,
        manifest=root / MANIFEST,
        volume_id=str(manifest["volume_id"]),
        files=len(sizes),
        total_bytes=sum(sizes.values()),
        copied=copied,
        removed=removed,
        skipped_symlinks=symlinks,
    )

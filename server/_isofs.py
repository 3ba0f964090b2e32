"""The only pycdlib user: read, edit and write ISO images without mounting them.

Paths here are relative POSIX paths as a Linux mount would show them (``isolinux/vmlinuz``):
Rock Ridge names when the ISO has them, else Joliet names, else ISO9660 identifiers
lowercased without their ``;1`` version. File data is streamed, never held whole, except
for the small files a caller reads or adds on purpose.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from photonkick.kickstarts.errors import PhotonkickError
from photonkick.server.files import write_atomic_with

CHUNK = 1 << 20
Kind = Literal["file", "dir", "symlink"]
Namespace = Literal["rr_path", "joliet_path", "iso_path"]
PLATFORMS = {0x00: "bios", 0xEF: "uefi"}


class IsoError(PhotonkickError):
    """An ISO image that cannot be read, is not what was expected, or cannot be written."""


@dataclass(frozen=True)
class IsoEntry:
    """One directory entry: its path, what it is, and its size in bytes (0 for dirs)."""

    path: str
    kind: Kind
    size: int


@dataclass(frozen=True)
class BootEntry:
    """One El Torito boot entry: firmware platform, boot image path, boot-info-table."""

    platform: str
    path: str | None
    boot_info_table: bool


@dataclass
class _Node:
    entry: IsoEntry
    lookup: str
    record: Any


class IsoImage:
    """An ISO opened read-only for inspection, and for edits written to a new file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._iso: Any = pycdlib.PyCdlib()
        self._keep: list[BinaryIO] = []
        if path.is_dir():
            raise IsoError(f"{path}: is a folder, not an ISO image")
        try:
            self._iso.open(str(path))
        except FileNotFoundError:
            raise IsoError(f"{path}: no such file") from None
        except OSError as e:
            raise IsoError(f"{path}: cannot read: {e.strerror or e}") from None
        except PyCdlibException as e:
            raise IsoError(f"{path}: not an ISO 9660 image ({e})") from None
        self._drop_unkeepable_hybrid()
        self.namespace: Namespace = (
            "rr_path"
            if self._iso.has_rock_ridge()
            else "joliet_path"
            if self._iso.has_joliet()
            else "iso_path"
        )
        self._nodes: dict[str, _Node] = {}
        try:
            self._index("", "/")
        except PyCdlibException as e:
            self.close()
            raise IsoError(f"{path}: unreadable directory tree ({e})") from None

    def __enter__(self) -> IsoImage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the image and any data added to it."""
        try:
            self._iso.close()
        except PyCdlibException:
            pass
        for f in self._keep:
            f.close()
        self._keep.clear()

    @property
    def volume_id(self) -> str:
        """The primary volume descriptor's volume identifier, trailing blanks removed."""
        raw: bytes = self._iso.pvd.volume_identifier
        return raw.decode("ascii", "replace").rstrip(" \x00")

    @property
    def loses_system_area(self) -> bool:
        """Whether mastering drops the image's system area (a hybrid MBR/GPT for USB boot).

        pycdlib rewrites syslinux isohybrid MBRs that match the boot entries; any other
        non-empty system area (xorriso's GRUB hybrid MBR and GPT, or an isohybrid MBR with
        no EFI partition for a UEFI boot entry) refers to the old layout and is not carried
        over. El Torito (CD/DVD) booting is unaffected.
        """
        if self._iso.isohybrid_mbr is not None:
            return False
        with self.path.open("rb") as f:
            return any(f.read(16 * 2048))

    def _drop_unkeepable_hybrid(self) -> None:
        """Forget an isohybrid MBR that pycdlib could not update after an edit.

        pycdlib moves the EFI partition of an isohybrid MBR along with the first UEFI boot
        entry (and the Mac one with the second), and fails when the MBR has no such
        partition, as with ``xorriso -as mkisofs -isohybrid-mbr`` and no GPT.
        """
        mbr = self._iso.isohybrid_mbr
        catalog = self._iso.eltorito_boot_catalog
        if mbr is None or catalog is None:
            return
        platforms = [catalog.validation_entry.platform_id] * (1 + len(catalog.standalone_entries))
        for section in catalog.sections:
            platforms += [section.platform_id] * len(section.section_entries)
        uefi = platforms.count(0xEF)
        if (uefi >= 1 and not mbr.efi) or (uefi >= 2 and not mbr.mac):
            self._iso.rm_isohybrid()

    def entries(self, top: str = "") -> Iterator[IsoEntry]:
        """Every entry below ``top`` (recursively, sorted by path), ``top`` itself excluded."""
        prefix = self._key(top) + "/" if self._key(top) else ""
        for key in sorted(self._nodes):
            if key.startswith(prefix):
                yield self._nodes[key].entry

    def get(self, path: str) -> IsoEntry | None:
        """The entry at ``path``, or None."""
        node = self._nodes.get(self._key(path))
        return None if node is None else node.entry

    def is_file(self, path: str) -> bool:
        """Whether ``path`` is a regular file (not a folder, not a symlink)."""
        entry = self.get(path)
        return entry is not None and entry.kind == "file"

    def stream(self, path: str, chunk: int = CHUNK) -> Iterator[bytes]:
        """The data of the file at ``path``, in chunks."""
        node = self._file(path)
        if node.entry.size == 0:
            return
        with self._iso.open_file_from_iso(**{self.namespace: node.lookup}) as f:
            while data := f.read(chunk):
                yield data

    def read(self, path: str) -> bytes:
        """The whole file at ``path``; for small files such as boot menus."""
        return b"".join(self.stream(path))

    def boot_entries(self) -> list[BootEntry]:
        """The El Torito boot entries, initial entry first; empty if not bootable."""
        catalog = self._iso.eltorito_boot_catalog
        if catalog is None:
            return []
        by_inode = {
            id(node.record.inode): key
            for key, node in self._nodes.items()
            if node.entry.kind == "file" and node.record.inode is not None
        }

        def entry(platform_id: int, boot: Any) -> BootEntry:
            inode = boot.inode
            return BootEntry(
                platform=PLATFORMS.get(platform_id, f"0x{platform_id:02x}"),
                path=None if inode is None else by_inode.get(id(inode)),
                boot_info_table=inode is not None and inode.boot_info_table is not None,
            )

        found = [entry(catalog.validation_entry.platform_id, catalog.initial_entry)]
        for section in catalog.sections:
            found += [entry(section.platform_id, e) for e in section.section_entries]
        return found

    def replace(self, path: str, data: bytes) -> None:
        """Give the file at ``path`` new contents (every name of it sees them)."""
        with self._pycdlib_errors():
            self._replace(path, data)

    def add(self, path: str, data: bytes) -> None:
        """Add a file (mode 0444) to an existing folder; ``path`` must not exist yet."""
        with self._pycdlib_errors():
            self._add(path, data)

    def _replace(self, path: str, data: bytes) -> None:
        node = self._file(path)
        fp = io.BytesIO(data)
        self._keep.append(fp)
        self._call(
            self._iso.update_file_contents_fp, fp, len(data), **{self.namespace: node.lookup}
        )
        self._nodes[self._key(node.entry.path)] = _Node(
            IsoEntry(node.entry.path, "file", len(data)), node.lookup, node.record
        )

    def _add(self, path: str, data: bytes) -> None:
        path = path.strip("/")
        parent, _, name = path.rpartition("/")
        if self._key(path) in self._nodes:
            raise IsoError(f"{self.path}: /{path} exists already")
        folder = self._nodes.get(self._key(parent)) if parent else None
        if parent and (folder is None or folder.entry.kind != "dir"):
            raise IsoError(f"{self.path}: no folder /{parent} to put {name} in")
        parent_iso = "/" if folder is None else self._iso_path(folder)
        iso_name = self._free_iso_name(parent_iso, name)
        iso_path = parent_iso.rstrip("/") + "/" + iso_name
        fp = io.BytesIO(data)
        self._keep.append(fp)
        kwargs: dict[str, Any] = {"iso_path": iso_path}
        if self._iso.has_rock_ridge():
            kwargs.update(rr_name=name, file_mode=0o100444)
        if self._iso.has_joliet():
            joliet_parent = self._joliet_dir(folder)
            if joliet_parent is not None:
                kwargs["joliet_path"] = joliet_parent + "/" + name
        self._call(self._iso.add_fp, fp, len(data), **kwargs)
        record = self._iso.get_record(iso_path=iso_path)
        if self.namespace == "iso_path" and self._name(record, parent_iso)[0] != name.lower():
            raise IsoError(
                f"{self.path}: has neither Rock Ridge nor Joliet names and cannot hold a file "
                f"named {name} (only {iso_name})"
            )
        lookup = iso_path if self.namespace == "iso_path" else "/" + path
        self._nodes[self._key(path)] = _Node(IsoEntry(path, "file", len(data)), lookup, record)

    def write_atomically(
        self,
        out: Path,
        *,
        progress: Callable[[int, int], None] | None = None,
        verify: Callable[[Path], None] | None = None,
    ) -> None:
        """Master the (edited) image to ``out`` through a temporary file and a rename.

        ``progress(done, total)`` gets bytes written; ``verify`` may inspect (and reject,
        by raising) the finished temporary file before it takes the name ``out``.
        """

        def master(f: BinaryIO) -> None:
            callback = None if progress is None else (lambda d, t, _o: progress(d, t))
            self._call(self._iso.write_fp, f, progress_cb=callback)

        write_atomically(out, master, verify=verify)

    @contextmanager
    def _pycdlib_errors(self) -> Iterator[None]:
        """pycdlib's own errors, whichever call raised them, as an ``IsoError``."""
        try:
            yield
        except PyCdlibException as e:
            raise IsoError(f"{self.path}: {e}") from None

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except PyCdlibException as e:
            raise IsoError(f"{self.path}: {e}") from None

    def _file(self, path: str) -> _Node:
        node = self._nodes.get(self._key(path))
        if node is None or node.entry.kind != "file":
            raise IsoError(f"{self.path}: no file /{path.strip('/')}")
        return node

    def _key(self, path: str) -> str:
        """Index key of a path: ISO9660 names match whatever their case."""
        path = path.strip("/")
        return path.lower() if self.namespace == "iso_path" else path

    def _iso_path(self, folder: _Node) -> str:
        """The ISO9660 path of a folder, whatever names it is listed under."""
        if self.namespace != "joliet_path":
            return str(self._iso.full_path_from_dirrecord(folder.record))
        current = "/"
        for part in folder.entry.path.split("/"):
            for child in self._iso.list_children(iso_path=current):
                ident = bytes(child.file_identifier()).decode("ascii", "replace")
                if child.is_dir() and not child.is_dot() and not child.is_dotdot():
                    if ident.lower() == part.lower():
                        current = current.rstrip("/") + "/" + ident
                        break
            else:
                raise IsoError(f"{self.path}: /{folder.entry.path} has no ISO9660 name")
        return current

    def _joliet_dir(self, folder: _Node | None) -> str | None:
        """The Joliet path of a folder when the Joliet tree has it under the same name."""
        if folder is None:
            return ""
        candidate = "/" + folder.entry.path
        try:
            record = self._iso.get_record(joliet_path=candidate)
        except PyCdlibException:
            return None
        return candidate if record.is_dir() else None

    def _free_iso_name(self, parent_iso: str, name: str) -> str:
        """An unused ISO9660 identifier for ``name`` in the folder ``parent_iso``."""
        taken = {
            bytes(c.file_identifier()).decode("ascii", "replace").upper()
            for c in self._iso.list_children(iso_path=parent_iso)
        }
        stem, dot, ext = name.upper().rpartition(".")
        if not dot:
            stem, ext = ext, ""
        stem, ext = _d_chars(stem) or "_", _d_chars(ext)
        # Level 1 allows 8.3 names, the other levels 30 characters for both parts.
        if self._iso.interchange_level == 1:
            room, ext = 8, ext[:3]
        else:
            ext = ext[:20]
            room = 30 - len(ext)
        stem = stem[:room]
        candidate, n = stem, 0
        while f"{candidate}.{ext};1" in taken:
            n += 1
            candidate = stem[: room - len(str(n))] + str(n)
        return f"{candidate}.{ext};1"

    def _index(self, rel: str, lookup: str) -> None:
        for child in self._iso.list_children(**{self.namespace: lookup}):
            if child.is_dot() or child.is_dotdot():
                continue
            name, child_lookup = self._name(child, lookup)
            path = f"{rel}/{name}" if rel else name
            kind: Kind = "symlink" if child.is_symlink() else "dir" if child.is_dir() else "file"
            size = child.get_data_length() if kind == "file" else 0
            self._nodes[self._key(path)] = _Node(IsoEntry(path, kind, size), child_lookup, child)
            if kind == "dir":
                self._index(path, child_lookup)

    def _name(self, record: Any, parent: str) -> tuple[str, str]:
        """Display name of a record and the path pycdlib finds it by."""
        raw: bytes = bytes(record.file_identifier())
        if self.namespace == "rr_path" and record.rock_ridge is not None:
            name = bytes(record.rock_ridge.name()).decode("utf-8", "replace")
        elif self.namespace == "joliet_path":
            name = raw.decode("utf-16_be", "replace")
        else:
            name = raw.decode("ascii", "replace")
            lookup = parent.rstrip("/") + "/" + name
            if not record.is_dir():
                name = name.rsplit(";", 1)[0].removesuffix(".")
            return name.lower(), lookup
        return name, parent.rstrip("/") + "/" + name


def new_iso(files: Mapping[str, bytes], volume_id: str, out: Path, *, mode: int = 0o100444) -> None:
    """Write a fresh ISO9660 + Joliet + Rock Ridge image holding ``files`` (flat: root only)."""
    iso: Any = pycdlib.PyCdlib()
    try:
        iso.new(interchange_level=3, vol_ident=volume_id, joliet=3, rock_ridge="1.09")
        for name, data in sorted(files.items()):
            if "/" in name.strip("/"):
                raise IsoError(f"{name}: only files at the root are supported")
            stem, dot, ext = name.upper().rpartition(".")
            iso_name = f"{_d_chars(stem)}.{_d_chars(ext)};1" if dot else f"{_d_chars(ext)}.;1"
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                "/" + iso_name,
                rr_name=name,
                joliet_path="/" + name,
                file_mode=mode,
            )
        write_atomically(out, iso.write_fp)
    except PyCdlibException as e:
        raise IsoError(f"{out}: cannot build the ISO ({e})") from None
    finally:
        iso.close()


def _d_chars(text: str) -> str:
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch == "_") else "_" for ch in text)


def write_atomically(
    out: Path,
    writer: Callable[[BinaryIO], object],
    *,
    mode: int = 0o644,
    verify: Callable[[Path], None] | None = None,
) -> None:
    """Write ``out`` through a temporary file beside it: all of it or nothing at all."""
    out = out.absolute()
    if out.is_dir():
        raise IsoError(f"{out}: is a folder")
    if not out.parent.is_dir():
        raise IsoError(f"{out.parent}: no such folder")
    try:
        write_atomic_with(out, writer, mode=mode, verify=verify)
    except OSError as e:
        raise IsoError(f"{out}: cannot write: {e.strerror or e}") from e

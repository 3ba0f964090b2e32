"""Build small Photon-shaped ISOs for tests: the layout of a real one, fake payloads.

The shape follows the Photon installer's ISO builder: ``isolinux/`` (kernel, initrd,
syslinux menus or, for installer 2.9+, a GRUB ``eltorito.img``), ``boot/grub2/`` (grub.cfg
and the EFI image), ``RPMS/{x86_64,noarch,repodata}``, the ``PHOTON_VMWARE_CD`` marker,
Rock Ridge names, two El Torito entries and the volume id ``PHOTON_<yyyymmdd>``.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pycdlib

ISOLINUX_CFG = """\
# D-I config version 2.0
include menu.cfg
default vesamenu.c32
prompt 0
timeout 0
"""

MENU_CFG = """\
menu hshift 7
menu width 61

menu title PHOTON BOOT MENU
include stdmenu.cfg

default install
label install
\tmenu label ^Install
\tmenu default
\tkernel vmlinuz
\tappend initrd=initrd.img root=/dev/ram0 loglevel=3 photon.media=cdrom
"""

GRUB_CFG = """\
set default=0
set timeout=3
loadfont ascii
set gfxmode="1024x768"
gfxpayload=keep
set theme=/boot/grub2/themes/photon/theme.txt
terminal_output gfxterm
probe -s photondisk -u ($root)

menuentry "Install" {
linux /isolinux/vmlinuz root=/dev/ram0 loglevel=3 photon.media=UUID=$photondisk
initrd /isolinux/initrd.img
}"""

REPOMD = b"""<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo">
  <data type="primary"><location href="repodata/0123-primary.xml.gz"/></data>
</repomd>
"""


def payload(name: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes for a fake file, different for every name."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{name}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


@dataclass
class PhotonIsoSpec:
    """What to put in a test ISO. Defaults give a Photon 5.0 ISO with syslinux menus."""

    release: str = "5.0"
    volume_id: str = "PHOTON_20250101"
    grub_only: bool = False
    kernel: bool = True
    initrd: bool = True
    rpms: bool = True
    joliet: bool = False
    rock_ridge: bool = True
    bootable: bool = True
    rpm_size: int = 40_000
    extra: dict[str, bytes] = field(default_factory=dict)
    initrd_tree: dict[str, bytes] | None = None
    """Files of a real initrd (newc cpio, compressed as ``initrd_compression``); None: the
    initrd is opaque bytes."""
    initrd_compression: str = "gzip"


def photon_files(spec: PhotonIsoSpec) -> dict[str, bytes]:
    """The regular files of the ISO described by ``spec``, by Rock Ridge path."""
    files: dict[str, bytes] = {"PHOTON_VMWARE_CD": b"", "EULA.txt": b"license text\n"}
    if spec.kernel:
        files["isolinux/vmlinuz"] = payload("vmlinuz", 12_345)
    if spec.initrd and spec.initrd_tree is not None:
        files["isolinux/initrd.img"] = build_initrd(spec.initrd_tree, spec.initrd_compression)
    elif spec.initrd:
        files["isolinux/initrd.img"] = payload("initrd", 54_321)
    files["isolinux/sample_ks.cfg"] = b'{"hostname": "photon-sample"}\n'
    if spec.grub_only:
        files["isolinux/eltorito.img"] = payload("eltorito", 6_000)
    else:
        files["isolinux/isolinux.bin"] = payload("isolinux.bin", 4_096)
        files["isolinux/ldlinux.c32"] = payload("ldlinux", 1_000)
        files["isolinux/vesamenu.c32"] = payload("vesamenu", 1_000)
        files["isolinux/isolinux.cfg"] = ISOLINUX_CFG.encode()
        files["isolinux/menu.cfg"] = MENU_CFG.encode()
        files["isolinux/stdmenu.cfg"] = b"menu color title 1;36;44 #ffffffff #00000000 std\n"
    files["boot/grub2/grub.cfg"] = GRUB_CFG.encode()
    files["boot/grub2/efiboot.img"] = payload("efiboot", 8_192)
    files["boot/grub2/themes/photon/theme.txt"] = b'title-text: ""\n'
    if spec.rpms:
        dist = "ph" + spec.release.split(".")[0]
        for name in ("linux-6.1.10-1", "bash-5.2-1", "tdnf-3.5.2-1"):
            rpm = f"{name}.{dist}.x86_64.rpm"
            files[f"RPMS/x86_64/{rpm}"] = payload(rpm, spec.rpm_size)
        for rpm in (
            f"photon-release-{spec.release}-2.{dist}.noarch.rpm",
            f"photon-repos-{spec.release}-3.{dist}.noarch.rpm",
            f"ca-certificates-20230315-1.{dist}.noarch.rpm",
        ):
            files[f"RPMS/noarch/{rpm}"] = payload(rpm, spec.rpm_size)
        files["RPMS/repodata/repomd.xml"] = REPOMD
        files["RPMS/repodata/0123-primary.xml.gz"] = payload("primary", 3_000)
    files.update(spec.extra)
    return files


SITE_PACKAGES = "usr/lib/python3.11/site-packages"


def installer_initrd_tree(version: str | None, layout: str = "egg-info") -> dict[str, bytes]:
    """The files of an installer initrd as the installer's ISO builder leaves them.

    The RPM database is gone (the builder deletes it); the installer package's metadata is
    there as ``python3 setup.py install`` writes it (``egg-info``: a folder with PKG-INFO),
    as a wheel install does (``dist-info``: METADATA), or as an old distutils install does
    (``egg-info-file``: the metadata is the file itself). ``version`` None leaves it out.
    """
    tree = {
        "init": b"mount -t proc proc /proc\n/lib/systemd/systemd\n",
        "bin/bootphotoninstaller": b"#!/bin/bash\ncd /installer\n",
        "installer/EULA.txt": b"license\n",
        "usr/lib/systemd/systemd": payload("systemd", 70_000),
        f"{SITE_PACKAGES}/photon_installer/__init__.py": b"__version__ = version(__name__)\n",
        f"{SITE_PACKAGES}/photon_installer/installer.py": payload("installer.py", 30_000),
        f"{SITE_PACKAGES}/requests-2.28.1-py3.11.egg-info/PKG-INFO": (
            b"Metadata-Version: 2.1\nName: requests\nVersion: 2.28.1\n"
        ),
    }
    if version is None:
        return tree
    metadata = (
        f"Metadata-Version: 2.1\nName: photon-installer\nVersion: {version}\n"
        "Summary: Installer code for photon\n\nDescription with Version: 9.9 in the body\n"
    ).encode()
    if layout == "egg-info":
        tree[f"{SITE_PACKAGES}/photon_installer-{version}-py3.11.egg-info/PKG-INFO"] = metadata
        tree[f"{SITE_PACKAGES}/photon_installer-{version}-py3.11.egg-info/top_level.txt"] = (
            b"photon_installer\n"
        )
    elif layout == "dist-info":
        tree[f"{SITE_PACKAGES}/photon_installer-{version}.dist-info/METADATA"] = metadata
    elif layout == "egg-info-file":
        tree[f"{SITE_PACKAGES}/photon_installer-{version}-py3.11.egg-info"] = metadata
    else:
        raise ValueError(layout)
    return tree


COMPRESSORS = {
    "gzip": ["gzip", "-9", "-n"],
    "xz": ["xz", "--check=crc32", "-6"],
    "zstd": ["zstd", "-q", "-19"],
    "none": ["cat"],
}


def build_initrd(tree: dict[str, bytes], compression: str = "gzip") -> bytes:
    """A newc cpio of ``tree`` made by the real cpio tool, then compressed.

    Like the installer's builder: ``(find . | cpio -o -H newc --quiet | gzip -9)``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for rel, data in tree.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        names = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
        archive = subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet"],
            cwd=root,
            input=names,
            check=True,
            capture_output=True,
        ).stdout
    return subprocess.run(
        COMPRESSORS[compression], input=archive, check=True, capture_output=True
    ).stdout


class _Names:
    """Unique ISO9660 level-3 identifiers for Rock Ridge names, per directory."""

    def __init__(self) -> None:
        self._used: dict[str, set[str]] = {}
        self.dirs: dict[str, str] = {"": "/"}

    def _unique(self, parent: str, stem: str, ext: str) -> str:
        used = self._used.setdefault(parent, set())
        candidate, n = stem, 0
        while (candidate + ext) in used:
            n += 1
            candidate = f"{stem[: 28 - len(ext) - len(str(n))]}{n}"
        used.add(candidate + ext)
        return candidate + ext

    def file(self, parent: str, name: str) -> str:
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = ext, ""
        stem = re.sub(r"[^A-Z0-9_]", "_", stem.upper())[:24] or "_"
        ext = re.sub(r"[^A-Z0-9_]", "_", ext.upper())[:6]
        return self._unique(parent, stem, "." + ext) + ";1"

    def directory(self, parent: str, name: str) -> str:
        return self._unique(parent, re.sub(r"[^A-Z0-9_]", "_", name.upper())[:31], "")


def build_photon_iso(path: Path, spec: PhotonIsoSpec | None = None) -> dict[str, bytes]:
    """Write a Photon-shaped ISO to ``path``; return its regular files by Rock Ridge path."""
    spec = spec or PhotonIsoSpec()
    files = photon_files(spec)
    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=3,
        vol_ident=spec.volume_id,
        rock_ridge="1.09" if spec.rock_ridge else None,
        joliet=3 if spec.joliet else None,
    )
    names = _Names()
    iso_paths: dict[str, str] = {}

    def ensure_dir(rel: str) -> str:
        if rel in names.dirs:
            return names.dirs[rel]
        parent, _, leaf = rel.rpartition("/")
        parent_iso = ensure_dir(parent)
        iso_path = parent_iso.rstrip("/") + "/" + names.directory(parent, leaf)
        joliet = "/" + rel if spec.joliet else None
        iso.add_directory(iso_path, rr_name=leaf if spec.rock_ridge else None, joliet_path=joliet)
        names.dirs[rel] = iso_path
        return iso_path

    for rel in sorted(files):
        parent, _, leaf = rel.rpartition("/")
        iso_path = ensure_dir(parent).rstrip("/") + "/" + names.file(parent, leaf)
        iso_paths[rel] = iso_path
        data = files[rel]
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            iso_path,
            rr_name=leaf if spec.rock_ridge else None,
            joliet_path="/" + rel if spec.joliet else None,
        )
    if spec.rpms and spec.rock_ridge:
        # Photon's createrepo step leaves an absolute symlink to the build host's tree.
        repodata = names.dirs["RPMS/repodata"]
        iso.add_symlink(
            symlink_path=repodata + "/PRIMARY.XML;1",
            rr_symlink_name="primary.xml.gz",
            rr_path=PRIMARY_LINK[1],
        )
    bios = "isolinux/eltorito.img" if spec.grub_only else "isolinux/isolinux.bin"
    if not spec.bootable:
        iso.write(str(path))
        iso.close()
        return files
    iso.add_eltorito(
        iso_paths[bios],
        bootcatfile=names.dirs["isolinux"] + "/BOOT.CAT;1",
        rr_bootcatname="boot.cat" if spec.rock_ridge else None,
        joliet_bootcatfile="/isolinux/boot.cat" if spec.joliet else None,
        boot_load_size=4,
        boot_info_table=True,
    )
    iso.add_eltorito(
        iso_paths["boot/grub2/efiboot.img"],
        bootcatfile=names.dirs["isolinux"] + "/BOOT.CAT;1",
        rr_bootcatname="boot.cat" if spec.rock_ridge else None,
        joliet_bootcatfile="/isolinux/boot.cat" if spec.joliet else None,
        efi=True,
    )
    iso.write(str(path))
    iso.close()
    return files


PRIMARY_LINK = ("RPMS/repodata/primary.xml.gz", "/build/photon/RPMS/repodata/0123-primary.xml.gz")


def stage_photon_tree(root: Path, spec: PhotonIsoSpec | None = None) -> dict[str, bytes]:
    """Write the files of a Photon ISO to a folder, for mkisofs or xorriso to master."""
    spec = spec or PhotonIsoSpec()
    files = photon_files(spec)
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    if spec.rpms:
        (root / PRIMARY_LINK[0]).symlink_to(PRIMARY_LINK[1])
    return files


# The first 32 bytes syslinux's isohybrid MBR code starts with (xor bp,bp; 30 nops), which
# is how isohybrid images are recognised; the rest of the 432 bytes of code is not needed
# to master or read one. Syslinux's own isohdpfx.bin is used when it is installed.
ISOHYBRID_CODE_START = b"\x33\xed" + b"\x90" * 30


def build_isohybrid_iso(tmp_path: Path, *, gpt: bool) -> tuple[Path, dict[str, bytes]]:
    """A Photon ISO mastered as syslinux-style isohybrid (``-isohybrid-mbr``), with the
    GPT/EFI partition for the UEFI entry (``-isohybrid-gpt-basdat``) or without."""
    stage, iso = tmp_path / "stage", tmp_path / "photon.iso"
    files = stage_photon_tree(stage)
    mbr = Path("/usr/lib/ISOLINUX/isohdpfx.bin")
    if not mbr.is_file():
        mbr = tmp_path / "isohdpfx.bin"
        mbr.write_bytes(ISOHYBRID_CODE_START.ljust(432, b"\0"))
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-R", "-l", "-D", "-o", str(iso)]
        + ["-isohybrid-mbr", str(mbr)]
        + ["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot"]
        + ["-boot-load-size", "4", "-boot-info-table"]
        + ["-eltorito-alt-boot", "-e", "boot/grub2/efiboot.img", "-no-emul-boot"]
        + (["-isohybrid-gpt-basdat"] if gpt else [])
        + ["-V", "PHOTON_20250101", str(stage)],
        check=True,
        capture_output=True,
    )
    return iso, files

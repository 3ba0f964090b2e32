"""Photon ISOs: import for network installs, seed ISOs, remastering, boot-menu rewrites.

The ISOs under test are built by ``photon_iso.py``; what photonkick writes is read back with
Debian's xorriso and genisoimage's isoinfo, never with pycdlib alone.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from photon_iso import (
    GRUB_CFG,
    ISOLINUX_CFG,
    MENU_CFG,
    PhotonIsoSpec,
    build_isohybrid_iso,
    build_photon_iso,
    stage_photon_tree,
)

from photonkick.kickstarts.errors import PhotonkickError
from photonkick.pxe import isoboot
from photonkick.pxe.isoboot import IsoBootError, seed_boot_param, unattended_menus
from photonkick.server.iso_build import IsoError, remaster_iso, write_seed_iso
from photonkick.server.iso_import import MANIFEST, import_iso

KS = json.dumps({"hostname": "web-01", "disk": "/dev/sda"}, indent=2).encode() + b"\n"
BIOS_APPEND = (
    "append initrd=initrd.img root=/dev/ram0 loglevel=3 "
    "ks=cdrom:/isolinux/ks.json photon.media=cdrom"
)
GRUB_LINUX = (
    "linux /isolinux/vmlinuz root=/dev/ram0 loglevel=3 "
    "ks=cdrom:/isolinux/ks.json photon.media=UUID=$photondisk"
)

needs_tools = pytest.mark.skipif(
    not (shutil.which("xorriso") and shutil.which("isoinfo")),
    reason="needs Debian's xorriso and genisoimage (isoinfo) as independent ISO readers",
)


# --- independent readers -------------------------------------------------------------


def _run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def isoinfo_read(iso: Path, path: str, names: str = "-R") -> bytes:
    """A file's bytes as isoinfo reads them (-R Rock Ridge, -J Joliet, "" ISO9660)."""
    args = ["isoinfo", "-i", str(iso), "-x", path] + ([names] if names else [])
    return subprocess.run(args, capture_output=True, check=True).stdout


def isoinfo_list(iso: Path, names: str = "-R") -> set[str]:
    args = ["isoinfo", "-i", str(iso), "-f"] + ([names] if names else [])
    return set(_run(*args).split())


def volume_id(iso: Path) -> str:
    match = re.search(r"^Volume id: (.*)$", _run("isoinfo", "-d", "-i", str(iso)), re.M)
    assert match
    return match.group(1).strip()


def el_torito(iso: Path, *, tolerate_sorry: bool = False) -> dict[int, dict[str, str]]:
    """xorriso's El Torito report: per entry platform, LBA, load size, path and options."""
    tolerate = ["-return_with", "FAILURE", "32"] if tolerate_sorry else []
    report = _run("xorriso", *tolerate, "-indev", str(iso), "-report_el_torito", "plain")
    entries: dict[int, dict[str, str]] = {}
    for line in report.splitlines():
        if m := re.match(
            r"El Torito boot img :\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s.*\s(\d+)\s+(\d+)$", line
        ):
            n = int(m.group(1))
            entries[n] = {"platform": m.group(2), "emul": m.group(4), "lba": m.group(6)}
            entries[n]["ldsiz"] = m.group(5)
        elif m := re.match(r"El Torito img path :\s+(\d+)\s+(\S+)", line):
            entries[int(m.group(1))]["path"] = m.group(2)
        elif m := re.match(r"El Torito img opts :\s+(\d+)\s+(.*)$", line):
            entries[int(m.group(1))]["opts"] = m.group(2).strip()
    return entries


def extract_tree(iso: Path, dest: Path) -> dict[str, bytes]:
    """Every regular file of the ISO (Rock Ridge names) as osirrox extracts it."""
    _run("osirrox", "-indev", str(iso), "-extract", "/", str(dest))
    return {
        str(p.relative_to(dest)): p.read_bytes()
        for p in sorted(dest.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def no_leftovers(folder: Path) -> bool:
    return not list(folder.rglob(".*.part"))


@pytest.fixture
def base(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    iso = tmp_path / "photon-5.0.iso"
    return iso, build_photon_iso(iso)


# --- pxe/isoboot: text in, text out -----------------------------------------------------

EXPECTED_ISOLINUX = """\
# D-I config version 2.0
# photonkick: the unattended install boots by itself after the timeout
prompt 0
timeout 50
ontimeout photonkick
include menu.cfg
default vesamenu.c32
"""

EXPECTED_MENU = f"""\
menu hshift 7
menu width 61

menu title PHOTON BOOT MENU
include stdmenu.cfg

default photonkick
label photonkick
\tmenu label ^Unattended install (photonkick)
\tmenu default
\tkernel vmlinuz
\t{BIOS_APPEND}

label install
\tmenu label ^Install
\tkernel vmlinuz
\tappend initrd=initrd.img root=/dev/ram0 loglevel=3 photon.media=cdrom
"""

EXPECTED_GRUB = f"""\
# photonkick: the unattended install boots by itself after the timeout
set default=0
set timeout=5
loadfont ascii
set gfxmode="1024x768"
gfxpayload=keep
set theme=/boot/grub2/themes/photon/theme.txt
terminal_output gfxterm
probe -s photondisk -u ($root)

menuentry "Unattended install (photonkick)" --id photonkick {{
    {GRUB_LINUX}
    initrd /isolinux/initrd.img
}}

menuentry "Install" {{
linux /isolinux/vmlinuz root=/dev/ram0 loglevel=3 photon.media=UUID=$photondisk
initrd /isolinux/initrd.img
}}
"""

PHOTON_MENUS = {
    isoboot.ISOLINUX_CFG: ISOLINUX_CFG,
    isoboot.MENU_CFG: MENU_CFG,
    isoboot.GRUB_CFG: GRUB_CFG,
}


def test_photon_menus_become_unattended_by_default() -> None:
    assert unattended_menus(PHOTON_MENUS) == {
        isoboot.ISOLINUX_CFG: EXPECTED_ISOLINUX,
        isoboot.MENU_CFG: EXPECTED_MENU,
        isoboot.GRUB_CFG: EXPECTED_GRUB,
    }


def test_rewriting_a_rewritten_menu_changes_nothing() -> None:
    once = unattended_menus(PHOTON_MENUS)
    assert unattended_menus(once) == once


def test_timeout_and_extra_arguments_reach_both_menus() -> None:
    menus = unattended_menus(PHOTON_MENUS, timeout_s=12, extra_args=["insecure_installation=1"])
    assert "timeout 120\n" in menus[isoboot.ISOLINUX_CFG]
    assert f"\t{BIOS_APPEND} insecure_installation=1\n" in menus[isoboot.MENU_CFG]
    assert "set timeout=12\n" in menus[isoboot.GRUB_CFG]
    assert f"    {GRUB_LINUX} insecure_installation=1\n" in menus[isoboot.GRUB_CFG]


def test_an_existing_ks_argument_is_replaced_not_duplicated() -> None:
    menu = MENU_CFG.replace("photon.media=cdrom", "ks=https://old/ks.json photon.media=cdrom")
    _, new = isoboot.unattended_isolinux(ISOLINUX_CFG, menu, ks_path="/isolinux/other.json")
    assert new is not None
    ours = new.split("label install")[0]
    assert "ks=https://old" not in ours
    assert "ks=cdrom:/isolinux/other.json photon.media=cdrom" in ours


def test_grub_only_isos_get_grub_rewritten_for_both_firmwares() -> None:
    menus = unattended_menus({isoboot.GRUB_CFG: GRUB_CFG})
    assert menus == {isoboot.GRUB_CFG: EXPECTED_GRUB}


def test_grub_without_probe_or_timeout_gets_them() -> None:
    text = 'menuentry "Install" {\n  linux /isolinux/vmlinuz root=/dev/ram0\n}\n'
    new = isoboot.unattended_grub(text, timeout_s=7)
    lines = new.splitlines()
    assert lines[1:3] == ["set default=0", "set timeout=7"]
    probe = lines.index("probe -s photondisk -u ($root)")
    entry = lines.index('menuentry "Unattended install (photonkick)" --id photonkick {')
    assert probe == entry - 1
    assert (
        "    linux /isolinux/vmlinuz root=/dev/ram0 ks=cdrom:/isolinux/ks.json "
        "photon.media=UUID=$photondisk" in lines
    )
    assert "    initrd /isolinux/initrd.img" in lines
    assert isoboot.unattended_grub(new, timeout_s=7) == new


def test_isolinux_without_menu_cfg_gets_the_label_inline() -> None:
    cfg = (
        "default install\ntimeout 0\n\nlabel install\n  kernel vmlinuz\n"
        "  append initrd=initrd.img root=/dev/ram0 loglevel=3 photon.media=cdrom\n"
    )
    top, menu = isoboot.unattended_isolinux(cfg, None)
    assert menu is None
    lines = top.splitlines()
    assert "timeout 0" not in lines and "timeout 50" in lines
    assert "default photonkick" in lines and "default install" not in lines
    assert lines.index("label photonkick") < lines.index("label install")
    assert f"\t{BIOS_APPEND}" in lines


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout_s": 0}, "1..3600 seconds"),
        ({"timeout_s": True}, "1..3600 seconds"),
        ({"extra_args": ["console=tty0 quiet"]}, "cannot go on a kernel command line"),
        ({"extra_args": ['x="y"']}, "cannot go on a kernel command line"),
        ({"extra_args": "console=tty0"}, "list of words"),
        ({"extra_args": ["ks=http://x/ks.json"]}, "sets ks= itself"),
        ({"ks_path": "isolinux/ks.json"}, "must be absolute"),
    ],
)
def test_bad_menu_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(IsoBootError, match=re.escape(message)):
        unattended_menus(PHOTON_MENUS, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("menus", "message"),
    [
        ({}, "neither isolinux/isolinux.cfg nor boot/grub2/grub.cfg"),
        ({isoboot.MENU_CFG: MENU_CFG}, "isolinux/menu.cfg without isolinux/isolinux.cfg"),
        ({"EFI/BOOT/grub.cfg": GRUB_CFG}, "not a boot menu photonkick knows"),
    ],
)
def test_menu_sets_that_cannot_work_are_refused(menus: dict[str, str], message: str) -> None:
    with pytest.raises(IsoBootError, match=re.escape(message)):
        unattended_menus(menus)


def test_seed_boot_parameter_names_the_seed_iso_file() -> None:
    assert seed_boot_param() == "ks=/dev/sr1:/ks.json"
    assert seed_boot_param("/dev/sr2") == "ks=/dev/sr2:/ks.json"
    with pytest.raises(IsoBootError):
        seed_boot_param("/dev/sr1 quiet")
    assert issubclass(IsoBootError, PhotonkickError)


# --- import_iso ---------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def _expected_import(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if k.startswith("RPMS/") or k in _BOOT_FILES}


_BOOT_FILES = ("isolinux/vmlinuz", "isolinux/initrd.img")


@needs_tools
def test_import_lays_out_kernel_initrd_and_repository(
    base: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    iso, files = base
    result = import_iso(iso, tmp_path / "data")
    root = tmp_path / "data" / "5.0"
    assert result.release == "5.0" and result.root == root
    assert result.kernel == root / "isolinux/vmlinuz" and result.repo == root / "RPMS"
    assert _tree(root) == _expected_import(files)
    # What was copied is what an independent reader sees on the ISO.
    for rel in ("isolinux/vmlinuz", "RPMS/noarch/photon-release-5.0-2.ph5.noarch.rpm"):
        assert (root / rel).read_bytes() == isoinfo_read(iso, "/" + rel)
    # Photon's dangling absolute repodata symlink is not imported.
    assert result.skipped_symlinks == ("RPMS/repodata/primary.xml.gz",)
    assert not (root / "RPMS/repodata/primary.xml.gz").exists()
    assert sorted(result.copied) == sorted(_expected_import(files))
    assert no_leftovers(tmp_path)


@needs_tools
def test_manifest_records_release_source_and_checksums(
    base: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    iso, files = base
    result = import_iso(iso, tmp_path / "data")
    manifest = json.loads(result.manifest.read_text())
    assert manifest["release"] == "5.0"
    assert manifest["release_from"] == "photon-release RPM"
    assert manifest["volume_id"] == volume_id(iso) == "PHOTON_20250101"
    assert manifest["source"]["name"] == "photon-5.0.iso"
    assert manifest["source"]["size"] == iso.stat().st_size
    assert manifest["photon_vmware_cd"] is True
    expected = {
        rel: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for rel, data in _expected_import(files).items()
    }
    assert manifest["files"] == expected
    assert result.files == len(expected)
    assert result.total_bytes == sum(len(d) for d in _expected_import(files).values())


def test_reimporting_the_same_iso_copies_nothing(
    base: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    iso, _ = base
    first = import_iso(iso, tmp_path / "data")
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first.root.rglob("*")}
    calls: list[tuple[int, int]] = []
    again = import_iso(iso, tmp_path / "data", lambda done, total: calls.append((done, total)))
    assert again.copied == () and again.removed == () and not again.changed
    assert calls == [(first.total_bytes, first.total_bytes)]
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first.root.rglob("*")}
    assert after == before


def test_progress_reports_bytes_up_to_the_total(
    base: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    iso, _ = base
    calls: list[tuple[int, int]] = []
    result = import_iso(iso, tmp_path / "data", lambda done, total: calls.append((done, total)))
    assert len(calls) > len(_BOOT_FILES)
    assert {total for _, total in calls} == {result.total_bytes}
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[0] == 0 and done[-1] == result.total_bytes


def test_a_damaged_import_is_repaired_file_by_file(
    base: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    iso, files = base
    result = import_iso(iso, tmp_path / "data")
    shrunk = result.root / "RPMS/x86_64/bash-5.2-1.ph5.x86_64.rpm"
    shrunk.write_bytes(b"short")
    again = import_iso(iso, tmp_path / "data")
    assert again.copied == ("RPMS/x86_64/bash-5.2-1.ph5.x86_64.rpm",)
    # Same size, different bytes: only a verifying import notices.
    flipped = result.root / "isolinux/vmlinuz"
    flipped.write_bytes(bytes(len(files["isolinux/vmlinuz"])))
    assert import_iso(iso, tmp_path / "data").copied == ()
    assert import_iso(iso, tmp_path / "data", verify=True).copied == ("isolinux/vmlinuz",)
    assert _tree(result.root) == _expected_import(files)


def test_a_respin_of_the_release_updates_only_what_changed(tmp_path: Path) -> None:
    old_iso, new_iso = tmp_path / "old.iso", tmp_path / "new.iso"
    build_photon_iso(old_iso)
    moved = "RPMS/x86_64/tdnf-3.5.2-1.ph5.x86_64.rpm"
    new_files = build_photon_iso(
        new_iso,
        PhotonIsoSpec(
            volume_id="PHOTON_20250202",
            extra={
                "RPMS/x86_64/bash-5.2-1.ph5.x86_64.rpm": b"rebuilt bash",
                "RPMS/x86_64/tdnf-3.6.0-1.ph5.x86_64.rpm": b"new tdnf",
            },
        ),
    )
    import_iso(old_iso, tmp_path / "data")
    root = tmp_path / "data" / "5.0"
    kernel_inode = (root / "isolinux/vmlinuz").stat().st_ino
    result = import_iso(new_iso, tmp_path / "data")
    assert set(result.copied) == {
        "RPMS/x86_64/bash-5.2-1.ph5.x86_64.rpm",
        "RPMS/x86_64/tdnf-3.6.0-1.ph5.x86_64.rpm",
    }
    assert result.removed == () and (root / moved).exists()  # both tdnf builds are on the ISO
    assert (root / "isolinux/vmlinuz").stat().st_ino == kernel_inode
    assert _tree(root) == _expected_import(new_files)
    assert json.loads(result.manifest.read_text())["volume_id"] == "PHOTON_20250202"


def test_files_gone_from_the_iso_are_removed(tmp_path: Path) -> None:
    full, slim = tmp_path / "full.iso", tmp_path / "slim.iso"
    build_photon_iso(full, PhotonIsoSpec(extra={"RPMS/x86_64/extra-1-1.ph5.x86_64.rpm": b"x"}))
    slim_files = build_photon_iso(slim, PhotonIsoSpec(volume_id="PHOTON_20250303"))
    import_iso(full, tmp_path / "data")
    result = import_iso(slim, tmp_path / "data")
    assert result.removed == ("RPMS/x86_64/extra-1-1.ph5.x86_64.rpm",)
    assert _tree(result.root) == _expected_import(slim_files)


class _Stop(Exception):
    pass


def test_an_interrupted_import_leaves_no_partial_file(
    base: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    iso, files = base
    data = tmp_path / "data"

    def stop_midway(done: int, total: int) -> None:
        if done > total // 2:
            raise _Stop

    with pytest.raises(_Stop):
        import_iso(iso, data, stop_midway)
    root = data / "5.0"
    assert no_leftovers(data)
    assert not (root / MANIFEST).exists()
    expected = _expected_import(files)
    for rel, content in _tree(root).items():
        assert content == expected[rel], f"{rel} is a partial copy"
    assert len(_tree(root)) < len(expected)
    result = import_iso(iso, data)
    assert _tree(root) == expected and result.manifest.exists()
    assert 0 < len(result.copied) < len(expected)


def test_the_caller_can_force_the_release(
    base: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    iso, _ = base
    result = import_iso(iso, tmp_path / "data", release="5.0-lab")
    assert result.root == tmp_path / "data" / "5.0-lab"
    manifest = json.loads(result.manifest.read_text())
    assert manifest["release_from"] == "caller" and manifest["detected_releases"] == ["5.0"]


def test_joliet_and_plain_iso9660_names_are_read(tmp_path: Path) -> None:
    joliet, plain = tmp_path / "joliet.iso", tmp_path / "plain.iso"
    files = build_photon_iso(joliet, PhotonIsoSpec(rock_ridge=False, joliet=True))
    build_photon_iso(plain, PhotonIsoSpec(rock_ridge=False))
    assert _tree(import_iso(joliet, tmp_path / "j").root) == _expected_import(files)
    # Without Rock Ridge or Joliet the RPM names are mangled, so the release is not known.
    with pytest.raises(IsoError, match="cannot tell the Photon release"):
        import_iso(plain, tmp_path / "p")
    root = import_iso(plain, tmp_path / "p", release="5.0").root
    assert sorted(_tree(root)) == [
        "RPMS/noarch/ca_certificates_20230315.rpm",
        "RPMS/noarch/photon_release_5_0_2_ph5.rpm",
        "RPMS/noarch/photon_repos_5_0_3_ph5_n.rpm",
        "RPMS/repodata/0123_primary_xml.gz",
        "RPMS/repodata/repomd.xml",
        "RPMS/x86_64/bash_5_2_1_ph5_x86_64.rpm",
        "RPMS/x86_64/linux_6_1_10_1_ph5_x86_6.rpm",
        "RPMS/x86_64/tdnf_3_5_2_1_ph5_x86_64.rpm",
        "isolinux/initrd.img",
        "isolinux/vmlinuz",
    ]


def test_installer_29_grub_only_isos_import(tmp_path: Path) -> None:
    iso = tmp_path / "photon-5.0-grub.iso"
    files = build_photon_iso(iso, PhotonIsoSpec(grub_only=True))
    assert _tree(import_iso(iso, tmp_path / "data").root) == _expected_import(files)


def _not_an_iso(tmp_path: Path) -> Path:
    path = tmp_path / "notes.iso"
    path.write_text("these are not the sectors you are looking for\n" * 100)
    return path


def _random_bytes(tmp_path: Path) -> Path:
    path = tmp_path / "random.iso"
    path.write_bytes(hashlib.sha256(b"seed").digest() * 4096)
    return path


def _no_kernel(tmp_path: Path) -> Path:
    path = tmp_path / "nokernel.iso"
    build_photon_iso(path, PhotonIsoSpec(kernel=False))
    return path


def _no_initrd(tmp_path: Path) -> Path:
    path = tmp_path / "noinitrd.iso"
    build_photon_iso(path, PhotonIsoSpec(initrd=False))
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "absent.iso"


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "folder.iso").mkdir()
    return tmp_path / "folder.iso"


BAD_ISOS = [
    (_not_an_iso, "not an ISO 9660 image"),
    (_random_bytes, "not an ISO 9660 image"),
    (_missing, "no such file"),
    (_folder, "is a folder"),
    (_no_kernel, "not a Photon OS ISO: it has no /isolinux/vmlinuz"),
    (_no_initrd, "not a Photon OS ISO: it has no /isolinux/initrd.img"),
]


@pytest.mark.parametrize(("make", "message"), BAD_ISOS)
def test_import_refuses_bad_isos_and_writes_nothing(
    tmp_path: Path, make: object, message: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    data = tmp_path / "data"
    with pytest.raises(IsoError, match=re.escape(message)) as err:
        import_iso(path, data)
    assert path.name in str(err.value)
    assert not data.exists()


@pytest.mark.parametrize(
    ("spec", "release", "message"),
    [
        (PhotonIsoSpec(rpms=False), None, "has no RPM repository"),
        (
            PhotonIsoSpec(extra={"RPMS/noarch/photon-release-4.0-1.ph4.noarch.rpm": b"4"}),
            None,
            "several photon-release RPMs (4.0, 5.0)",
        ),
        (PhotonIsoSpec(), "../etc", "not usable as a folder name"),
    ],
)
def test_import_refuses_unclear_releases_and_writes_nothing(
    tmp_path: Path, spec: PhotonIsoSpec, release: str | None, message: str
) -> None:
    iso = tmp_path / "photon.iso"
    build_photon_iso(iso, spec)
    with pytest.raises(IsoError, match=re.escape(message)):
        import_iso(iso, tmp_path / "data", release=release)
    assert not (tmp_path / "data").exists()


# --- write_seed_iso -------------------------------------------------------------------


@needs_tools
def test_seed_iso_holds_the_kickstart_where_the_boot_parameter_looks(tmp_path: Path) -> None:
    out = tmp_path / "web-01-seed.iso"
    write_seed_iso(KS, out)
    info = _run("isoinfo", "-d", "-i", str(out))
    assert volume_id(out) == "PKSEED"
    assert "Rock Ridge signatures" in info and "Joliet with UCS level 3" in info
    seed_path = seed_boot_param().split(":", 1)[1]
    assert seed_path == "/ks.json"
    assert isoinfo_read(out, seed_path, "-R") == KS
    assert isoinfo_read(out, seed_path, "-J") == KS
    assert isoinfo_list(out, "-R") == {"/ks.json"}
    assert isoinfo_list(out, "") == {"/KS.JSON;1"}
    assert no_leftovers(tmp_path)


def test_seed_iso_refuses_bad_input_and_keeps_an_older_file(tmp_path: Path) -> None:
    out = tmp_path / "seed.iso"
    out.write_bytes(b"older")
    for bad in (b"{not json", b"[1, 2]", "{}"):
        with pytest.raises(IsoError):
            write_seed_iso(bad, out)  # type: ignore[arg-type]
    with pytest.raises(IsoError, match="volume id"):
        write_seed_iso(KS, out, volume_id="pk seed")
    with pytest.raises(IsoError, match="no such folder"):
        write_seed_iso(KS, tmp_path / "missing" / "seed.iso")
    assert out.read_bytes() == b"older"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.iso"]


# --- remaster_iso ---------------------------------------------------------------------


def _boot_info_table_ok(image: bytes, original: bytes, lba: int) -> None:
    """isolinux.bin carries a boot info table that matches where it sits on the ISO."""
    pvd, file_lba, length, checksum = struct.unpack_from("<4I", image, 8)
    assert pvd == 16 and file_lba == lba and length == len(image)
    words = image[64:] + bytes(-len(image[64:]) % 4)
    assert checksum == sum(struct.unpack(f"<{len(words) // 4}I", words)) & 0xFFFFFFFF
    assert image[:8] == original[:8] and image[64:] == original[64:]


@needs_tools
def test_remastered_iso_keeps_both_boot_entries_and_the_volume_id(
    base: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    iso, files = base
    out = tmp_path / "web-01.iso"
    result = remaster_iso(iso, KS, out)
    assert result.path == out and result.volume_id == "PHOTON_20250101"
    assert volume_id(out) == volume_id(iso)
    entries = el_torito(out)
    assert [(e["platform"], e["path"]) for e in entries.values()] == [
        ("BIOS", "/isolinux/isolinux.bin"),
        ("UEFI", "/boot/grub2/efiboot.img"),
    ]
    assert entries[1]["emul"] == "none" and entries[1]["opts"] == "boot-info-table"
    assert entries[1]["ldsiz"] == "4" and entries[2]["emul"] == "none"
    isolinux_bin = isoinfo_read(out, "/isolinux/isolinux.bin")
    _boot_info_table_ok(isolinux_bin, files["isolinux/isolinux.bin"], int(entries[1]["lba"]))
    assert isoinfo_read(out, "/boot/grub2/efiboot.img") == files["boot/grub2/efiboot.img"]
    assert no_leftovers(tmp_path)


@needs_tools
def test_remastered_menus_boot_the_kickstart_by_default(
    base: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    iso, _ = base
    out = tmp_path / "web-01.iso"
    remaster_iso(iso, KS, out)
    top = isoinfo_read(out, "/isolinux/isolinux.cfg").decode()
    menu = isoinfo_read(out, "/isolinux/menu.cfg").decode()
    grub = isoinfo_read(out, "/boot/grub2/grub.cfg").decode()
    assert top == EXPECTED_ISOLINUX and menu == EXPECTED_MENU and grub == EXPECTED_GRUB
    # BIOS: a 5 s timeout on the one "menu default" label, which carries ks=.
    assert "timeout 50" in top.splitlines() and "ontimeout photonkick" in top.splitlines()
    labels = re.split(r"^label ", menu, flags=re.M)[1:]
    defaults = [label for label in labels if "\tmenu default" in label]
    assert len(defaults) == 1 and defaults[0].startswith("photonkick")
    assert f"\t{BIOS_APPEND}" in defaults[0].splitlines()
    # UEFI: entry 0 is ours, after 5 s, with the probe it relies on kept above it.
    entries = re.findall(r"menuentry [^{]*\{[^}]*\}", grub)
    assert "--id photonkick" in entries[0] and GRUB_LINUX in entries[0]
    assert "initrd /isolinux/initrd.img" in entries[0]
    assert "set default=0" in grub.splitlines() and "set timeout=5" in grub.splitlines()
    assert grub.index("probe -s photondisk -u ($root)") < grub.index(entries[0])
    # The kickstart is on the ISO at the path both boot lines name.
    for line in (BIOS_APPEND, GRUB_LINUX):
        ks_path = re.search(r"ks=cdrom:(\S+)", line)
        assert ks_path and isoinfo_read(out, ks_path.group(1)) == KS


@needs_tools
def test_remastering_changes_only_menus_and_adds_the_kickstart(
    base: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    iso, files = base
    out = tmp_path / "web-01.iso"
    remaster_iso(iso, KS, out)
    tree = extract_tree(out, tmp_path / "extracted")
    expected = dict(files)
    expected.update(
        {
            "isolinux/isolinux.cfg": EXPECTED_ISOLINUX.encode(),
            "isolinux/menu.cfg": EXPECTED_MENU.encode(),
            "boot/grub2/grub.cfg": EXPECTED_GRUB.encode(),
            "isolinux/ks.json": KS,
        }
    )
    assert tree.pop("isolinux/boot.cat")
    # The boot info table (bytes 8-63) is rewritten for the new layout; the rest is kept.
    bios, original = tree.pop("isolinux/isolinux.bin"), expected.pop("isolinux/isolinux.bin")
    assert bios[:8] == original[:8] and bios[64:] == original[64:]
    assert tree == expected
    link = tmp_path / "extracted" / "RPMS/repodata/primary.xml.gz"
    assert link.is_symlink()


@needs_tools
def test_remastering_installer_29_grub_only_isos(tmp_path: Path) -> None:
    iso, out = tmp_path / "photon-grub.iso", tmp_path / "out.iso"
    build_photon_iso(iso, PhotonIsoSpec(grub_only=True))
    result = remaster_iso(iso, KS, out)
    assert result.menus == ("boot/grub2/grub.cfg",)
    entries = el_torito(out)
    assert [(e["platform"], e["path"]) for e in entries.values()] == [
        ("BIOS", "/isolinux/eltorito.img"),
        ("UEFI", "/boot/grub2/efiboot.img"),
    ]
    assert entries[1]["opts"] == "boot-info-table"
    assert isoinfo_read(out, "/boot/grub2/grub.cfg").decode() == EXPECTED_GRUB
    assert isoinfo_read(out, "/isolinux/ks.json") == KS
    names = isoinfo_list(out)
    assert "/isolinux/isolinux.cfg" not in names and "/isolinux/menu.cfg" not in names


@needs_tools
def test_remastering_a_remastered_iso_replaces_the_kickstart(
    base: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    iso, _ = base
    first, second = tmp_path / "first.iso", tmp_path / "second.iso"
    remaster_iso(iso, KS, first)
    other = b'{"hostname": "web-02"}\n'
    remaster_iso(first, other, second, extra_args=["insecure_installation=1"])
    assert isoinfo_read(second, "/isolinux/ks.json") == other
    assert sorted(n for n in isoinfo_list(second) if "ks.json" in n) == ["/isolinux/ks.json"]
    menu = isoinfo_read(second, "/isolinux/menu.cfg").decode()
    grub = isoinfo_read(second, "/boot/grub2/grub.cfg").decode()
    assert menu.count("label photonkick") == 1 and grub.count("--id photonkick") == 1
    assert f"{BIOS_APPEND} insecure_installation=1" in menu
    assert f"{GRUB_LINUX} insecure_installation=1" in grub
    assert len(el_torito(second)) == 2


@needs_tools
def test_remastering_keeps_joliet_names_working(tmp_path: Path) -> None:
    iso, out = tmp_path / "joliet.iso", tmp_path / "out.iso"
    build_photon_iso(iso, PhotonIsoSpec(joliet=True))
    remaster_iso(iso, KS, out)
    assert isoinfo_read(out, "/isolinux/ks.json", "-J") == KS
    assert isoinfo_read(out, "/isolinux/ks.json", "-R") == KS
    assert isoinfo_read(out, "/isolinux/menu.cfg", "-J").decode() == EXPECTED_MENU


def test_remaster_reports_progress(base: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    iso, _ = base
    calls: list[tuple[int, int]] = []
    remaster_iso(iso, KS, tmp_path / "out.iso", progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == calls[-1][1] > 0


def _unbootable(tmp_path: Path) -> Path:
    path = tmp_path / "unbootable.iso"
    build_photon_iso(path, PhotonIsoSpec(bootable=False))
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [*BAD_ISOS, (_unbootable, "has no El Torito boot entry")],
)
def test_remaster_refuses_bad_bases_and_writes_nothing(
    tmp_path: Path, make: object, message: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(IsoError, match=re.escape(message)) as err:
        remaster_iso(path, KS, out_dir / "web-01.iso")
    assert path.name in str(err.value)
    assert list(out_dir.iterdir()) == []


def test_remaster_refuses_a_bad_kickstart_and_keeps_an_older_output(
    base: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    iso, _ = base
    out = tmp_path / "web-01.iso"
    out.write_bytes(b"older")
    with pytest.raises(IsoError, match="not JSON"):
        remaster_iso(iso, b"hostname: web-01\n", out)
    with pytest.raises(IsoBootError, match="1..3600"):
        remaster_iso(iso, KS, out, timeout_s=0)
    assert out.read_bytes() == b"older"
    assert no_leftovers(tmp_path)


def test_remaster_failure_while_writing_leaves_nothing(
    base: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    iso, _ = base
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def fail(done: int, total: int) -> None:
        if done > total // 2:
            raise _Stop

    with pytest.raises(_Stop):
        remaster_iso(iso, KS, out_dir / "web-01.iso", progress=fail)
    assert list(out_dir.iterdir()) == []


# --- ISOs mastered by other tools, as Photon's own are ------------------------------------

needs_mkisofs = pytest.mark.skipif(
    not (shutil.which("genisoimage") and shutil.which("xorriso") and shutil.which("isoinfo")),
    reason="needs Debian's genisoimage and xorriso to master Photon-style ISOs",
)


def _boots_unattended_from_cd(out: Path, files: dict[str, bytes]) -> None:
    """A remastered syslinux + EFI Photon ISO, read back by xorriso and isoinfo: both boot
    entries with their images, a valid boot info table, the unattended menu, the kickstart."""
    entries = el_torito(out)
    assert [(e["platform"], e["path"]) for e in entries.values()] == [
        ("BIOS", "/isolinux/isolinux.bin"),
        ("UEFI", "/boot/grub2/efiboot.img"),
    ]
    isolinux_bin = isoinfo_read(out, "/isolinux/isolinux.bin")
    _boot_info_table_ok(isolinux_bin, files["isolinux/isolinux.bin"], int(entries[1]["lba"]))
    assert isoinfo_read(out, "/isolinux/menu.cfg").decode() == EXPECTED_MENU
    assert isoinfo_read(out, "/isolinux/ks.json") == KS
    assert volume_id(out) == "PHOTON_20250101"


@needs_mkisofs
def test_an_iso_mastered_with_photons_mkisofs_line(tmp_path: Path) -> None:
    stage, iso, out = tmp_path / "stage", tmp_path / "photon.iso", tmp_path / "out.iso"
    files = stage_photon_tree(stage)
    # The installer's own command (photon-os-installer 2.7 isoBuilder), with genisoimage.
    subprocess.run(
        ["genisoimage", "-quiet", "-R", "-l", "-L", "-D", "-b", "isolinux/isolinux.bin"]
        + ["-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4"]
        + ["-boot-info-table", "-eltorito-alt-boot", "-e", "boot/grub2/efiboot.img"]
        + ["-no-emul-boot", "-V", "PHOTON_20250101", "-o", str(iso), "."],
        cwd=stage,
        check=True,
        capture_output=True,
    )
    imported = import_iso(iso, tmp_path / "data")
    assert _tree(imported.root) == _expected_import(files)
    result = remaster_iso(iso, KS, out)
    assert not result.hybrid_dropped
    _boots_unattended_from_cd(out, files)


@needs_mkisofs
def test_a_xorriso_hybrid_iso_keeps_its_cd_boot_entries(tmp_path: Path) -> None:
    stage, iso, out = tmp_path / "stage", tmp_path / "photon.iso", tmp_path / "out.iso"
    files = stage_photon_tree(stage, PhotonIsoSpec(grub_only=True))
    mbr = tmp_path / "mbr.bin"
    mbr.write_bytes(bytes(range(256)) * 2)
    efi = str(stage / "boot/grub2/efiboot.img")
    # GRUB-style hybrid: the EFI image as an appended GPT partition, not a file on the ISO.
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-R", "-l", "-D", "-o", str(iso)]
        + ["--grub2-mbr", str(mbr), "-partition_offset", "16"]
        + ["-append_partition", "2", "0xef", efi, "-appended_part_as_gpt"]
        + ["-b", "isolinux/eltorito.img", "-c", "isolinux/boot.cat", "-no-emul-boot"]
        + ["-boot-load-size", "4", "-boot-info-table", "--grub2-boot-info"]
        + ["-eltorito-alt-boot", "-e", "--interval:appended_partition_2:all::"]
        + ["-no-emul-boot", "-V", "PHOTON_20250101", str(stage)],
        check=True,
        capture_output=True,
    )
    result = remaster_iso(iso, KS, out)
    assert result.hybrid_dropped
    entries = el_torito(out)
    assert [e["platform"] for e in entries.values()] == ["BIOS", "UEFI"]
    assert entries[1]["path"] == "/isolinux/eltorito.img"
    assert entries[1]["opts"] == "boot-info-table"
    efi_lba = int(entries[2]["lba"])
    with out.open("rb") as f:
        f.seek(efi_lba * 2048)
        assert f.read(len(files["boot/grub2/efiboot.img"])) == files["boot/grub2/efiboot.img"]
    assert isoinfo_read(out, "/boot/grub2/grub.cfg").decode() == EXPECTED_GRUB
    assert isoinfo_read(out, "/isolinux/ks.json") == KS


def _mbr_partitions(iso: Path) -> list[tuple[int, int, int]]:
    """(boot flag, type, first 512-byte sector) of each used MBR partition; [] if none."""
    with iso.open("rb") as f:
        sector = f.read(512)
    if sector[510:512] != b"\x55\xaa":
        return []
    found = []
    for offset in range(446, 510, 16):
        flag, ptype, start = sector[offset], sector[offset + 4], sector[offset + 8 : offset + 12]
        if ptype or flag:
            found.append((flag, ptype, struct.unpack("<I", start)[0]))
    return found


@needs_mkisofs
def test_an_isohybrid_mbr_without_gpt_is_dropped_and_the_copy_boots_from_cd(
    tmp_path: Path,
) -> None:
    iso, files = build_isohybrid_iso(tmp_path, gpt=False)
    partitions = _mbr_partitions(iso)
    assert partitions and all(ptype != 0xEF for _, ptype, _ in partitions)
    out = tmp_path / "out.iso"
    result = remaster_iso(iso, KS, out)
    assert result.hybrid_dropped
    # No stale partition table pointing into the old layout.
    assert _mbr_partitions(out) == []
    _boots_unattended_from_cd(out, files)


@needs_mkisofs
def test_an_isohybrid_with_its_efi_partition_is_kept_and_follows_the_efi_image(
    tmp_path: Path,
) -> None:
    iso, files = build_isohybrid_iso(tmp_path, gpt=True)
    out = tmp_path / "out.iso"
    result = remaster_iso(iso, KS, out)
    assert not result.hybrid_dropped
    partitions = _mbr_partitions(out)
    assert any(flag == 0x80 for flag, _, _ in partitions)  # still bootable from USB
    (efi_start,) = [start for _, ptype, start in partitions if ptype == 0xEF]
    # pycdlib pads the copy to a whole cylinder; xorriso then notes (severity SORRY) that it
    # cannot read past the end while looking for more sessions.
    entries = el_torito(out, tolerate_sorry=True)
    assert efi_start * 512 == int(entries[2]["lba"]) * 2048
    with out.open("rb") as f:
        f.seek(efi_start * 512)
        assert f.read(len(files["boot/grub2/efiboot.img"])) == files["boot/grub2/efiboot.img"]
    assert isoinfo_read(out, "/isolinux/ks.json") == KS


def test_a_renamed_copy_of_the_same_iso_is_the_same_import(
    base: tuple[Path, dict[str, bytes]], tmp_path: Path
) -> None:
    iso, _ = base
    import_iso(iso, tmp_path / "data")
    renamed = tmp_path / "photon-5.0-GA.iso"
    shutil.copyfile(iso, renamed)
    result = import_iso(renamed, tmp_path / "data")
    assert not result.changed

"""`photonkick import-iso` and `photonkick iso` on a Photon-shaped ISO, read back by xorriso."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from photon_iso import build_isohybrid_iso, build_photon_iso

SPEC = """
server: {url: "https://pk.example"}
hosts:
  - {name: isohost, mac: "00:50:56:00:00:07", boot: iso}
"""

needs_xorriso = pytest.mark.skipif(
    shutil.which("xorriso") is None, reason="xorriso is not installed (CI installs it)"
)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "photonkick"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd)


def extract(iso: Path, path: str, tmp: Path) -> bytes:
    out = tmp / "extracted"
    out.unlink(missing_ok=True)
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", path, str(out)],
        check=True,
        capture_output=True,
    )
    return out.read_bytes()


def test_import_iso_then_again(tmp_path: Path) -> None:
    iso = tmp_path / "photon.iso"
    build_photon_iso(iso)
    first = run("import-iso", str(iso), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Photon 5.0 from" in first.stdout and "copied" in first.stdout
    root = tmp_path / ".photonkick" / "releases" / "5.0"
    assert (root / "isolinux" / "vmlinuz").is_file() and (root / "RPMS").is_dir()
    assert "importing:" in first.stderr
    second = run("import-iso", str(iso), cwd=tmp_path)
    assert second.returncode == 0 and "already imported" in second.stdout


def test_import_refuses_a_non_iso(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.iso"
    bogus.write_bytes(b"not an iso" * 1000)
    result = run("import-iso", str(bogus), "--data", "data", cwd=tmp_path)
    assert result.returncode == 1 and "bogus.iso" in result.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*"))


@needs_xorriso
def test_seed_iso_holds_the_kickstart(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(SPEC)
    result = run("iso", "lab.yaml", "isohost", "--seed-only", "-o", "seed.iso", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ks=/dev/sr1:/ks.json" in result.stdout
    kickstart = json.loads(extract(tmp_path / "seed.iso", "/ks.json", tmp_path))
    assert kickstart["hostname"] == "isohost" and kickstart["eject_cdrom"] is True


@needs_xorriso
def test_remastered_iso_boots_unattended(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(SPEC)
    build_photon_iso(tmp_path / "photon.iso")
    result = run(
        "iso", "lab.yaml", "isohost", "--base", "photon.iso", "-o", "isohost.iso", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "isohost.iso"
    report = subprocess.run(
        ["xorriso", "-indev", str(out), "-report_el_torito", "plain"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "BIOS" in report and "UEFI" in report
    kickstart = json.loads(extract(out, "/isolinux/ks.json", tmp_path))
    assert kickstart["hostname"] == "isohost"
    grub = extract(out, "/boot/grub2/grub.cfg", tmp_path).decode()
    assert "ks=cdrom:/isolinux/ks.json" in grub and "photon.media=UUID=$photondisk" in grub


@needs_xorriso
def test_remastering_an_isohybrid_without_gpt_says_it_boots_from_cd_only(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(SPEC)
    build_isohybrid_iso(tmp_path, gpt=False)
    result = run(
        "iso", "lab.yaml", "isohost", "--base", "photon.iso", "-o", "isohost.iso", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "note: the copy boots from a CD/DVD drive only" in result.stderr
    kickstart = json.loads(extract(tmp_path / "isohost.iso", "/isolinux/ks.json", tmp_path))
    assert kickstart["hostname"] == "isohost"


def test_iso_bad_requests(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(SPEC)
    assert (
        run("iso", "lab.yaml", "nohost", "--seed-only", "-o", "x.iso", cwd=tmp_path).returncode == 2
    )
    assert run("iso", "lab.yaml", "isohost", "-o", "x.iso", cwd=tmp_path).returncode == 2
    assert not (tmp_path / "x.iso").exists()

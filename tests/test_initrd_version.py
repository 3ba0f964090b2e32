"""The installer version read from the ISO's initrd, and `photon.installer: auto`.

Initrds are made by the real cpio tool and compressors, as the installer's ISO builder
makes them (``find . | cpio -o -H newc | gzip -9``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from photon_iso import PhotonIsoSpec, build_initrd, build_photon_iso, installer_initrd_tree

from photonkick.kickstarts.installer import rules_for
from photonkick.kickstarts.inventory import load_inventory
from photonkick.server.boot_server import BootServer, Listen
from photonkick.server.initrd_version import InitrdError, installer_version
from photonkick.server.release_installer import imported_installers
from photonkick.server.state_dir import StateDir

needs_cpio = pytest.mark.skipif(
    shutil.which("cpio") is None, reason="the cpio tool is not installed (.ci/setup --test)"
)
pytestmark = needs_cpio

SPEC = """\
photon:
  release: "5.0"
{installer}server: {{url: "http://192.0.2.1:8080"}}
hosts:
  - {{name: web01, mac: "00:50:56:00:00:07"}}
"""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "photonkick"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd)


def spec(tmp_path: Path, installer: str | None) -> Path:
    line = f'  installer: "{installer}"\n' if installer else ""
    path = tmp_path / "lab.yaml"
    path.write_text(SPEC.format(installer=line))
    return path


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd", "none"])
@pytest.mark.parametrize("layout", ["egg-info", "dist-info", "egg-info-file"])
def test_version_from_each_initrd_form(tmp_path: Path, compression: str, layout: str) -> None:
    tool = {"gzip": "gzip", "xz": "xz", "zstd": "zstd", "none": "cat"}[compression]
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(build_initrd(installer_initrd_tree("2.7", layout), compression))
    found = installer_version(initrd)
    # The header of the metadata, not the "Version: 9.9" in its description body.
    assert found.version == "2.7"
    assert found.member.startswith("usr/lib/python3.11/site-packages/photon_installer-2.7")


def test_version_behind_an_uncompressed_early_cpio(tmp_path: Path) -> None:
    early = build_initrd({"kernel/x86/microcode/GenuineIntel.bin": b"\x01" * 5000}, "none")
    main = build_initrd(installer_initrd_tree("2.9+59a011d"), "gzip")
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(early + b"\0" * 512 + main)
    assert installer_version(initrd).version == "2.9+59a011d"


def test_initrd_without_installer_metadata_says_so(tmp_path: Path) -> None:
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(build_initrd(installer_initrd_tree(None), "gzip"))
    with pytest.raises(InitrdError) as err:
        installer_version(initrd)
    message = str(err.value)
    assert str(initrd) in message and "photon_installer" in message
    assert "set photon.installer" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not an initrd at all" * 10, "neither a cpio archive nor gzip"),
        (b"\x1f\x8b\x08\x00garbage-after-a-gzip-magic" * 4, "cannot read"),
        (b"070701" + b"zz" * 60, "damaged cpio archive"),
    ],
)
def test_unreadable_initrds_are_named(tmp_path: Path, data: bytes, expected: str) -> None:
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(data)
    with pytest.raises(InitrdError, match=expected):
        installer_version(initrd)


def test_truncated_initrd_is_an_error(tmp_path: Path) -> None:
    whole = build_initrd(installer_initrd_tree("2.7"), "gzip")
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(InitrdError, match=str(initrd)):
        installer_version(initrd)


@pytest.mark.parametrize(
    ("found", "rules"),
    [
        ("2.3", "2.3"),
        ("2.4", "2.3"),
        ("2.7+d5523f9", "2.7"),
        ("2.8.1", "2.8"),
        ("2.10", "2.9"),
        ("2.1", None),
        ("unknown", None),
    ],
)
def test_rules_for_found_versions(found: str, rules: str | None) -> None:
    assert rules_for(found) == rules


def import_iso(tmp_path: Path, version: str | None) -> subprocess.CompletedProcess[str]:
    iso = tmp_path / "photon.iso"
    build_photon_iso(iso, PhotonIsoSpec(initrd_tree=installer_initrd_tree(version)))
    return run("import-iso", str(iso), cwd=tmp_path)


def test_import_records_the_version_and_auto_takes_it(tmp_path: Path) -> None:
    result = import_iso(tmp_path, "2.3")
    assert result.returncode == 0, result.stderr
    assert "photon-os-installer 2.3" in result.stdout
    manifest = json.loads((tmp_path / ".photonkick/releases/5.0/manifest.json").read_text())
    assert manifest["installer"]["version"] == "2.3"
    assert manifest["installer"]["member"].endswith("egg-info/PKG-INFO")
    check = run("check", str(spec(tmp_path, None)), cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "installer 2.3 (from the imported ISO): OK" in check.stdout
    # 2.3 rules now apply: it writes `disk`, not `disks`.
    shown = run("show", str(spec(tmp_path, "auto")), "web01", cwd=tmp_path)
    assert '"disk": "/dev/sda"' in shown.stdout and '"disks"' not in shown.stdout


def test_check_and_serve_refuse_a_version_the_iso_contradicts(tmp_path: Path) -> None:
    assert import_iso(tmp_path, "2.3").returncode == 0
    path = spec(tmp_path, "2.7")
    for verb in (["check"], ["serve", "--http", "127.0.0.1:0", "--tftp", "127.0.0.1:0"]):
        result = run(*verb, str(path), cwd=tmp_path)
        assert result.returncode == 2, result.stdout
        assert f"{path}:3:" in result.stderr
        assert "photon.installer: the spec says installer 2.7" in result.stderr
        assert "has installer 2.3 (photon.iso imported in" in result.stderr
    agreeing = run("check", str(spec(tmp_path, "2.3")), cwd=tmp_path)
    assert agreeing.returncode == 0 and "installer 2.3: OK" in agreeing.stdout


def test_reimport_keeps_the_recorded_version_and_a_new_initrd_replaces_it(
    tmp_path: Path,
) -> None:
    assert import_iso(tmp_path, "2.7").returncode == 0
    again = run("import-iso", str(tmp_path / "photon.iso"), cwd=tmp_path)
    assert "already imported" in again.stdout and "photon-os-installer 2.7" in again.stdout
    newer = import_iso(tmp_path, "2.9")
    assert newer.returncode == 0 and "photon-os-installer 2.9" in newer.stdout
    manifest = json.loads((tmp_path / ".photonkick/releases/5.0/manifest.json").read_text())
    assert manifest["installer"]["version"] == "2.9"


def test_iso_without_a_version_needs_an_explicit_installer(tmp_path: Path) -> None:
    result = import_iso(tmp_path, None)
    assert result.returncode == 0
    assert "warning: installer version unknown" in result.stderr
    auto = run("check", str(spec(tmp_path, None)), cwd=tmp_path)
    assert auto.returncode == 2
    assert (
        "photon.installer: auto, but the installer of the imported Photon 5.0 ISO is "
        "unknown" in auto.stderr
    )
    assert "no photon-os-installer package metadata" in auto.stderr
    explicit = run("check", str(spec(tmp_path, "2.7")), cwd=tmp_path)
    assert explicit.returncode == 0 and "installer 2.7: OK" in explicit.stdout


def test_auto_before_any_import_assumes_27_and_names_import_iso(tmp_path: Path) -> None:
    result = run("check", str(spec(tmp_path, None)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "installer 2.7 (assumed): OK" in result.stdout
    assert "photonkick import-iso" in result.stderr


def test_serve_reload_keeps_the_last_good_spec_when_the_iso_contradicts_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert import_iso(tmp_path, "2.3").returncode == 0
    path = spec(tmp_path, None)
    data = tmp_path / ".photonkick" / "releases"
    server = BootServer(
        path,
        load_inventory(path, imported=imported_installers(data)),
        StateDir(tmp_path / "state"),
        data,
        Listen("127.0.0.1", 0, "127.0.0.1", 0),
    )
    try:
        assert server.service.inventory.photon.installer == "2.3"
        spec(tmp_path, "2.8")
        assert server.reload() is False
        assert "the spec says installer 2.8" in caplog.text
        assert server.service.inventory.photon.installer == "2.3"
    finally:
        server.stop()

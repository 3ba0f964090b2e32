"""The photonkick command: exit codes, messages, atomic render, redaction."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import EXAMPLE, REPO

from photonkick.server.cli import main
from photonkick.server.loaders import grub_prefix

GOOD = """
server: {url: https://pk.example, boot_url: "http://192.0.2.1:8080"}
hosts:
  - name: a
    mac: "00:50:56:00:00:01"
    users: [{name: ops, password_hash: "$6$salt$hash"}]
"""


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "photonkick"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd)


def test_check_ok_and_warns_about_plain_http() -> None:
    result = run("check", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "4 hosts, Photon 5.0, installer 2.7 (assumed): OK" in result.stdout
    assert "insecure_installation=1" in result.stderr


def test_check_bad_spec_exits_2_with_locations(write_spec: Callable[..., Path]) -> None:
    spec = write_spec("server: {url: https://x}\nhosts:\n  - {name: a, mac: nope}\n  - {nmae: b}\n")
    result = run("check", str(spec))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{spec}:3:20: hosts[0].mac: 'nope' is not a MAC address like 00:50:56:00:10:01",
        f"{spec}:4:5: hosts[1].name: is required",
        f"{spec}:4:6: hosts[1].nmae: unknown key (did you mean 'name'?)",
        "photonkick: 3 problem(s); nothing was changed",
    ]


def test_render_writes_kickstarts_private(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(GOOD)
    out = tmp_path / "out"
    assert main(["render", str(spec), "--out", str(out)]) == 0
    ks = out / "kickstarts" / "a.json"
    assert json.loads(ks.read_text())["hostname"] == "a"
    assert ks.stat().st_mode & 0o777 == 0o600
    secret = tmp_path / ".photonkick" / "secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    # A second render with the same state gives the same tokens.
    first = ks.read_text()
    assert main(["render", str(spec), "--out", str(out)]) == 0
    assert ks.read_text() == first


def test_bad_render_changes_nothing(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(GOOD)
    out = tmp_path / "out"
    assert main(["render", str(spec), "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    spec.write_text(GOOD + "  - {name: b, mac: '00:50:56:00:00:01'}\n")
    assert main(["render", str(spec), "--out", str(out)]) == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".photonkick", "out", "spec.yaml"]


def test_render_into_fresh_dir_leaves_nothing_on_error(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    spec = write_spec("server: {url: https://x}\nhosts: [{name: a}]\n")
    assert main(["render", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_render_refuses_a_foreign_folder(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(GOOD)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["render", str(spec), "--out", str(out)]) == 1
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_show_redacts_and_guestinfo_reveals(
    write_spec: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(GOOD)
    assert main(["show", str(spec), "a"]) == 0
    shown = capsys.readouterr().out
    assert "$6$salt$hash" not in shown and "<redacted>" in shown
    # guestinfo carries the kickstart as served: its tokens, and no secret.
    assert main(["show", str(spec), "a", "--guestinfo"]) == 0
    decoded = json.loads(base64.b64decode(capsys.readouterr().out))
    assert "$6$salt$hash" not in json.dumps(decoded) and "<redacted>" not in json.dumps(decoded)
    assert any("/ks/a/" in line and "/secrets" in line for line in decoded["postinstall"])
    # --reveal shows everything: the secrets embedded in the kickstart.
    assert main(["show", str(spec), "a", "--reveal"]) == 0
    revealed = json.loads(capsys.readouterr().out)["postinstall"]
    (line,) = [ln for ln in revealed if ln.startswith("pk_secrets=$(echo ")]
    assert b"$6$salt$hash" in base64.b64decode(base64.b64decode(line.split()[1]).split()[-1])


def test_show_unknown_host(
    write_spec: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(GOOD)
    assert main(["show", str(spec), "zz"]) == 2
    assert "no host 'zz'" in capsys.readouterr().err


def test_render_example_uses_cwd_state(tmp_path: Path) -> None:
    result = run("render", "--example", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "kickstarts").iterdir()) == [
        "db01.json",
        "dev01.json",
        "web01.json",
        "web02.json",
    ]
    assert (tmp_path / ".photonkick" / "secret").exists()


def test_example_verb_prints_a_valid_spec(tmp_path: Path) -> None:
    result = run("example")
    assert result.returncode == 0
    spec = tmp_path / "lab.yaml"
    spec.write_text(result.stdout)
    assert run("check", str(spec)).returncode == 0


def test_every_verb_is_documented_in_readme() -> None:
    readme = (REPO / "README.md").read_text()
    from photonkick.server.cli import build_parser

    verbs = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    missing = [v for v in verbs if f"photonkick {v}" not in readme]
    assert not missing, f"README.md does not document: {missing}"


def test_secret_file_is_not_world_readable_even_with_lax_umask(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    old = os.umask(0)
    try:
        assert main(["render", str(write_spec(GOOD)), "--out", str(tmp_path / "o")]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / ".photonkick").stat().st_mode & 0o077 == 0


def test_render_writes_boot_tree_and_loaders(tmp_path: Path) -> None:
    result = run("render", "--example", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert (
        (out / "tftp/pxelinux.cfg/01-00-50-56-00-10-01")
        .read_text()
        .startswith("# photonkick: install Photon OS 5.0 on web01")
    )
    assert (out / "tftp/grub/grub.cfg-01-00-50-56-00-20-01").is_file()
    assert (out / "http/ipxe/00-50-56-00-30-01.ipxe").is_file()
    assert (out / "http/ipxe/boot.ipxe").is_file()
    # .ci/setup installs the Debian loader packages, so every loader must be there.
    for loader in (
        "lpxelinux.0",
        "pxelinux.0",
        "ldlinux.c32",
        "grubx64.efi",
        "undionly.kpxe",
        "ipxe.efi",
        "snponly.efi",
    ):
        assert (out / "tftp" / loader).stat().st_size > 10_000, loader
    assert (out / "tftp/lpxelinux.0").read_bytes() == Path(
        "/usr/lib/PXELINUX/lpxelinux.0"
    ).read_bytes()
    # The GRUB image is a PE/COFF EFI application with the network prefix embedded.
    grub = (out / "tftp/grubx64.efi").read_bytes()
    # A rendered tree is served by another TFTP server: GRUB asks the one DHCP names.
    assert grub[:2] == b"MZ" and b"(tftp)/grub" in grub


def test_doctor_lists_every_loader(tmp_path: Path) -> None:
    result = run("doctor", "--state", str(tmp_path / "state"))
    names = [ln.split()[0] for ln in result.stdout.splitlines() if not ln.startswith(" ")]
    assert names == [
        "lpxelinux.0",
        "pxelinux.0",
        "ldlinux.c32",
        "grubx64.efi",
        "undionly.kpxe",
        "ipxe.efi",
        "snponly.efi",
    ]
    assert result.returncode == 0, result.stdout
    assert "MISSING" not in result.stdout


def test_check_prints_dhcp_settings() -> None:
    result = run("check", "--example")
    assert "bundled example: 4 hosts" in result.stdout
    assert "dhcp-boot=tag:!ipxe,tag:efi64,grubx64.efi,,192.0.2.1" in result.stdout


@pytest.mark.parametrize(
    ("server", "prefix"),
    [
        ("192.0.2.1", "(tftp,192.0.2.1)/grub"),
        ("boot.example.com", "(tftp)/grub"),
        (None, "(tftp)/grub"),
    ],
)
def test_grub_prefix_names_an_address_only(server: str | None, prefix: str) -> None:
    # GRUB resolves no names before its config runs: a host name leaves the DHCP answer's.
    assert grub_prefix(server) == prefix

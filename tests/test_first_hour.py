"""A new user's first hour, with the real command from a clean folder: the example spec
passes `check` as printed, and `import-iso` fills the folder `serve` reads from whatever
folder either is run in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from photon_iso import build_photon_iso

from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.secrets import Secret

EXE = Path(sys.executable).parent / "photonkick"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=cwd)


def test_printed_example_passes_check_as_printed(tmp_path: Path) -> None:
    shell = f"{EXE} example > lab.yaml && {EXE} check lab.yaml"
    done = subprocess.run(["sh", "-c", shell], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # No ISO imported yet: checked as the assumed installer, with the command that fixes it.
    assert "lab.yaml: 4 hosts, Photon 5.0, installer 2.7 (assumed): OK" in done.stdout
    assert "import-iso SPEC PHOTON.iso" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.yaml"]


def test_each_printed_example_has_its_own_password(tmp_path: Path) -> None:
    first, second = run("example", cwd=tmp_path).stdout, run("example", cwd=tmp_path).stdout
    lines = [
        next(line for line in text.splitlines() if "MYSQL_ROOT_PASSWORD" in line)
        for text in (first, second)
    ]
    assert lines[0] != lines[1]
    assert "{file: db-password.txt}" in lines[0]  # the comment says where to keep it


def test_example_out_writes_the_spec_and_a_private_secret(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    old = os.umask(0)
    try:
        done = run("example", "--out", str(tmp_path / "lab"), cwd=elsewhere)
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    spec, secret = tmp_path / "lab" / "lab.yaml", tmp_path / "lab" / "db-password.txt"
    assert f"next: photonkick check {spec}" in done.stdout
    assert secret.stat().st_mode & 0o777 == 0o600
    assert len(secret.read_text().strip()) >= 20
    assert "MYSQL_ROOT_PASSWORD: {file: db-password.txt}" in spec.read_text()
    check = run("check", str(spec), cwd=elsewhere)
    assert check.returncode == 0, check.stderr
    # The spec's secret is the file's password.
    (container,) = load_inventory(spec, {}).host("db01").containers
    assert dict(container.env)["MYSQL_ROOT_PASSWORD"] == Secret(
        secret.read_text().strip(), "file:db-password.txt"
    )


def test_example_out_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "db-password.txt").write_text("mine\n")
    done = run("example", "--out", "lab", cwd=tmp_path)
    assert done.returncode == 2
    assert "db-password.txt exist" in done.stderr and "nothing was changed" in done.stderr
    assert sorted(p.name for p in (tmp_path / "lab").iterdir()) == ["db-password.txt"]
    assert (tmp_path / "lab" / "db-password.txt").read_text() == "mine\n"


def _serve_start(spec: Path, cwd: Path) -> tuple[str, str]:
    """Start the real `serve`, read its banner and its warnings, stop it; (stdout, stderr)."""
    proc = subprocess.Popen(
        [str(EXE), "serve", str(spec), "--http", "127.0.0.1:0", "--tftp", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    assert proc.stdout is not None
    out: list[str] = []
    # The banner, then the DHCP settings ending with ISC dhcpd's closing brace, then any
    # warning about the releases folder: read up to the brace, then wait a moment.
    done = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if line == "  }\n":
                break
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(30), "serve printed no DHCP settings"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=15)
    return "".join(out) + rest, err


def test_import_iso_fills_the_folder_serve_reads_from_any_folder(tmp_path: Path) -> None:
    lab, a, b = tmp_path / "lab", tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert run("example", "--out", str(lab), cwd=a).returncode == 0
    spec = lab / "lab.yaml"
    iso = tmp_path / "photon-5.0.iso"
    build_photon_iso(iso)

    # Nothing imported yet: serve names the exact command, for the folder it runs in.
    out, err = _serve_start(spec, cwd=b)
    command = f"photonkick import-iso {spec} PHOTON.iso"
    assert f"run {command}" in err, err
    releases = lab / ".photonkick" / "releases"
    assert f"releases   {releases}" in out

    # That command, run from yet another folder, imports where serve looks.
    argv = command.replace("PHOTON.iso", str(iso)).split()[1:]
    done = run(*argv, cwd=a)
    assert done.returncode == 0, done.stderr
    assert (releases / "5.0" / "isolinux" / "vmlinuz").is_file()
    assert not (a / ".photonkick").exists() and not (b / ".photonkick").exists()
    out, err = _serve_start(spec, cwd=b)
    assert "no imported Photon" not in err, err


def test_import_iso_with_relative_spec_and_state(tmp_path: Path) -> None:
    iso = tmp_path / "photon.iso"
    build_photon_iso(iso)
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "lab.yaml").write_text("not even read\n")
    done = run("import-iso", "lab/lab.yaml", str(iso), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "lab/.photonkick/releases/5.0/isolinux/vmlinuz").is_file()
    done = run("import-iso", str(iso), "--state", "st", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "st/releases/5.0/isolinux/vmlinuz").is_file()


def test_import_iso_refuses_a_missing_or_swapped_spec(tmp_path: Path) -> None:
    iso = tmp_path / "photon.iso"
    build_photon_iso(iso)
    swapped = run("import-iso", str(iso), "lab.yaml", cwd=tmp_path)
    assert swapped.returncode == 2
    assert "is an ISO, not a spec: give SPEC first" in swapped.stderr
    missing = run("import-iso", "nope.yaml", str(iso), cwd=tmp_path)
    assert missing.returncode == 2 and "nope.yaml: no such spec file" in missing.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photon.iso"]

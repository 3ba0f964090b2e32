"""The installer's log, shipped live: the real shipper script against a real `photonkick serve`,
phases read from lines in the installer's own format, redaction, and the stopped-log failure."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_process import MAC, ServeProcess

from photonkick.kickstarts.log_shipper import (
    LOG_EVENT,
    SHIPPER_PATH,
    preinstall_lines,
    shipper_script,
)
from photonkick.server.install_log import REDACTED, parse_query, redact
from photonkick.server.installer_phases import Finding, findings, meaningful

HASH = "$6$saltsalt$HASHVALUEabcdef0123"
REG_PASSWORD = "reg-pass-9f8e7d"
SPEC = """
server: {url: "http://127.0.0.1:PORT", install_log_timeout: TIMEOUT}
hosts:
  - name: h00
    mac: "MAC"
    users: [{name: ops, password_hash: "HASH", ssh_keys: []}]
    registries: [{server: reg.example, username: bot, password: {env: PK_TEST_REG}}]
"""


def stamp(message: str, second: int = 0) -> str:
    """A line as the installer's logger writes it (``%(asctime)s - %(message)s``)."""
    return f"2026-12-02 07:{second // 60:02d}:{second % 60:02d},{second % 1000:03d} - {message}"


# -- phases from the installer's lines (2.7's messages) --

INSTALL_27 = [
    stamp("Starting Log"),
    stamp("Run preinstall script", 1),
    stamp("running ['sgdisk', '-Z', '/dev/sda']", 2),
    stamp("running ['sgdisk', '-n', '1::+2M', '-t', '1:ef02', '/dev/sda']", 3),
    stamp("mounting /dev/sda3 to /mnt/photon-root", 4),
    stamp(
        "running tdnf -j -y --releasever 5.0 --installroot /mnt/photon-root install filesystem", 5
    ),
    stamp(
        "running tdnf -j -y --releasever 5.0 --installroot /mnt/photon-root -c "
        "/mnt/tdnf.conf --setopt=reposdir=/mnt install minimal linux-esx curl initramfs",
        6,
    ),
    stamp("running ['/installer/mk-setup-grub.sh', '/mnt/photon-root', 'bios']", 40),
    stamp("Executing: m_postinstall", 41),
    stamp("Run postinstall script", 42),
    stamp("creating image was successful", 50),
]


def test_phases_come_from_the_installers_own_messages() -> None:
    assert findings(INSTALL_27) == [
        Finding("partitioning", ""),
        Finding("partitioning", ""),
        Finding("packages", "4 packages"),
        Finding("bootloader", ""),
        Finding("postinstall", ""),
        Finding("postinstall", ""),
    ]


def test_a_traceback_fails_with_the_message_it_belongs_to() -> None:
    lines = [
        stamp("running ['sgdisk', '-Z', '/dev/sda']", 2),
        stamp("Exception('Total space requested for /dev/sda (9000 MB) exceeds disk size')", 3),
        "Traceback (most recent call last):",
        '  File "/installer/installer.py", line 679, in _install',
        "Exception: Total space requested for /dev/sda (9000 MB) exceeds disk size",
    ]
    # The traceback arrives in a later chunk than its message: the earlier lines explain it.
    assert findings(lines[2:], before=lines[:2]) == [
        Finding(
            "failed",
            "installer failed: Exception('Total space requested for /dev/sda (9000 MB) "
            "exceeds disk size')",
        )
    ]
    assert findings([stamp("Failed to install some packages", 9)]) == [
        Finding("failed", "installer: Failed to install some packages")
    ]


def test_meaningful_lines_leave_out_continuations_and_blanks() -> None:
    lines = [stamp("one"), "  continued", stamp("   "), stamp("two"), "", stamp("three")]
    assert meaningful(lines, 2) == ["two", "three"]


def test_redaction_of_hashes_tokens_and_known_secrets() -> None:
    text = (
        "user ops $6$abc$def and $y$j9T$salt$hash, $2b$12$abcdefghij, $gy$x$y, $7$CU..$z "
        f"url /cb/h00/ABCDEFGHIJKLMNOPQRSTUVWXYZ/log secret {REG_PASSWORD} $5$r$x $1$s$y"
    )
    out = redact(text, [REG_PASSWORD])
    for leaked in ("$6$", "$y$", "$2b$", "$gy$", "$7$", "$5$", "$1$", "ABCDEFGHIJ", REG_PASSWORD):
        assert leaked not in out
    assert out.count(REDACTED) == 8 and "/cb/h00/<token>/log" in out


@pytest.mark.parametrize(
    ("boot", "offset"), [(None, "0"), ("a b", "0"), ("x" * 65, "0"), ("b1", "-1"), ("b1", None)]
)
def test_a_query_that_is_not_the_shippers_is_refused(boot: str | None, offset: str | None) -> None:
    with pytest.raises(ValueError):
        parse_query(boot, offset)


# -- the shipper, for real --


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServeProcess]:
    monkeypatch.setenv("PK_TEST_REG", REG_PASSWORD)
    proc = ServeProcess(tmp_path, 1, tmp_path / "state", tmp_path / "data")
    spec = SPEC.replace("PORT", str(proc.port)).replace("TIMEOUT", "6")
    proc.spec.write_text(spec.replace("MAC", MAC.format(0)).replace("HASH", HASH))
    proc.start()
    yield proc
    proc.stop()


def host(serve: ServeProcess) -> dict[str, Any]:
    status, _, body = serve.request("GET", "/api/v1/hosts/h00")
    assert status == 200
    result: dict[str, Any] = json.loads(body)
    return result


def wait_until(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("timed out")


def start_shipper(
    serve: ServeProcess, shell: list[str], log: Path, tmp: Path
) -> subprocess.Popen[bytes]:
    url = f"http://127.0.0.1:{serve.port}/cb/h00/{serve.token('h00')}/{LOG_EVENT}"
    script = tmp / "logship.sh"
    script.write_text(shipper_script(url, log_path=str(log), interval=0.2))
    return subprocess.Popen(
        [*shell, str(script)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_shipper(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)


def shells() -> list[list[str]]:
    found = [["bash"]]
    if shutil.which("dash"):
        found.append(["dash"])
    if shutil.which("busybox"):
        found.append(["busybox", "sh"])
    return found


@pytest.mark.parametrize("shell", shells(), ids=lambda s: s[0])
def test_shipped_lines_arrive_once_in_order_redacted(
    serve: ServeProcess, tmp_path: Path, shell: list[str]
) -> None:
    log = tmp_path / "installer.log"
    log.write_text(stamp("Starting Log") + "\n")
    shipper = start_shipper(serve, shell, log, tmp_path)
    try:
        wait_until(lambda: host(serve)["log_tail"])
        lines = [stamp("Starting Log")]
        with log.open("a") as f:
            for i, line in enumerate(INSTALL_27[1:7]):
                f.write(line + "\n")
                f.flush()
                lines.append(line)
                time.sleep(0.07 * (i % 3))
            # A config dump with a hash and a registry password, then a half-written line.
            secret = stamp(f"users: ops {HASH} registry {REG_PASSWORD}", 7)
            f.write(secret + "\n" + stamp("half", 8)[:20])
            f.flush()
            lines.append(stamp(f"users: ops {REDACTED} registry {REDACTED}", 7))
            time.sleep(0.6)
            f.write(stamp("half", 8)[20:] + "\n")
            lines.append(stamp("half", 8))
        tail = wait_until(lambda: (t := host(serve)["log_tail"]) and t.endswith("half") and t)
        assert tail.splitlines() == lines
        assert HASH not in tail and REG_PASSWORD not in tail
        kinds = [e["kind"] for e in host(serve)["events"]]
        assert kinds.count("partitioning") == 1 and "packages" in kinds
        assert host(serve)["phase"] == "packages"
    finally:
        stop_shipper(shipper)


def test_a_repeated_chunk_is_stored_once_and_a_new_boot_starts_a_new_log(
    serve: ServeProcess,
) -> None:
    path = f"/cb/h00/{serve.token('h00')}/log"
    first = f"{stamp('one')}\n{stamp('two')}\n".encode()
    for _ in range(2):  # the answer was lost: the same chunk again
        assert serve.request("POST", f"{path}?boot=b1&offset=0", first)[0] == 200
    overlap = f"{stamp('two')}\n{stamp('three')}\n".encode()
    offset = len(first) - len(f"{stamp('two')}\n".encode())
    assert serve.request("POST", f"{path}?boot=b1&offset={offset}", overlap)[0] == 200
    assert host(serve)["log_tail"].splitlines() == [stamp("one"), stamp("two"), stamp("three")]
    assert serve.request("POST", f"{path}?boot=b2&offset=0", b"again\n")[0] == 200
    assert host(serve)["log_tail"] == "again"


def test_the_log_endpoint_follows_the_callback_rules(serve: ServeProcess) -> None:
    token = serve.token("h00")
    assert serve.request("POST", "/cb/h00/WRONGTOKEN/log?boot=b&offset=0", b"x\n")[0] == 404
    assert serve.request("POST", f"/cb/nobody/{token}/log?boot=b&offset=0", b"x\n")[0] == 404
    assert serve.request("POST", f"/cb/h00/{token}/log?boot=b%20c&offset=0", b"x\n")[0] == 400
    assert serve.request("POST", f"/cb/h00/{token}/log", bytes(range(256)))[0] == 400
    big = b"y" * (300 * 1024)
    assert serve.request("POST", f"/cb/h00/{token}/log?boot=b&offset=0", big)[0] == 413
    assert serve.request("POST", f"/cb/h00/{token}/log?boot=b&offset=0", b"\xff\x00\n")[0] == 200
    assert token not in serve.log_text()
    for event in ("installed", "firstboot", "ready"):
        assert serve.callback("h00", event)[0] == 200
    assert serve.request("POST", f"/cb/h00/{token}/log?boot=b&offset=3", b"late\n")[0] == 403


def test_an_installer_error_fails_the_build_with_its_message(serve: ServeProcess) -> None:
    path = f"/cb/h00/{serve.token('h00')}/log?boot=b1&offset=0"
    body = "\n".join(
        [
            stamp("running ['sgdisk', '-Z', '/dev/sda']", 2),
            stamp("Exception('Total space requested for /dev/sda exceeds disk size')", 3),
            "Traceback (most recent call last):",
            "Exception: Total space requested for /dev/sda exceeds disk size",
        ]
    )
    assert serve.request("POST", path, body.encode() + b"\n")[0] == 200
    found = host(serve)
    assert found["failed"] == (
        "installer failed: Exception('Total space requested for /dev/sda exceeds disk size')"
    )
    assert [e["kind"] for e in found["events"]].count("failed") == 1


def test_a_log_that_stops_fails_the_build_after_the_configured_time(serve: ServeProcess) -> None:
    path = f"/cb/h00/{serve.token('h00')}/log?boot=b1&offset=0"
    body = stamp("running ['sgdisk', '-Z', '/dev/sda']", 2) + "\n" + stamp("mkfs.ext4 /dev/sda3")
    assert serve.request("POST", path, body.encode() + b"\n")[0] == 200
    # The shipper's empty rounds (or repeats) say the installer is alive, past the timeout.
    length = len(body) + 1
    for _ in range(8):
        time.sleep(1)
        assert serve.request("POST", path.replace("offset=0", f"offset={length}"), b"")[0] == 200
    assert host(serve)["failed"] is None
    started = time.monotonic()
    failed = wait_until(lambda: host(serve)["failed"], timeout=30)
    assert time.monotonic() - started >= 5  # install_log_timeout: 6 (one-second watch)
    assert failed.startswith("the installer log stopped") and failed.endswith("mkfs.ext4 /dev/sda3")
    assert host(serve)["phase"] == "partitioning"


def test_a_log_followed_by_installed_is_no_failure(serve: ServeProcess) -> None:
    path = f"/cb/h00/{serve.token('h00')}/log?boot=b1&offset=0"
    assert serve.request("POST", path, stamp("Run postinstall script").encode() + b"\n")[0] == 200
    assert serve.callback("h00", "installed")[0] == 200
    time.sleep(8)
    assert host(serve)["failed"] is None


# -- the preinstall lines --


def test_the_preinstall_lines_and_shipper_pass_shellcheck(tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian package shellcheck; .ci/setup --test)")
    preinstall = tmp_path / "preinstall.sh"
    preinstall.write_text("\n".join(preinstall_lines("http://10.0.0.1/cb/h/TOKEN")) + "\n")
    shipper = tmp_path / "logship.sh"
    shipper.write_text(shipper_script("http://10.0.0.1/cb/h/TOKEN/log"))
    for shell, script in (("bash", preinstall), ("sh", shipper)):
        result = subprocess.run(
            [shellcheck, f"--shell={shell}", str(script)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_sourcing_the_preinstall_like_the_installer_returns_at_once_and_exports_nothing(
    tmp_path: Path,
) -> None:
    # m_preinstall: bash -c "set -a && source <script> && env -0" with both outputs piped, and
    # the installer waits for the pipes to close. The shipper must not hold them open.
    script = tmp_path / "builtin_preinstall.sh"
    lines = preinstall_lines("http://127.0.0.1:9/cb/h/TOKEN")
    script.write_text("\n".join(lines).replace("/tmp/photonkick-logship", str(tmp_path / "ls")))
    before = subprocess.run(["env", "-0"], capture_output=True, text=True).stdout
    started = time.monotonic()
    done = subprocess.run(
        ["/bin/bash", "-c", f"set -a && source {script} && env -0"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0 and time.monotonic() - started < 5
    exported = set(done.stdout.split("\0")) - set(before.split("\0"))
    assert not [v for v in exported if not v.startswith(("_=", "SHLVL=", "OLDPWD="))]
    assert "TOKEN" not in done.stdout
    running = subprocess.run(["pgrep", "-f", str(tmp_path / "ls")], capture_output=True, text=True)
    for pid in running.stdout.split():
        with contextlib.suppress(ProcessLookupError):  # it may have ended since pgrep
            os.kill(int(pid), signal.SIGTERM)
    assert running.stdout.split(), "the shipper was not started"


@pytest.mark.installer
@pytest.mark.parametrize("version", ["2.3", "2.7"])
def test_the_real_installer_runs_the_preinstall_and_its_log_arrives(
    serve: ServeProcess, tmp_path: Path, version: str
) -> None:
    from test_installer_tier import tag_dir

    base = f"http://127.0.0.1:{serve.port}/cb/h00/{serve.token('h00')}"
    log_dir = tmp_path / "log"
    lines = preinstall_lines(base, log_path=str(log_dir / "installer.log"))
    shipper = str(tmp_path / "logship")  # a path of this test's own, to find its process
    lines = [line.replace(SHIPPER_PATH, shipper) for line in lines]
    probe = Path(__file__).with_name("preinstall_probe.py")
    done = subprocess.run(
        [sys.executable, str(probe), str(tag_dir(version)), str(log_dir)],
        input=json.dumps(lines),
        capture_output=True,
        text=True,
        timeout=60,
        # The installer logs its whole environment after the preinstall: keep it small, as
        # on the installer's ISO, so the lines checked below stay in the log's tail.
        env={"PATH": os.environ["PATH"], "HOME": "/root", "LANG": "C.UTF-8"},
    )
    try:
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["seconds"] < 5  # the installer is not held up
        tail = wait_until(lambda: (t := host(serve)["log_tail"]) and "sgdisk" in t and t)
        messages = meaningful(tail.splitlines(), 100)
        assert "Run preinstall script" in messages
        assert serve.token("h00") not in tail
        assert "partitioning" in [e["kind"] for e in host(serve)["events"]]
    finally:
        running = subprocess.run(["pgrep", "-f", shipper], capture_output=True, text=True)
        for pid in running.stdout.split():
            with contextlib.suppress(ProcessLookupError):  # it may have ended since pgrep
                os.kill(int(pid), signal.SIGTERM)


def test_a_sick_log_database_answers_503_and_the_retry_is_stored_once(
    serve: ServeProcess,
) -> None:
    from test_durability import write_lock

    path = f"/cb/h00/{serve.token('h00')}/log?boot=b1&offset=0"
    body = stamp("running ['sgdisk', '-Z', '/dev/sda']").encode() + b"\n"
    with write_lock(serve.state / "install-log.db"):
        status, headers, _ = serve.request("POST", path, body)
        assert status == 503 and headers["Retry-After"].isdigit()
        assert host(serve)["log_tail"] is None  # nothing acknowledged, nothing shown
    for _ in range(2):  # the shipper's next round, and one more whose answer was lost
        assert serve.request("POST", path, body)[0] == 200
    assert host(serve)["log_tail"] == body.decode().strip()


def test_the_host_page_shows_events_log_tail_and_reason_and_keeps_no_token(
    serve: ServeProcess,
) -> None:
    path = f"/cb/h00/{serve.token('h00')}/log?boot=b1&offset=0"
    body = "\n".join(
        [
            stamp("running ['sgdisk', '-Z', '/dev/sda']", 2),
            stamp("Failed to install some packages", 9),
            "<script>alert(1)</script>",
        ]
    )
    assert serve.request("POST", path, body.encode() + b"\n")[0] == 200
    status, headers, page = serve.request("GET", "/hosts/h00")
    text = page.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "installer: Failed to install some packages" in text  # the reason
    assert "partitioning" in text and "failed" in text  # the events
    assert "sgdisk" in text and "<script>alert(1)" not in text  # the tail, escaped
    admin = (serve.state / "admin-token").read_text().strip()
    assert admin not in text and serve.token("h00") not in text
    assert "localStorage" not in text and "cookie" not in text
    assert 'type="password"' in text and "/rearm" in text
    assert serve.request("GET", "/hosts/nobody")[0] == 404
    _, _, dashboard = serve.request("GET", "/")
    assert b'href="/hosts/h00"' in dashboard


def test_any_log_request_is_answered_below_500(serve: ServeProcess) -> None:
    import random

    rng = random.Random(14)
    token = serve.token("h00")
    queries = ["", "?boot=b&offset=0", "?boot=b&offset=99999999999999", "?offset=1&boot=%00"]
    queries += ["?boot=%C3%A9%C3%A9&offset=1", "?boot=b&offset=1e3", "?boot=b&boot=c&offset=0"]
    for i in range(60):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 3000)))
        query = queries[i % len(queries)]
        kind = rng.choice(["text/plain", "application/json", "multipart/form-data", ""])
        headers = {"Content-Type": kind} if kind else {}
        status, _, _ = serve.request("POST", f"/cb/h00/{token}/log{query}", body, headers)
        assert status < 500, (query, kind, body[:40])
    assert "Traceback" not in serve.log_text()

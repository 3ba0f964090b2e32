"""Secret-free kickstarts: the one-time secrets URL over real HTTP, the postinstall fetch run for
real (bash and curl in a temporary root), render and ISOs without secrets, callbacks after ready.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from ports import free_port
from serve_process import popen_serve
from test_server import SECRETS as SERVER_SECRETS
from test_server import SPEC as SERVER_SPEC
from test_server import Lab

from photonkick.kickstarts.host_secrets import parse_secrets_document
from photonkick.server.fleet import HostRun
from photonkick.server.report import build_report, format_report
from photonkick.server.secrets_gate import SecretsLedger
from photonkick.server.state_dir import StateDir
from photonkick.server.timeline import Timeline

SPEC = (
    SERVER_SPEC
    + """  - name: iso01
    boot: iso
    root: {{allow_login: true, password_hash: "$6$rootsalt$ROOTHASHxyz"}}
"""
)
REG, KEY = SERVER_SECRETS[:2]
SECRETS = (*SERVER_SECRETS, "ROOTHASHxyz")
ELSEWHERE = "127.0.0.2"
"""A second loopback address: another machine as far as the server can tell."""


def variants(secret: str) -> list[str]:
    """The secret and its base64 forms at each alignment."""
    forms = [secret]
    for pad in ("", "x", "xy"):
        encoded = base64.b64encode((pad + secret).encode()).decode()
        forms.append(encoded[len(pad) * 4 // 3 + 2 : -4])
    return forms


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        for form in variants(secret):
            assert form not in text, f"{secret!r} ({form!r}) found in {where}"


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setenv("PK_TEST_REG", REG)
    monkeypatch.setenv("PK_TEST_KEY", KEY)
    lab = Lab(tmp_path, free_port(), SPEC)
    yield lab
    lab.stop()


def curl(url: str, source: str = "127.0.0.1") -> tuple[int, bytes]:
    """GET with the real curl from a chosen loopback address."""
    result = subprocess.run(
        ["curl", "-sS", "--interface", source, "-w", "\n%{http_code}", url],
        capture_output=True,
        check=True,
        timeout=30,
    )
    body, _, code = result.stdout.rpartition(b"\n")
    return int(code), body


def installer_kickstart(lab: Lab, source: str = "127.0.0.1") -> dict[str, object]:
    """What web01's installer gets: boot config over TFTP, then the kickstart over HTTP."""
    config = lab.tftp("pxelinux.cfg/01-00-50-56-00-10-01")
    match = re.search(rb"ks=(http://\S+\.json)", config)
    assert match, config
    status, body = curl(match.group(1).decode(), source)
    assert status == 200
    kickstart: dict[str, object] = json.loads(body)
    return kickstart


def secrets_url(kickstart: dict[str, object]) -> str:
    text = "\n".join(kickstart["postinstall"])  # type: ignore[arg-type]
    match = re.search(r"http://127\.0\.0\.1:\d+/ks/[\w.-]+/[a-z2-7]{26}/secrets", text)
    assert match, "no secrets URL in the kickstart"
    return match.group(0)


def iso_kickstart(lab: Lab, name: str = "iso01") -> dict[str, object]:
    """An ISO host's kickstart as `photonkick iso` puts it on the ISO (never fetched)."""
    assert lab.server is not None
    from photonkick.kickstarts.kickstart import build_kickstart

    service = lab.server.service
    host = service.host(name)
    assert host is not None
    return build_kickstart(host, service.inventory, service.state.build(name))


def test_secrets_are_served_once_and_a_second_fetch_is_an_alarm(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    kickstart = installer_kickstart(lab)
    assert_no_secret(json.dumps(kickstart), "the kickstart")
    url = secrets_url(kickstart)
    status, body = curl(url)
    assert status == 200
    assert parse_secrets_document(body) == {
        "hash:ops": "$6$saltsalt$HASHVALUEabc",
        "file:/etc/photonkick/registry-1.password": REG + "\n",
        "file:/etc/photonkick/containers/web.env": f"API_KEY={KEY}\n",
    }
    status, body = curl(url)
    assert status == 409
    assert b"already fetched by 127.0.0.1" in body
    assert_no_secret(body.decode(), "the refusal")
    host = lab.host("web01")
    (alarm,) = host["alarms"]
    assert "already fetched by 127.0.0.1" in alarm
    assert [e["kind"] for e in host["events"]][-2:] == ["secrets", "alarm"]
    page = lab.get("/")[1].decode()
    assert "ALARM: secrets of web01 build 1 were already fetched" in page
    state = lab.root / ".photonkick"
    for name in ("timeline.db", "secrets.db", "state.db"):
        assert_no_secret((state / name).read_bytes().decode("latin-1"), name)
    assert_no_secret(caplog.text, "the logs")
    assert url.split("/")[-2] not in caplog.text
    assert "/ks/web01/<token>/secrets 409" in caplog.text


def test_only_the_kickstart_address_gets_the_secrets(lab: Lab) -> None:
    url = secrets_url(installer_kickstart(lab))
    status, body = curl(url, ELSEWHERE)
    assert status == 403 and b"its kickstart was fetched by 127.0.0.1" in body
    assert "refused to 127.0.0.2" in lab.host("web01")["alarms"][0]
    # The refusal used nothing up: the installer itself still gets them, once.
    assert curl(url)[0] == 200
    assert curl(url)[0] == 409


def test_wrong_token_looks_like_an_unknown_host(lab: Lab) -> None:
    url = secrets_url(installer_kickstart(lab))
    token = url.split("/")[-2]
    wrong = curl(url.replace(token, "a" * 26))
    unknown = curl(url.replace("/web01/", "/nohost/"))
    assert wrong == unknown and wrong[0] == 404
    kickstart_token = curl(url.replace(token, lab_kickstart_token(lab)))
    assert kickstart_token[0] == 404
    assert lab.host("web01")["alarms"] == []
    assert curl(url)[0] == 200


def lab_kickstart_token(lab: Lab) -> str:
    config = lab.tftp("pxelinux.cfg/01-00-50-56-00-10-01")
    match = re.search(rb"/ks/web01/([a-z2-7]+)\.json", config)
    assert match
    return match.group(1).decode()


def test_iso_host_first_fetch_wins(lab: Lab) -> None:
    url = secrets_url(iso_kickstart(lab))
    status, body = curl(url, ELSEWHERE)
    assert status == 200
    assert parse_secrets_document(body) == {
        "hash:root": "$6$rootsalt$ROOTHASHxyz",
        "hash:ops": "$6$saltsalt$HASHVALUEabc",
    }
    status, body = curl(url)
    assert status == 409 and b"already fetched by 127.0.0.2" in body
    assert len(lab.host("iso01")["alarms"]) == 1


def test_single_use_survives_a_restart(lab: Lab) -> None:
    url = secrets_url(iso_kickstart(lab))
    assert curl(url)[0] == 200
    lab.stop()
    lab.start()
    assert curl(url)[0] == 409


def test_concurrent_fetches_hand_out_the_secrets_once(lab: Lab) -> None:
    url = secrets_url(iso_kickstart(lab))
    codes: list[int] = []
    lock = threading.Lock()

    def fetch() -> None:
        code = curl(url)[0]
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=fetch) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [200] + [409] * 15
    assert len(lab.host("iso01")["alarms"]) == 15


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_ledger_claims_are_atomic_across_threads_and_connections(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        ledgers = [SecretsLedger(tmp_path / "secrets.db") for _ in range(2)]
    else:  # two servers' ledgers on one database
        url = request.getfixturevalue("pg_url")
        states = [StateDir(tmp_path / f"s{i}", url) for i in range(2)]
        request.addfinalizer(lambda: [state.close() for state in states])
        ledgers = [SecretsLedger(state.store("secrets")) for state in states]
    winners: list[str] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        if ledgers[i % 2].claim("h", 1, f"10.0.0.{i}", float(i)) is None:
            with lock:
                winners.append(f"10.0.0.{i}")

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    earlier = ledgers[0].claim("h", 1, "x", 0.0)
    assert earlier is not None and earlier.client == winners[0]
    assert ledgers[1].claim("h", 2, "x", 0.0) is None  # another build is its own
    ledgers[1].reopen("h", 1)
    assert ledgers[0].claim("h", 1, "y", 0.0) is None
    for ledger in ledgers:
        ledger.close()


def test_callbacks_end_at_ready_and_rearm_opens_them(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = secrets_url(installer_kickstart(lab))
    base = f"/cb/web01/{lab_kickstart_token(lab)}"
    assert curl(url)[0] == 200
    for event in ("installed", "firstboot", "ready"):
        assert lab.post(f"{base}/{event}") == 200
    assert lab.post(f"{base}/failed", b"reason=late") == 403
    assert lab.post(f"{base}/installed") == 403
    # A retried ``ready`` (its answer lost) is answered, and stored once.
    assert lab.post(f"{base}/ready") == 200
    assert [e["kind"] for e in lab.host("web01")["events"]].count("ready") == 1
    assert lab.host("web01")["failed"] is None
    assert lab.post(f"/cb/web01/{'a' * 26}/ready") == 404
    token = base.split("/")[-1]
    assert token not in caplog.text and "/cb/web01/<token>/failed 403" in caplog.text
    # A rearmed host installs again: callbacks and one more secrets fetch are allowed.
    assert lab.post("/api/v1/hosts/web01/rearm") == 200
    assert installer_kickstart(lab) is not None
    assert curl(url)[0] == 200
    assert lab.post(f"{base}/installed") == 200


def test_render_writes_no_secret(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    exe = Path(sys.executable).parent / "photonkick"
    result = subprocess.run(
        [str(exe), "render", str(lab.spec), "--out", str(out), "--state", str(tmp_path / "st")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "web01.json" for p in files) and len(files) > 5
    for path in files:
        assert_no_secret(path.read_bytes().decode("latin-1"), str(path))
    grep = subprocess.run(
        ["grep", "-rlE", "HASHVALUE|ROOTHASH|reg-pass|api-key|\\$6\\$", str(out)],
        capture_output=True,
        text=True,
    )
    assert grep.returncode == 1 and grep.stdout == "", grep.stdout
    assert_no_secret(result.stdout + result.stderr, "render's output")


def test_report_and_status_show_alarms(lab: Lab) -> None:
    url = secrets_url(iso_kickstart(lab))
    assert curl(url)[0] == 200
    assert curl(url, ELSEWHERE)[0] == 409
    assert lab.server is not None
    timeline: Timeline = lab.server.timeline
    report = build_report([HostRun("iso01", build=1, outcome="failed", started=0.0)], timeline)
    (alarm,) = report.hosts[0].alarms
    assert "refused to 127.0.0.2" in alarm
    assert f"iso01: ALARM: {alarm}" in format_report(report)


# -- the postinstall's fetch, run for real -------------------------------------------------


def secrets_script(kickstart: dict[str, object]) -> str:
    """The kickstart's secrets part with what it needs from around it (pk_report)."""
    lines: list[str] = kickstart["postinstall"]  # type: ignore[assignment]
    start = lines.index("# photonkick secrets: begin")
    end = lines.index("# photonkick secrets: end")
    report = next(ln for ln in lines if ln.startswith("pk_report() "))  # postinstall's own
    return "\n".join(["set -euo pipefail", report, *lines[start : end + 1], "echo applied"]) + "\n"


def temporary_root(tmp_path: Path) -> Path:
    """A root with its own /etc (users root and ops) and /tmp; /usr comes from this machine."""
    root = tmp_path / "root"
    for sub in ("etc/photonkick/containers", "tmp", "usr", "dev", "proc"):
        (root / sub).mkdir(parents=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (root / link).symlink_to(f"usr/{link}")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nops:x:1000:1000::/home/ops:/bin/bash\n"
    )
    (root / "etc/group").write_text("root:x:0:\nops:x:1000:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\nops:*:19000:0:99999:7:::\n")
    (root / "etc/shadow").chmod(0o600)
    return root


def run_in_root(root: Path, script: str) -> subprocess.CompletedProcess[str]:
    """bash in a chroot of ``root`` inside a private mount namespace, as postinstall runs."""
    (root / "tmp/secrets.sh").write_text(script)
    setup = (
        f"mount --rbind /usr {root}/usr && mount --rbind /dev {root}/dev && "
        f"mount -t proc proc {root}/proc && exec chroot {root} /bin/bash /tmp/secrets.sh"
    )
    return subprocess.run(
        ["unshare", "--mount", "sh", "-c", setup], capture_output=True, text=True, timeout=120
    )


def can_chroot() -> str | None:
    """Why the temporary root cannot be used here, or None."""
    missing = [t for t in ("unshare", "chroot", "chpasswd", "curl") if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)}"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a mount namespace (needs root): {probe.stderr.strip()}"
    return None


def test_postinstall_fetches_and_applies_the_secrets_once(lab: Lab, tmp_path: Path) -> None:
    why = can_chroot()
    if why:
        pytest.skip(why)
    kickstart = installer_kickstart(lab)
    script = secrets_script(kickstart)
    root = temporary_root(tmp_path)
    result = run_in_root(root, script)
    assert result.returncode == 0 and result.stdout.endswith("applied\n"), result.stderr
    shadow = (root / "etc/shadow").read_text()
    assert "ops:$6$saltsalt$HASHVALUEabc:" in shadow and "root:*:" in shadow
    for path, content in (
        ("etc/photonkick/registry-1.password", REG + "\n"),
        ("etc/photonkick/containers/web.env", f"API_KEY={KEY}\n"),
    ):
        assert (root / path).read_text() == content
        assert (root / path).stat().st_mode & 0o777 == 0o600
    assert list((root / "tmp").iterdir()) == [root / "tmp/secrets.sh"]  # nothing left behind
    assert_no_secret(result.stdout + result.stderr, "the script's output")

    # Run again (an attacker's copy, say): refused; the host fails loudly with the reason.
    again = temporary_root(tmp_path / "again")
    result = run_in_root(again, script)
    assert result.returncode == 1 and "applied" not in result.stdout
    assert "secrets refused (HTTP 409): secrets of web01 build 1 were already fetched" in (
        result.stderr
    )
    assert "ops:*:" in (again / "etc/shadow").read_text()
    assert not (again / "etc/photonkick/registry-1.password").exists()
    host = lab.host("web01")
    assert host["failed"].startswith("secrets refused (HTTP 409): secrets of web01 build 1")
    assert len(host["alarms"]) == 1


def test_embedded_secrets_apply_without_a_server(lab: Lab, tmp_path: Path) -> None:
    why = can_chroot()
    if why:
        pytest.skip(why)
    assert lab.server is not None
    from photonkick.kickstarts.kickstart import build_kickstart

    service = lab.server.service
    host = service.host("iso01")
    assert host is not None
    kickstart = build_kickstart(
        host, service.inventory, service.state.build("iso01"), embed_secrets=True
    )
    assert "/secrets" not in json.dumps(kickstart)
    root = temporary_root(tmp_path)
    result = run_in_root(root, secrets_script(kickstart))
    assert result.returncode == 0, result.stderr
    shadow = (root / "etc/shadow").read_text()
    assert "root:$6$rootsalt$ROOTHASHxyz:" in shadow and "ops:$6$saltsalt$HASHVALUEabc:" in shadow
    assert lab.host("iso01")["events"] == []  # nothing was fetched


def test_scripts_pass_shellcheck(lab: Lab, tmp_path: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian package shellcheck)")
    script = tmp_path / "secrets.sh"
    script.write_text("#!/bin/bash\n" + secrets_script(installer_kickstart(lab)))
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# -- ISOs ----------------------------------------------------------------------------------


def test_iso_embed_secrets_warns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("xorriso") is None:
        pytest.skip("xorriso is not installed (CI installs it)")
    from test_cli_iso import extract

    monkeypatch.setenv("PK_TEST_REG", REG)
    monkeypatch.setenv("PK_TEST_KEY", KEY)
    spec = tmp_path / "lab.yaml"
    spec.write_text(SPEC.format(port=8080))
    exe = Path(sys.executable).parent / "photonkick"

    def iso(*extra: str) -> tuple[subprocess.CompletedProcess[str], bytes]:
        out = tmp_path / "seed.iso"
        out.unlink(missing_ok=True)
        args = [str(exe), "iso", str(spec), "iso01", "--seed-only", "-o", str(out), *extra]
        result = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return result, extract(out, "/ks.json", tmp_path)

    plain, ks = iso()
    assert "embedded" not in plain.stderr
    assert_no_secret(ks.decode(), "the ISO's kickstart")
    assert b"/secrets" in ks
    embedded, ks = iso("--embed-secrets")
    assert embedded.stderr.count("secrets are embedded") == 1
    assert "(/var/log/poi/manifest.json.gz) until the host's first boot" in embedded.stderr
    lines = json.loads(ks)["postinstall"]
    (line,) = [ln for ln in lines if ln.startswith("pk_secrets=$(echo ")]
    document = parse_secrets_document(base64.b64decode(line.split()[1].strip("'")))
    assert document["hash:root"] == "$6$rootsalt$ROOTHASHxyz"
    assert b"/secrets" not in ks


def test_hostile_secrets_requests_get_an_answer_below_500(lab: Lab) -> None:
    import socket

    paths = [
        b"/ks/web01/%C3%A9%C3%A9/secrets",
        b"/ks/web01/\xc3\xa9\xff/secrets",
        b"/ks/%00/" + b"a" * 26 + b"/secrets",
        b"/ks/" + b"w" * 5000 + b"/" + b"a" * 26 + b"/secrets",
        b"/ks/web01//secrets",
        b"/cb/web01/%C3%A9/ready",
    ]
    for path in paths:
        method = b"POST" if path.startswith(b"/cb/") else b"GET"
        with socket.create_connection(("127.0.0.1", lab.port), timeout=10) as sock:
            sock.sendall(method + b" " + path + b" HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, (path[:60], answer[:200])
    assert lab.host("web01")["alarms"] == []


def test_first_boot_deletes_the_installer_manifest(lab: Lab, tmp_path: Path) -> None:
    """iso01's real first-boot script, with the installer's manifest on a tmpfs /var/log."""
    import os

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private mount namespace")
    from test_kickstart import firstboot_of, run_first_boot_script

    script = tmp_path / "firstboot"
    script.write_text("\n".join(firstboot_of(iso_kickstart(lab))) + "\n")
    done = run_first_boot_script(
        script,
        tmp_path,
        {},
        setup="mkdir /var/log/poi && echo '{}' | gzip > /var/log/poi/manifest.json.gz && ",
        after="ls -A /var/log/poi;",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # /var/log/poi is empty: the manifest is gone
    assert lab.host("iso01")["phase"] == "ready"


def test_photonkick_serve_logs_no_secret_through_a_whole_install(tmp_path: Path) -> None:
    """The real `photonkick serve` process: kickstart, secrets (twice: the alarm), callbacks
    up to ready and one after it; nothing secret in anything it printed."""
    import os
    import signal

    port = free_port()
    spec = tmp_path / "lab.yaml"
    spec.write_text(SPEC.format(port=port))
    env = {**os.environ, "PK_TEST_REG": REG, "PK_TEST_KEY": KEY}
    proc, banner, tftp_port = popen_serve(spec, port, env)
    try:
        config = subprocess.run(
            [
                "curl",
                "-sS",
                "--fail",
                f"tftp://127.0.0.1:{tftp_port}/pxelinux.cfg/01-00-50-56-00-10-01",
            ],
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
        ks = re.search(rb"ks=(http://\S+\.json)", config)
        assert ks, config
        status, body = curl(ks.group(1).decode())
        assert status == 200
        url = secrets_url(json.loads(body))
        assert curl(url)[0] == 200
        assert curl(url)[0] == 409
        assert curl(url, ELSEWHERE)[0] == 403
        base = ks.group(1).decode().replace("/ks/", "/cb/").removesuffix(".json")
        codes = [
            subprocess.run(
                [
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-X",
                    "POST",
                    f"{base}/{event}",
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout
            for event in ("installed", "firstboot", "ready", "failed")
        ]
        assert codes == ["200", "200", "200", "403"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert "ALARM secrets of web01 build 1 were already fetched by 127.0.0.1" in stderr
    assert "ALARM secrets of web01 build 1 refused to 127.0.0.2" in stderr
    printed = banner + stderr
    assert_no_secret(printed, "photonkick serve's output")
    for token in (url.split("/")[-2], base.split("/")[-1]):
        assert token not in printed

"""The boot server on loopback: real TFTP and HTTP clients through a whole install."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ports import free_port
from serve_process import curl_tftp, popen_serve

from photonkick.kickstarts.inventory import load_inventory
from photonkick.server.boot_server import BootServer, Listen
from photonkick.server.http import create_app
from photonkick.server.state_dir import StateDir

SPEC = """
server: {{url: "http://127.0.0.1:{port}", bind_kickstart_to_boot_ip: true}}
defaults:
  users: [{{name: ops, password_hash: "$6$saltsalt$HASHVALUEabc", ssh_keys: []}}]
hosts:
  - name: web01
    mac: "00:50:56:00:10:01"
    registries: [{{server: reg.example, username: bot, password: {{env: PK_TEST_REG}}}}]
    containers:
      - {{name: web, image: reg.example/web:1, env: {{API_KEY: {{env: PK_TEST_KEY}}}}}}
  - name: db01
    mac: "00:50:56:00:20:01"
"""
SECRETS = ("reg-pass-9f8e", "api-key-7d6c", "HASHVALUEabc")


class Lab:
    """A running server and helpers to talk to it like a machine would."""

    def __init__(self, root: Path, port: int, spec: str = SPEC) -> None:
        self.root = root
        self.spec = root / "lab.yaml"
        self.spec.write_text(spec.format(port=port))
        self.data = root / "releases"
        iso = self.data / "5.0" / "isolinux"
        iso.mkdir(parents=True)
        (iso / "vmlinuz").write_bytes(b"K" * 300_000)
        (iso / "initrd.img").write_bytes(bytes(range(256)) * 4096)
        rpms = self.data / "5.0" / "RPMS" / "x86_64"
        rpms.mkdir(parents=True)
        (rpms / "bash-5.2.rpm").write_bytes(b"rpm")
        (root / "outside.txt").write_text("private")
        (self.data / "5.0" / "escape").symlink_to(root / "outside.txt")
        self.port = port
        self.server: BootServer | None = None
        self.start()

    def start(self) -> None:
        state = StateDir(self.root / ".photonkick")
        self.server = BootServer(
            self.spec,
            load_inventory(self.spec),
            state,
            self.data,
            Listen("127.0.0.1", self.port, "127.0.0.1", 0),
        )
        self.server.start()
        _wait_http(f"http://127.0.0.1:{self.port}/api/v1/hosts")

    def stop(self) -> None:
        assert self.server
        self.server.stop()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def tftp(self, name: str, blksize: int = 512) -> bytes:
        assert self.server
        out = self.root / "tftp.out"
        return curl_tftp(self.server.tftp.port, name, out, "--tftp-blksize", str(blksize))

    def tftp_hpa(self, name: str) -> bytes:
        assert self.server
        out = self.root / "hpa.out"
        out.unlink(missing_ok=True)
        subprocess.run(
            [
                "tftp",
                "-m",
                "binary",
                "127.0.0.1",
                str(self.server.tftp.port),
                "-c",
                "get",
                name,
                str(out),
            ],
            check=True,
            timeout=30,
        )
        return out.read_bytes()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
        req = urllib.request.Request(self.url(path), headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as err:
            return err.code, err.read(), err.headers

    def post(self, path: str, data: bytes = b"") -> int:
        req = urllib.request.Request(self.url(path), data=data, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code

    def host(self, name: str) -> dict[str, Any]:
        status, body, _ = self.get(f"/api/v1/hosts/{name}")
        assert status == 200
        return json.loads(body)  # type: ignore[no-any-return]


def _wait_http(url: str) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} never answered")


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.setenv("PK_TEST_REG", SECRETS[0])
    monkeypatch.setenv("PK_TEST_KEY", SECRETS[1])
    lab = Lab(tmp_path, free_port())
    yield lab
    lab.stop()


def ks_url(config: bytes) -> str:
    match = re.search(rb"ks=http://127\.0\.0\.1:\d+(/ks/\S+\.json)", config)
    assert match, config
    return match.group(1).decode()


def test_whole_install_over_real_tftp_and_http(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = lab.tftp("pxelinux.cfg/01-00-50-56-00-10-01", blksize=1468)
    assert config.startswith(b"# photonkick: install Photon OS 5.0 on web01")
    assert lab.tftp_hpa("pxelinux.cfg/01-00-50-56-00-10-01") == config
    assert lab.tftp("lpxelinux.0") == Path("/usr/lib/PXELINUX/lpxelinux.0").read_bytes()

    status, kernel, headers = lab.get("/releases/5.0/isolinux/vmlinuz")
    assert status == 200 and len(kernel) == 300_000 and headers["Content-Length"] == "300000"
    status, part, headers = lab.get("/releases/5.0/isolinux/initrd.img", {"Range": "bytes=256-511"})
    assert status == 206 and part == bytes(range(256))
    assert headers["Content-Range"] == "bytes 256-511/1048576"
    lab.get("/releases/5.0/isolinux/initrd.img")

    path = ks_url(config)
    status, body, headers = lab.get(path)
    assert status == 200 and headers["Content-Type"] == "application/json"
    kickstart = json.loads(body)
    assert kickstart["hostname"] == "web01"
    assert lab.get("/releases/5.0/RPMS/x86_64/bash-5.2.rpm")[0] == 200

    base = path.replace("/ks/", "/cb/").removesuffix(".json")
    assert f'"http://127.0.0.1:{lab.port}{base}/$1"' in "\n".join(kickstart["postinstall"])
    assert lab.post(f"{base}/installed") == 200

    # Netboot-once: the same machine now gets local boot on every loader.
    again = lab.tftp("pxelinux.cfg/01-00-50-56-00-10-01")
    assert b"LOCALBOOT 0" in again and b"ks=" not in again
    assert b"exit" in lab.tftp("grub/grub.cfg-01-00-50-56-00-10-01")
    assert lab.get("/ipxe/00-50-56-00-10-01.ipxe")[1].endswith(b"exit 1\n")
    # ...and its kickstart token has expired.
    assert lab.get(path)[0] == 404

    assert lab.post(f"{base}/firstboot") == 200
    assert lab.post(f"{base}/ready") == 200
    host = lab.host("web01")
    assert host["phase"] == "ready" and host["failed"] is None
    kinds = [e["kind"] for e in host["events"]]
    assert kinds == [
        "config",
        "config",
        "kernel",
        "initrd",
        "initrd",
        "kickstart",
        "repo",
        "installed",
        "local_boot",
        "local_boot",
        "local_boot",
        "firstboot",
        "ready",
    ]
    phases = host["phases"]
    order = [
        "config",
        "kernel",
        "initrd",
        "kickstart",
        "repo",
        "installed",
        "local_boot",
        "firstboot",
        "ready",
    ]
    assert set(phases) == set(order)
    assert [phases[k] for k in order] == sorted(phases[k] for k in order)
    assert host["time_to_ready"] == phases["ready"] > 0

    dashboard = lab.get("/")[1].decode()
    assert 'id="host-web01"' in dashboard and "1 of 2 hosts ready" in dashboard
    metrics = lab.get("/metrics")[1].decode()
    assert 'photonkick_host_phase{host="web01",phase="ready"} 1' in metrics
    assert "photonkick_hosts_ready 1" in metrics

    text = caplog.text + (lab.root / ".photonkick" / "timeline.db").read_bytes().decode("latin-1")
    token = path.split("/")[-1].removesuffix(".json")
    for secret in (*SECRETS, token):
        assert secret not in text, f"{secret!r} leaked into logs or the timeline"


def test_unknown_wrong_and_old_tokens_look_alike(lab: Lab) -> None:
    config = lab.tftp("pxelinux.cfg/01-00-50-56-00-10-01")
    path = ks_url(config)
    good = lab.get(path)
    assert good[0] == 200
    token = path.split("/")[-1].removesuffix(".json")
    wrong = lab.get(path.replace(token, "a" * len(token)))
    unknown = lab.get(f"/ks/nohost/{token}.json")
    assert wrong[0] == unknown[0] == 404 and wrong[1] == unknown[1]
    assert lab.post(f"/cb/web01/{'a' * 26}/ready") == 404
    assert lab.post(path.replace("/ks/", "/cb/").removesuffix(".json") + "/rebooted") == 404
    # A rebuild (new build number) retires the old token.
    assert lab.server is not None
    lab.server.service.state.next_build("web01")
    assert lab.get(path)[0] == 404


def test_served_grub_asks_this_server_for_its_configs(lab: Lab) -> None:
    # Beside a proxy DHCP the firmware's DHCP answer names another server; GRUB must not
    # take its TFTP server from there.
    grub = lab.tftp("grubx64.efi")
    assert grub[:2] == b"MZ" and b"(tftp,127.0.0.1)/grub" in grub
    assert b"(tftp)/grub" not in grub


def test_unknown_mac_boots_locally(lab: Lab) -> None:
    with pytest.raises(subprocess.CalledProcessError):
        lab.tftp("pxelinux.cfg/01-00-50-56-aa-bb-cc")
    assert b"LOCALBOOT 0" in lab.tftp("pxelinux.cfg/default")
    assert lab.get("/ipxe/00-50-56-aa-bb-cc.ipxe")[0] == 404
    assert b"${mac:hexhyp}" in lab.get("/ipxe/boot.ipxe")[1]


def test_paths_stay_inside_the_tree(lab: Lab) -> None:
    assert lab.server is not None
    port = lab.server.tftp.port
    for path in (
        "/releases/5.0/escape",
        "/releases/5.0/../../outside.txt",
        "/releases/5.0/%2e%2e/%2e%2e/outside.txt",
        "/releases/..%2f..%2foutside.txt",
    ):
        result = subprocess.run(
            ["curl", "-s", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", lab.url(path)],
            capture_output=True,
            text=True,
        )
        assert result.stdout == "404", path
    assert lab.get("/ks/../kickstarts/web01.json")[0] == 404
    for name in (
        "releases/5.0/escape",
        "../outside.txt",
        "releases/../../outside.txt",
        "kickstarts/web01.json",
        "/etc/passwd",
    ):
        result = subprocess.run(
            ["curl", "-s", f"tftp://127.0.0.1:{port}/{name}"], capture_output=True
        )
        assert result.returncode != 0 and b"private" not in result.stdout, name


def test_restart_keeps_timelines_and_netboot_once(lab: Lab) -> None:
    path = ks_url(lab.tftp("pxelinux.cfg/01-00-50-56-00-20-01"))
    base = path.replace("/ks/", "/cb/").removesuffix(".json")
    assert lab.post(f"{base}/installed") == 200
    lab.stop()
    lab.start()
    assert b"LOCALBOOT 0" in lab.tftp("pxelinux.cfg/01-00-50-56-00-20-01")
    kinds = [e["kind"] for e in lab.host("db01")["events"]]
    assert kinds == ["config", "installed", "local_boot"]
    assert lab.post(f"{base}/ready") == 200
    assert lab.host("db01")["time_to_ready"] is not None


def test_rearm_needs_admin_from_afar(lab: Lab) -> None:
    assert lab.server is not None
    path = ks_url(lab.tftp("pxelinux.cfg/01-00-50-56-00-20-01"))
    assert lab.post(path.replace("/ks/", "/cb/").removesuffix(".json") + "/installed") == 200
    client = create_app(lab.server.service, lab.server.admin_token).test_client()
    far = {"REMOTE_ADDR": "192.0.2.50"}
    assert client.post("/api/v1/hosts/db01/rearm", environ_base=far).status_code == 403
    bad = {"Authorization": "Bearer nope"}
    assert client.post("/api/v1/hosts/db01/rearm", environ_base=far, headers=bad).status_code == 403
    good = {"Authorization": f"Bearer {lab.server.admin_token}"}
    assert (
        client.post("/api/v1/hosts/nohost/rearm", environ_base=far, headers=good).status_code == 404
    )
    assert (
        client.post("/api/v1/hosts/db01/rearm", environ_base=far, headers=good).status_code == 200
    )
    assert lab.post("/api/v1/hosts/db01/rearm") == 200  # loopback needs no token
    assert b"DEFAULT install" in lab.tftp("pxelinux.cfg/01-00-50-56-00-20-01")
    assert lab.get(path)[0] == 200
    admin_file = lab.root / ".photonkick" / "admin-token"
    assert admin_file.stat().st_mode & 0o777 == 0o600


def test_kickstart_bound_to_the_boot_ip(lab: Lab) -> None:
    assert lab.server is not None
    path = ks_url(lab.tftp("pxelinux.cfg/01-00-50-56-00-10-01"))
    client = create_app(lab.server.service, lab.server.admin_token).test_client()
    far = {"REMOTE_ADDR": "192.0.2.77"}
    assert client.get(path, environ_base=far).status_code == 404
    # Fetching the boot config from elsewhere later does not move the binding.
    assert client.get("/ipxe/00-50-56-00-10-01.ipxe", environ_base=far).status_code == 200
    assert client.get(path, environ_base=far).status_code == 404
    assert client.get(path, environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200


def test_failed_callback_shows_reason_and_caps_the_log(lab: Lab) -> None:
    path = ks_url(lab.tftp("pxelinux.cfg/01-00-50-56-00-10-01"))
    base = path.replace("/ks/", "/cb/").removesuffix(".json")
    body = urllib.parse.urlencode(
        {"reason": "cannot pull reg.example/web:1", "log": "x" * 300_000 + "END"}
    ).encode()
    assert lab.post(f"{base}/failed", body) == 413  # over the request size cap
    body = urllib.parse.urlencode(
        {"reason": "cannot pull reg.example/web:1", "log": "x" * 70_000 + "END"}
    ).encode()
    assert lab.post(f"{base}/failed", body) == 200
    host = lab.host("web01")
    assert host["failed"] == "cannot pull reg.example/web:1"
    detail = host["events"][-1]["detail"]
    assert detail.endswith("END") and len(detail) < 70_000
    page = lab.get("/")[1].decode()
    assert 'class="failed" id="host-web01"' in page and "cannot pull reg.example/web:1" in page


def test_dashboard_escapes_what_hosts_report(lab: Lab) -> None:
    path = ks_url(lab.tftp("pxelinux.cfg/01-00-50-56-00-10-01"))
    base = path.replace("/ks/", "/cb/").removesuffix(".json")
    hostile = "<script>alert(\"x\")</script> & 'q' <b>"
    assert lab.post(f"{base}/failed", urllib.parse.urlencode({"reason": hostile}).encode()) == 200
    page = lab.get("/")[1].decode()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#39;q&#39; &lt;b&gt;" in page
    assert "<script>" not in page and "<b>" not in page
    assert "&amp;lt;" not in page  # escaped once, not twice


def test_broken_spec_keeps_the_last_good_one(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    assert lab.server is not None
    lab.spec.write_text(lab.spec.read_text() + "  - {name: web01, mac: nope}\n")
    assert lab.server.reload() is False
    assert "spec not reloaded" in caplog.text and "lab.yaml:" in caplog.text
    assert b"DEFAULT install" in lab.tftp("pxelinux.cfg/01-00-50-56-00-10-01")
    good = "".join(lab.spec.read_text().splitlines(keepends=True)[:-1])
    lab.spec.write_text(good.replace("db01", "db02"))
    assert lab.server.reload() is True
    assert lab.get("/api/v1/hosts/db02")[0] == 200


def test_serve_command_end_to_end(tmp_path: Path) -> None:
    """The real `photonkick serve` process: URLs printed, SIGHUP and file-change reloads,
    clean stop on SIGTERM, and no secret in anything it logged."""
    import os
    import signal

    port = free_port()
    spec = tmp_path / "lab.yaml"
    spec.write_text(SPEC.format(port=port))
    env = {**os.environ, "PK_TEST_REG": SECRETS[0], "PK_TEST_KEY": SECRETS[1]}
    proc, banner, tftp_port = popen_serve(spec, port, env)
    try:
        assert f"dashboard  http://127.0.0.1:{port}/" in banner
        out = tmp_path / "cfg"
        subprocess.run(
            [
                "tftp",
                "-m",
                "binary",
                "127.0.0.1",
                str(tftp_port),
                "-c",
                "get",
                "pxelinux.cfg/01-00-50-56-00-10-01",
                str(out),
            ],
            check=True,
            timeout=20,
        )
        path = ks_url(out.read_bytes())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            assert json.loads(resp.read())["hostname"] == "web01"
        base = path.replace("/ks/", "/cb/").removesuffix(".json")
        for event in ("installed", "firstboot", "ready"):
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}{base}/{event}", data=b"", method="POST"
            )
            urllib.request.urlopen(req, timeout=5).close()
        # A broken spec on SIGHUP keeps serving; fixing the file reloads it by itself.
        good = spec.read_text()
        spec.write_text(good + "  - {name: bad, mac: nope}\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        spec.write_text(good.replace("db01", "db09"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/v1/hosts/db09", timeout=2
                ).close()
                break
            except urllib.error.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("the changed spec was never loaded")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert "spec not reloaded" in stderr and "hosts[2].mac" in stderr
    assert "changed; reloading" in stderr
    token = path.split("/")[-1].removesuffix(".json")
    for secret in (*SECRETS, token):
        assert secret not in stderr and secret not in banner, secret


def test_rebuild_kickstart_carries_the_new_token(lab: Lab) -> None:
    assert lab.server is not None
    lab.server.service.state.next_build("db01")
    path = ks_url(lab.tftp("pxelinux.cfg/01-00-50-56-00-20-01"))
    status, body, _ = lab.get(path)
    assert status == 200
    token = path.split("/")[-1].removesuffix(".json")
    assert f"/cb/db01/{token}/$1" in "\n".join(json.loads(body)["postinstall"])
    assert lab.post(f"/cb/db01/{token}/installed") == 200
    assert lab.host("db01")["build"] == 2


def test_failure_before_install_stops_network_installs(lab: Lab) -> None:
    path = ks_url(lab.tftp("pxelinux.cfg/01-00-50-56-00-20-01"))
    base = path.replace("/ks/", "/cb/").removesuffix(".json")
    assert lab.post(f"{base}/failed", b"reason=postinstall+failed+at+line+9+(useradd)") == 200
    # The installer reboots at once; the host must not reinstall in a loop.
    assert b"LOCALBOOT 0" in lab.tftp("pxelinux.cfg/01-00-50-56-00-20-01")
    assert lab.host("db01")["failed"] == "postinstall failed at line 9 (useradd)"
    assert lab.post("/api/v1/hosts/db01/rearm") == 200
    assert b"DEFAULT install" in lab.tftp("pxelinux.cfg/01-00-50-56-00-20-01")


def test_tftp_moves_to_a_free_port_when_69_is_taken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        blocker.bind(("127.0.0.1", 69))
    except OSError:
        pass  # not root: port 69 cannot be bound by photonkick either, which is the same case
    port = free_port()
    spec = tmp_path / "lab.yaml"
    spec.write_text(f'server: {{url: "http://127.0.0.1:{port}"}}\nhosts: []\n')
    server = BootServer(
        spec,
        load_inventory(spec),
        StateDir(tmp_path / "state"),
        tmp_path,
        Listen("127.0.0.1", port, "127.0.0.1", 69),
    )
    try:
        assert server.tftp.port not in (0, 69)
        assert f"TFTP is on port {server.tftp.port} instead" in caplog.text
    finally:
        server.stop()
        blocker.close()

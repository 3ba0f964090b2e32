"""Kickstarts of the example spec: exact goldens, and the real installer's rules."""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import subprocess
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE, FIXED_SECRET
from kickstart_cases import cases

from photonkick.kickstarts.host_secrets import parse_secrets_document, secret_items, secrets_token
from photonkick.kickstarts.installer import INSTALLER_VERSIONS, KNOWN_KEYS
from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.kickstart import BuildInfo, build_kickstart, dumps, kernel_flavor_of
from photonkick.kickstarts.secrets import REDACTED
from photonkick.kickstarts.spec import DEFAULT_PACKAGES, Inventory
from photonkick.kickstarts.tokens import host_token

BUILD = BuildInfo(1, FIXED_SECRET)
HOSTS = ("web01", "web02", "db01", "dev01")


@pytest.fixture(scope="module")
def example() -> Inventory:
    return load_inventory(EXAMPLE, {})


def kickstart(inv: Inventory, name: str, **kw: Any) -> dict[str, Any]:
    return build_kickstart(inv.host(name), inv, BUILD, **kw)


def strict_json(text: str) -> Any:
    def reject(value: str) -> None:
        raise ValueError(f"not strict JSON: {value}")

    return json.loads(text, parse_constant=reject)


@pytest.mark.parametrize("name", HOSTS)
def test_golden_kickstart(
    example: Inventory, name: str, golden: Callable[[str, str], None]
) -> None:
    golden(f"example/{name}.json", dumps(kickstart(example, name)))


@pytest.mark.parametrize("installer", INSTALLER_VERSIONS)
@pytest.mark.parametrize("name", HOSTS)
def test_only_keys_the_installer_knows(example: Inventory, name: str, installer: str) -> None:
    inv = Inventory(
        example.source, example.photon.__class__("5.0", installer), example.server, example.hosts
    )
    ks = strict_json(dumps(kickstart(inv, name)))
    assert set(ks) <= KNOWN_KEYS[installer]
    # Installer 2.3 needs linux_flavor whenever packages name more than one kernel.
    assert ks["linux_flavor"] == "linux-esx"
    # 2.7 and later refuse 'disk' next to 'disks' and log that 'disk' will be deprecated.
    if installer == "2.3":
        assert ks["disk"] == "/dev/sda" and "disks" not in ks
    else:
        assert ks["disks"] == {"default": {"device": "/dev/sda"}} and "disk" not in ks


@pytest.mark.parametrize("name", HOSTS)
def test_root_stays_locked_and_off_ssh(example: Inventory, name: str) -> None:
    ks = kickstart(example, name)
    assert "public_key" not in ks
    assert "password" not in ks  # the installer then writes '*' for root
    lines = ks["postinstall"]
    assert "passwd -l root >/dev/null" in lines
    assert any("PermitRootLogin no/' /etc/ssh/sshd_config" in ln for ln in lines)


def test_root_login_when_allowed(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server: {url: https://pk.example, boot_url: "http://192.0.2.1:8080"}
        hosts:
          - name: lab
            mac: "00:50:56:00:00:09"
            root: {allow_login: true, password_hash: "$6$abc$def"}
        """
    )
    inv = load_inventory(spec, {})
    ks = build_kickstart(inv.hosts[0], inv, BUILD)
    # Not in the installer's `password` key (its `$` substitution logs the hash), nor anywhere
    # else in the kickstart: the postinstall fetches it and sets it with chpasswd -e.
    assert "password" not in ks and "$6$abc$def" not in dumps(ks)
    assert "usermod -p '*' root" in ks["postinstall"]
    assert """printf '%s:%s\\n' root "$(pk_secret hash:root)" | chpasswd -e""" in ks["postinstall"]
    assert "passwd -l root >/dev/null" not in ks["postinstall"]
    embedded = build_kickstart(inv.hosts[0], inv, BUILD, embed_secrets=True)
    assert "password" not in embedded
    assert embedded_secrets(embedded) == {"hash:root": "$6$abc$def"}


def embedded_secrets(ks: dict[str, Any]) -> dict[str, str]:
    """The secrets document an embedded kickstart carries, by key."""
    (line,) = [ln for ln in ks["postinstall"] if ln.startswith("pk_secrets=$(echo ")]
    encoded = line.split()[1].strip("'")
    return parse_secrets_document(base64.b64decode(encoded))


@pytest.mark.parametrize("name", HOSTS)
def test_no_line_starts_with_a_dollar(example: Inventory, name: str) -> None:
    # The installer replaces any string that starts with '$' by an environment variable.
    assert not [ln for ln in kickstart(example, name)["postinstall"] if ln.startswith("$")]


@pytest.mark.parametrize("name", HOSTS)
def test_scripts_are_valid_bash(example: Inventory, name: str, tmp_path: Path) -> None:
    lines = kickstart(example, name)["postinstall"]
    script = tmp_path / "postinstall.sh"
    script.write_text("\n".join(lines) + "\n")
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    start = lines.index("cat > /usr/local/libexec/photonkick/firstboot <<'PK_END_OF_FILE'")
    end = lines.index("PK_END_OF_FILE", start)
    firstboot = tmp_path / "firstboot.sh"
    firstboot.write_text("\n".join(lines[start + 1 : end]) + "\n")
    result = subprocess.run(["bash", "-n", str(firstboot)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_users_keys_sudo_and_docker(example: Inventory) -> None:
    lines = kickstart(example, "dev01")["postinstall"]
    assert "id -u dev >/dev/null 2>&1 || useradd -m -U -s /bin/bash dev" in lines
    assert "usermod -aG docker dev" in lines
    assert "install -d -m 0700 -o dev -g dev /home/dev/.ssh" in lines
    keys_at = lines.index("cat > /home/dev/.ssh/authorized_keys <<'PK_END_OF_KEYS'")
    assert lines[keys_at + 1].startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO8mDpqj")
    assert lines[keys_at + 2] == "PK_END_OF_KEYS"
    assert "chmod 0600 /home/dev/.ssh/authorized_keys" in lines
    # dev has a password, so sudo asks for it; ops (keys only) gets NOPASSWD.
    assert "echo 'dev ALL=(ALL) ALL' > /etc/sudoers.d/dev" in lines
    assert (
        "echo 'ops ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/ops"
        in kickstart(example, "web01")["postinstall"]
    )
    assert "systemctl enable docker.service" in lines
    assert "systemctl enable photonkick-firstboot.service" in lines


def test_callbacks_carry_the_host_token(example: Inventory) -> None:
    lines = kickstart(example, "web01")["postinstall"]
    token = host_token(FIXED_SECRET, "web01", 1)
    base = f"http://192.0.2.1:8080/cb/web01/{token}"
    assert sum(base + '/$1"' in ln for ln in lines) == 2  # postinstall and first boot
    assert lines[-1] == "pk_report installed"
    assert 'pk_report ready || pk_fail "ready callback failed"' in lines
    other = kickstart(example, "web02")["postinstall"]
    assert not any(token in ln for ln in other)


def test_containers_become_systemd_units(example: Inventory) -> None:
    lines = kickstart(example, "web01")["postinstall"]
    assert (
        "ExecStart=/usr/bin/docker run --rm --name web -p 80:80 "
        "-v /srv/www:/usr/share/nginx/html:ro nginx:1.27" in lines
    )
    assert "Restart=always" in lines
    assert "pk_retry docker pull nginx:1.27 || pk_fail 'cannot pull nginx:1.27'" in lines
    assert "mkdir -p /srv/www" in lines
    assert (
        "systemctl enable --now photonkick-container-web.service || "
        "pk_fail 'cannot start photonkick-container-web.service'" in lines
    )


def test_static_network_uses_the_installer_v2_form(example: Inventory) -> None:
    assert kickstart(example, "db01")["network"] == {
        "version": "2",
        "ethernets": {
            "nic0": {
                "match": {"macaddress": "00:50:56:00:20:01"},
                "dhcp4": False,
                "addresses": ["192.0.2.21/24"],
                "gateway": "192.0.2.1",
                "nameservers": {"addresses": ["192.0.2.1"], "search": ["lab.example"]},
            }
        },
    }
    assert kickstart(example, "web01")["network"] == {"type": "dhcp"}


def test_firmware_sets_bootmode(example: Inventory) -> None:
    assert kickstart(example, "web01")["bootmode"] == "efi"
    assert kickstart(example, "dev01")["bootmode"] == "bios"


def test_secrets_stay_in_their_own_host(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server: {url: https://pk.example, boot_url: "http://192.0.2.1:8080"}
        hosts:
          - name: a
            mac: "00:50:56:00:00:01"
            registries: [{server: reg.example, username: bot, password: {env: REG}}]
            containers:
              - {name: app, image: reg.example/app, env: {TOKEN: {env: APP_TOKEN}, MODE: prod}}
          - name: b
            mac: "00:50:56:00:00:02"
        """
    )
    inv = load_inventory(spec, {"REG": "reg-s3cret", "APP_TOKEN": "app-s3cret"})
    served = dumps(build_kickstart(inv.host("a"), inv, BUILD))
    b = dumps(build_kickstart(inv.host("b"), inv, BUILD))
    shown = dumps(build_kickstart(inv.host("a"), inv, BUILD, redact=True))
    embedded = build_kickstart(inv.host("a"), inv, BUILD, embed_secrets=True)
    assert embedded_secrets(embedded) == {
        "file:/etc/photonkick/registry-1.password": "reg-s3cret\n",
        "file:/etc/photonkick/containers/app.env": "TOKEN=app-s3cret\nMODE=prod\n",
    }
    for text in (served, b, shown):
        assert "s3cret" not in text and "czNjcmV0" not in text
    assert secrets_token(FIXED_SECRET, "a", 1) in served
    for token in (host_token(FIXED_SECRET, "a", 1), secrets_token(FIXED_SECRET, "a", 1)):
        assert token not in shown
    assert REDACTED in shown
    assert (
        "a" in {h.name for h in inv.hosts} and str(inv.host("a").registries[0].password) == REDACTED
    )


def test_plain_password_is_hashed_once_per_user(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server: {url: https://pk.example, boot_url: "http://192.0.2.1:8080"}
        defaults:
          users: [{name: ops, password: {env: OPS_PW}}]
        hosts:
          - {name: a, mac: "00:50:56:00:00:01"}
          - {name: b, mac: "00:50:56:00:00:02"}
        """
    )
    inv = load_inventory(spec, {"OPS_PW": "correct horse"})
    hashes = set()
    for host in inv.hosts:
        assert "$6$" not in dumps(build_kickstart(host, inv, BUILD))
        (item,) = secret_items(host, BUILD.secret)
        assert item.key == "hash:ops" and item.value.startswith("$6$rounds=656000$")
        hashes.add(item.value)
    assert len(hashes) == 1
    from passlib.hash import sha512_crypt

    (crypted,) = hashes
    assert sha512_crypt.verify("correct horse", crypted)


def test_user_templates_override_the_bundled_ones(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server: {url: https://pk.example, boot_url: "http://192.0.2.1:8080"}
        templates: my-templates
        hosts: [{name: a, mac: "00:50:56:00:00:01"}]
        """
    )
    custom = spec.parent / "my-templates" / "kickstart"
    custom.mkdir(parents=True)
    (custom / "postinstall.sh.j2").write_text("echo custom {{ host.name }}\n")
    inv = load_inventory(spec, {})
    assert build_kickstart(inv.hosts[0], inv, BUILD)["postinstall"] == ["echo custom a"]


def test_packages_the_scripts_need_are_added(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server: {url: https://pk.example, boot_url: "http://192.0.2.1:8080"}
        hosts:
          - name: a
            mac: "00:50:56:00:00:01"
            packages: [minimal, linux-esx, vim]
            users: [{name: ops, sudo: true}]
            containers: [{name: web, image: nginx}]
          - name: b
            mac: "00:50:56:00:00:02"
            packages: [minimal, "curl=8.0"]
        """
    )
    inv = load_inventory(spec, {})
    assert build_kickstart(inv.host("a"), inv, BUILD)["packages"] == [
        "minimal",
        "linux-esx",
        "vim",
        "curl",
        "docker",
        "sudo",
    ]
    assert build_kickstart(inv.host("b"), inv, BUILD)["packages"] == [
        "minimal",
        "curl=8.0",
        "linux-esx",
    ]


@pytest.mark.parametrize("flavor", ["linux", "linux-esx", "linux-secure", "linux-rt", "linux-aws"])
def test_the_chosen_kernel_is_the_only_one_listed(
    write_spec: Callable[[str], Path], flavor: str
) -> None:
    # Installer 2.3 never adds linux_flavor itself and drops every other flavor's packages.
    spec = write_spec(
        f"""
        photon: {{installer: "2.3"}}
        server: {{url: https://pk.example, boot_url: "http://192.0.2.1:8080"}}
        hosts:
          - name: default-list
            mac: "00:50:56:00:00:01"
            linux_flavor: {flavor}
          - name: own-list
            mac: "00:50:56:00:00:02"
            linux_flavor: {flavor}
            packages: [minimal, linux-esx, linux-esx-devel, linux-devel, linux-firmware, vim]
        """
    )
    inv = load_inventory(spec, {})
    for host in inv.hosts:
        ks = build_kickstart(host, inv, BUILD)
        kernels = [p for p in ks["packages"] if kernel_flavor_of(p) is not None]
        assert flavor in kernels and ks["linux_flavor"] == flavor
        assert {kernel_flavor_of(p) for p in kernels} == {flavor}
    default = build_kickstart(inv.host("default-list"), inv, BUILD)["packages"]
    assert set(DEFAULT_PACKAGES) - {"linux-esx"} <= set(default)
    own = build_kickstart(inv.host("own-list"), inv, BUILD)["packages"]
    assert "linux-firmware" in own and "vim" in own  # not kernel flavors: kept
    assert ("linux-esx-devel" in own) == (flavor == "linux-esx")
    assert ("linux-devel" in own) == (flavor == "linux")


def test_raw_disks_join_the_default_disk(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        photon: {installer: "2.9"}
        server: {url: https://pk.example, boot_url: "http://192.0.2.1:8080"}
        hosts:
          - name: a
            mac: "00:50:56:00:00:01"
            disk: /dev/nvme0n1
            kickstart:
              disks: {data: {device: /dev/sdb}}
              partitions:
                - {mountpoint: /, size: 0}
                - {mountpoint: /data, size: 0, disk_id: data}
        """
    )
    inv = load_inventory(spec, {})
    ks = build_kickstart(inv.hosts[0], inv, BUILD)
    assert ks["disks"] == {"default": {"device": "/dev/nvme0n1"}, "data": {"device": "/dev/sdb"}}
    assert "disk" not in ks


def firstboot_of(ks: dict[str, Any]) -> list[str]:
    """The first-boot script the postinstall writes, as lines."""
    lines: list[str] = ks["postinstall"]
    start = lines.index("cat > /usr/local/libexec/photonkick/firstboot <<'PK_END_OF_FILE'")
    return lines[start + 1 : lines.index("PK_END_OF_FILE", start)]


def firstboot_unit_of(ks: dict[str, Any]) -> list[str]:
    """The first-boot systemd unit the postinstall writes, as lines."""
    lines: list[str] = ks["postinstall"]
    start = lines.index("cat > /etc/systemd/system/photonkick-firstboot.service <<'PK_END_OF_FILE'")
    return lines[start + 1 : lines.index("PK_END_OF_FILE", start)]


def test_first_boot_wants_docker_and_reports_when_it_is_down(example: Inventory) -> None:
    ks = kickstart(example, "web01")
    unit = firstboot_unit_of(ks)
    assert "Wants=docker.service" in unit and not any(ln.startswith("Requires=") for ln in unit)
    script = firstboot_of(ks)
    check = next(i for i, ln in enumerate(script) if ln.startswith("pk_retry pk_docker_up"))
    assert 'pk_fail "docker.service is not running' in script[check]
    assert "systemctl status --no-pager" in script[check + 1]
    pull = next(i for i, ln in enumerate(script) if ln.startswith("pk_retry docker pull"))
    assert check < pull


def test_update_runs_tdnf_before_any_container(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server: {url: https://pk.example, boot_url: "http://192.0.2.1:8080"}
        defaults:
          containers: [{name: web, image: nginx}]
        hosts:
          - {name: a, mac: "00:50:56:00:00:01", update: true}
          - {name: b, mac: "00:50:56:00:00:02"}
        """
    )
    inv = load_inventory(spec, {})
    script = firstboot_of(build_kickstart(inv.host("a"), inv, BUILD))
    update = script.index(
        'pk_retry pk_update || pk_fail "tdnf update failed" '
        '"$(tail -c 4000 /var/log/photonkick-update.log)"'
    )
    assert "tdnf -y --refresh update" in script[update - 1]
    assert update < min(
        i for i, ln in enumerate(script) if "docker pull" in ln or "systemctl enable" in ln
    )
    assert not any("tdnf" in ln for ln in firstboot_of(build_kickstart(inv.host("b"), inv, BUILD)))


def test_failure_reason_never_carries_the_failing_line(example: Inventory) -> None:
    lines = kickstart(example, "dev01")["postinstall"]
    (trap,) = [ln for ln in lines if ln.startswith("trap ")]
    assert "${BASH_COMMAND%% *}" in trap and "${BASH_COMMAND}" not in trap


SHELL_CASES = {c.name: c.kickstart for c in cases("2.7")}


@pytest.mark.parametrize("name", sorted(SHELL_CASES))
def test_generated_scripts_pass_shellcheck(name: str, tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian package shellcheck; .ci/setup --test)")
    ks = SHELL_CASES[name]
    postinstall = tmp_path / "postinstall.sh"
    postinstall.write_text("\n".join(ks["postinstall"]) + "\n")
    firstboot = tmp_path / "firstboot.sh"
    firstboot.write_text("\n".join(firstboot_of(ks)) + "\n")
    # SC2016: crypt hashes are single-quoted on purpose, so that '$6$...' stays literal.
    result = subprocess.run(
        [shellcheck, "--shell=bash", "--exclude=SC2016", str(postinstall), str(firstboot)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


FAKE_TOOLS = {
    # Fakes for what only a booted Photon host has; curl and bash are real.
    "systemctl": """case "$1 $2" in
  "start docker.service") [ -n "${FAKE_DOCKER_DOWN:-}" ] && exit 1; exit 0 ;;
  "is-active docker.service") echo failed; exit 3 ;;
  "status --no-pager") echo "docker.service - Docker Application Container Engine"
    echo "   Active: failed (Result: start-limit-hit)"; exit 3 ;;
esac
exit 0""",
    "docker": '[ -n "${FAKE_DOCKER_DOWN:-}" ] && exit 1; exit 0',
    "tdnf": 'echo "Error(1222) : Failed to download metadata for photon-updates"; exit 1',
    "sleep": "exit 0",
}


class _Callbacks(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, list[str]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"] or 0)).decode()
        self.received.append((self.path.rsplit("/", 1)[-1], urllib.parse.parse_qs(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def run_first_boot_script(
    script: Path, tmp_path: Path, environ: dict[str, str], *, setup: str = "", after: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run a first-boot script in a private mount namespace (tmpfs /var/log and /var/lib) with
    FAKE_TOOLS first on PATH; ``setup`` and ``after`` are shell commands around it."""
    fakes = tmp_path / "fakes"
    fakes.mkdir(exist_ok=True)
    for name, body in FAKE_TOOLS.items():
        (fakes / name).write_text(f"#!/bin/bash\n{body}\n")
        (fakes / name).chmod(0o755)
    command = (
        "mount -t tmpfs tmpfs /var/log && mount -t tmpfs tmpfs /var/lib && "
        f"mkdir /var/lib/photonkick && {setup} bash {script}; code=$?; {after} exit $code"
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", command],
        env={"PATH": f"{fakes}:/usr/bin:/bin", **environ},
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_firstboot(
    write_spec: Callable[[str], Path], tmp_path: Path, host_keys: str, environ: dict[str, str]
) -> tuple[int, list[tuple[str, dict[str, list[str]]]]]:
    """Run a host's real first-boot script against a loopback callback server, with fake
    systemctl/docker/tdnf, in a private mount namespace (its /var/log and /var/lib are tmpfs)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private mount namespace")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Callbacks)
    _Callbacks.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = write_spec(
            f"""
            server: {{url: "http://127.0.0.1:{server.server_address[1]}"}}
            hosts:
              - {{name: a, mac: "00:50:56:00:00:01", {host_keys}}}
            """
        )
        inv = load_inventory(spec, {})
        script = tmp_path / "firstboot"
        script.write_text("\n".join(firstboot_of(build_kickstart(inv.hosts[0], inv, BUILD))))
        done = run_first_boot_script(script, tmp_path, environ)
    finally:
        server.shutdown()
        server.server_close()
    return done.returncode, list(_Callbacks.received)


def test_first_boot_reports_docker_down_with_its_status(
    write_spec: Callable[[str], Path], tmp_path: Path
) -> None:
    code, calls = run_firstboot(write_spec, tmp_path, "docker: true", {"FAKE_DOCKER_DOWN": "1"})
    assert code == 1
    assert [event for event, _ in calls] == ["firstboot", "failed"]
    form = calls[1][1]
    assert form["reason"] == ["docker.service is not running (failed)"]
    assert "Result: start-limit-hit" in form["log"][0]


def test_first_boot_reports_a_failed_update_with_tdnf_output(
    write_spec: Callable[[str], Path], tmp_path: Path
) -> None:
    code, calls = run_firstboot(write_spec, tmp_path, "docker: true, update: true", {})
    assert code == 1
    assert [event for event, _ in calls] == ["firstboot", "failed"]
    assert calls[1][1]["reason"] == ["tdnf update failed"]
    assert "Failed to download metadata for photon-updates" in calls[1][1]["log"][0]


def test_first_boot_reports_ready_when_docker_runs(
    write_spec: Callable[[str], Path], tmp_path: Path
) -> None:
    code, calls = run_firstboot(write_spec, tmp_path, "docker: true", {})
    assert code == 0
    assert [event for event, _ in calls] == ["firstboot", "ready"]

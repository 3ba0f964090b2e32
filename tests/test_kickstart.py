"""Kickstarts of the example spec: exact goldens, and the real installer's rules."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE, FIXED_SECRET

from photonkick.kickstarts.host_secrets import parse_secrets_document, secret_items, secrets_token
from photonkick.kickstarts.installer import INSTALLER_VERSIONS, KNOWN_KEYS
from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.kickstart import BuildInfo, build_kickstart, dumps
from photonkick.kickstarts.secrets import REDACTED
from photonkick.kickstarts.spec import Inventory
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
    assert ks["disk"] == "/dev/sda"


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
    assert build_kickstart(inv.host("b"), inv, BUILD)["packages"] == ["minimal", "curl=8.0"]


def test_failure_reason_never_carries_the_failing_line(example: Inventory) -> None:
    lines = kickstart(example, "dev01")["postinstall"]
    (trap,) = [ln for ln in lines if ln.startswith("trap ")]
    assert "${BASH_COMMAND%% *}" in trap and "${BASH_COMMAND}" not in trap

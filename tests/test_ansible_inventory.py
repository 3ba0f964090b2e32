"""`photonkick inventory`, read by Ansible itself (`ansible-inventory --list -i ...`): the
YAML and JSON static forms and the dynamic inventory script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from photonkick.server.timeline import Timeline

pytestmark = pytest.mark.skipif(
    shutil.which("ansible-inventory") is None,
    reason="ansible-inventory is not installed (Debian's ansible-core; .ci/setup --test)",
)

SPEC = """\
photon: {release: "5.0", installer: "2.7"}
server: {url: http://192.0.2.1:8080}
defaults:
  users:
    - name: ops
      sudo: true
      ssh_keys:
        - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKksNuZqJe6Z/4Yvqo6HmHvmx80Tw+5mHEAKRbDx47Ey ops
profiles:
  web-eu: {}
  db: {}
hosts:
  - {name: web01, mac: "00:50:56:00:10:01", profile: web-eu}
  - {name: web02, mac: "00:50:56:00:10:02", profile: [web-eu, db]}
  - name: db01
    mac: "00:50:56:00:20:01"
    profile: db
    network: {address: 192.0.2.21/24, gateway: 192.0.2.1}
  - {name: lone01, mac: "00:50:56:00:30:01"}
"""
PHOTONKICK = str(Path(sys.executable).parent / "photonkick")


def photonkick(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [PHOTONKICK, *args], capture_output=True, text=True, cwd=cwd, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def ansible_inventory(tmp_path: Path, *args: str) -> dict[str, Any]:
    """What Ansible makes of an inventory source; any warning or parse failure fails."""
    env = dict(os.environ, HOME=str(tmp_path), ANSIBLE_INVENTORY_UNPARSED_FAILED="true")
    env["ANSIBLE_LOCAL_TEMP"] = str(tmp_path / "ansible-tmp")
    result = subprocess.run(
        ["ansible-inventory", *args], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    spec = tmp_path / "lab.yaml"
    spec.write_text(SPEC)
    (tmp_path / ".photonkick").mkdir()
    timeline = Timeline(tmp_path / ".photonkick" / "timeline.db")
    timeline.record("web01", 1, "config", "pxelinux config", "10.0.0.5")
    timeline.record("web01", 1, "ready", "", "10.0.0.9")  # the installed system, later
    timeline.record("web02", 1, "guest_ip", "10.0.0.12")  # VMware Tools' report
    timeline.record("db01", 1, "ready", "", "10.0.0.99")  # the static address wins
    timeline.close()
    return spec


def check_as_ansible_sees_it(seen: dict[str, Any]) -> None:
    hostvars = seen["_meta"]["hostvars"]
    assert hostvars["web01"]["ansible_host"] == "10.0.0.9"
    assert hostvars["web02"]["ansible_host"] == "10.0.0.12"
    assert hostvars["db01"]["ansible_host"] == "192.0.2.21"
    assert "ansible_host" not in hostvars["lone01"]
    assert hostvars["web01"]["ansible_user"] == "ops" and hostvars["web01"]["ansible_become"]
    assert hostvars["web02"]["photonkick_mac"] == "00:50:56:00:10:02"
    assert sorted(seen["web_eu"]["hosts"]) == ["web01", "web02"]
    assert sorted(seen["db"]["hosts"]) == ["db01", "web02"]
    assert seen["ungrouped"]["hosts"] == ["lone01"]
    assert set(seen["all"]["children"]) >= {"web_eu", "db", "ungrouped"}


def test_yaml_inventory_as_read_by_ansible(lab: Path, tmp_path: Path) -> None:
    path = tmp_path / "inventory.yml"
    path.write_text(photonkick("inventory", str(lab), cwd=tmp_path))
    check_as_ansible_sees_it(ansible_inventory(tmp_path, "--list", "-i", str(path)))


def test_json_inventory_as_read_by_ansible(lab: Path, tmp_path: Path) -> None:
    path = tmp_path / "inventory.json"
    path.write_text(photonkick("inventory", str(lab), "--json", cwd=tmp_path))
    check_as_ansible_sees_it(ansible_inventory(tmp_path, "--list", "-i", str(path)))


def test_dynamic_inventory_script_as_run_by_ansible(lab: Path, tmp_path: Path) -> None:
    script = tmp_path / "photonkick-inventory"
    script.write_text(f'#!/bin/sh\nPHOTONKICK_SPEC={lab} exec {PHOTONKICK} inventory "$@"\n')
    script.chmod(0o755)
    check_as_ansible_sees_it(ansible_inventory(tmp_path, "--list", "-i", str(script)))
    one = ansible_inventory(tmp_path, "--host", "web01", "-i", str(script))
    assert one["ansible_host"] == "10.0.0.9" and one["photonkick_profiles"] == ["web-eu"]


def test_host_option_prints_one_hosts_vars_and_refuses_unknown(lab: Path, tmp_path: Path) -> None:
    out = json.loads(photonkick("inventory", str(lab), "--host", "db01", cwd=tmp_path))
    assert out["ansible_host"] == "192.0.2.21" and out["photonkick_boot"] == "pxe"
    result = subprocess.run(
        [PHOTONKICK, "inventory", str(lab), "--host", "nope"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "no host 'nope'" in result.stderr


def test_inventory_without_a_timeline_leaves_state_untouched(tmp_path: Path) -> None:
    spec = tmp_path / "lab.yaml"
    spec.write_text(SPEC)
    seen = json.loads(photonkick("inventory", str(spec), "--list", cwd=tmp_path))
    assert "ansible_host" not in seen["_meta"]["hostvars"]["web01"]
    assert not (tmp_path / ".photonkick").exists()

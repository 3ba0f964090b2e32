"""`photonkick up`, `rebuild`, `down` and `status` against the vSphere simulator."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_guest import FakeGuest, Script, spec_text
from photon_iso import build_photon_iso
from vcsim_fixture import Vcsim

from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.tokens import token_matches
from photonkick.server.cli_fleet import connect_driver as _connect
from photonkick.server.fleet import Fleet, UpOptions
from photonkick.server.report import build_report, format_report
from photonkick.server.serve import BootServer, Listen
from photonkick.server.state import StateDir
from photonkick.server.timeline import Timeline
from photonkick.server.vsphere import VmDriver

HOSTS = [
    {"name": "web01", "mac": "00:50:56:00:10:01"},
    {"name": "web02", "mac": "00:50:56:00:10:02", "firmware": "bios"},
    {"name": "gi01", "mac": "00:50:56:00:10:03", "boot": "guestinfo"},
    {"name": "iso01", "mac": "00:50:56:00:10:04", "boot": "iso"},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Setup:
    """A spec for the simulator, its state, a running boot server and a driver."""

    def __init__(self, root: Path, sim: Vcsim, hosts: list[dict[str, str]]) -> None:
        self.root = root
        self.sim = sim
        ca = root / "sim.pem"
        ca.write_text(sim.cert_pem)
        iso = root / "photon.iso"
        build_photon_iso(iso)
        self.http_port = free_port()
        self.spec = root / "lab.yaml"
        self.spec.write_text(spec_text(sim, self.http_port, hosts, ca, iso))
        self.inventory = load_inventory(self.spec)
        self.state = StateDir(root / ".photonkick")
        self.server = BootServer(
            self.spec,
            self.inventory,
            self.state,
            root / "releases",
            Listen("127.0.0.1", self.http_port, "127.0.0.1", 0),
        )
        self.server.start()
        self.timeline: Timeline = self.server.timeline
        self.driver: VmDriver = _connect(self.inventory, self.state)

    def fleet(self) -> Fleet:
        return Fleet(self.inventory, self.state, self.timeline, self.driver)

    def guest(self, script: Script | None = None) -> FakeGuest:
        return FakeGuest(
            self.inventory, self.state, self.timeline, self.sim, self.server.tftp.port, script
        )

    def close(self) -> None:
        self.driver.close()  # type: ignore[attr-defined]
        self.server.stop()


@pytest.fixture
def setup(tmp_path: Path, vcsim: Vcsim) -> Iterator[Setup]:
    s = Setup(tmp_path, vcsim, HOSTS)
    yield s
    s.close()


def vm_config(setup: Setup, name: str) -> Any:
    driver: Any = setup.driver
    handle = driver.find(name)
    assert handle is not None
    return driver._vm(handle).config


def test_up_brings_every_boot_method_to_ready(setup: Setup) -> None:
    with setup.guest() as guest:
        runs = setup.fleet().up([], UpOptions(parallel=4, timeout=60))
    assert guest.errors == []
    assert {r.name: (r.outcome, r.detail) for r in runs} == {
        h["name"]: ("ready", "") for h in HOSTS
    }
    report = build_report(runs, setup.timeline)
    for host in report["hosts"]:
        assert host["time_to_ready"] is not None and host["time_to_ready"] > 0
        assert set(host["phases"]) >= {"vm_created", "installed", "firstboot", "ready"}
    pxe = next(h for h in report["hosts"] if h["name"] == "web01")
    assert set(pxe["phases"]) >= {"config", "kickstart"}
    assert report["fleet"]["ready"] == 4 and report["fleet"]["p95"] >= report["fleet"]["p50"]
    text = format_report(report)
    assert "4/4 ready;" in text and "web01" in text
    for name in ("web01", "gi01", "iso01"):
        config = vm_config(setup, name)
        # After `installed`: disk only, the ISO out, the guestinfo kickstart gone.
        assert [type(d).__name__ for d in config.bootOptions.bootOrder] == [
            "vim.vm.BootOptions.BootableDiskDevice"
        ]
    gi = {o.key: o.value for o in vm_config(setup, "gi01").extraConfig}
    assert gi.get("guestinfo.kickstart.data", "") == ""
    assert vm_config(setup, "web02").firmware == "bios"
    kinds = [e.kind for e in setup.timeline.events("web01")]
    assert kinds[:2] == ["vm_created", "vm_powered_on"] and "guest_ip" in kinds


def test_stolen_secrets_fail_the_host_with_an_alarm(setup: Setup) -> None:
    setup.spec.write_text(
        setup.spec.read_text()
        + 'defaults:\n  users: [{name: ops, password_hash: "$6$salt$HASHxyz"}]\n'
    )
    assert setup.server.reload()
    setup.inventory = load_inventory(setup.spec)
    with setup.guest(Script(per_host={"gi01": "stolen"})) as guest:
        runs = setup.fleet().up(["web01", "gi01"], UpOptions(timeout=30))
    assert guest.errors == []
    outcome = {r.name: (r.outcome, r.detail) for r in runs}
    assert outcome["web01"] == ("ready", "")
    assert outcome["gi01"][0] == "failed"
    assert outcome["gi01"][1].startswith("secrets refused (HTTP 409): secrets of gi01 build")
    report = build_report(runs, setup.timeline)
    text = format_report(report)
    assert "gi01: ALARM: secrets of gi01 build" in text and "refused to 127.0.0.1" in text
    assert "web01: ALARM" not in text
    assert [h["alarms"] for h in report["hosts"] if h["name"] == "web01"] == [[]]
    status = run_cli("status", str(setup.spec), "--offline", cwd=setup.root)
    assert status.returncode == 0, status.stderr
    assert "gi01                 ALARM: secrets of gi01 build" in status.stdout


def test_failed_and_silent_hosts(setup: Setup) -> None:
    script = Script(per_host={"web01": "fail", "web02": "silent"})
    with setup.guest(script):
        runs = setup.fleet().up(["web01", "web02"], UpOptions(timeout=4))
    outcome = {r.name: (r.outcome, r.detail) for r in runs}
    assert outcome["web01"] == ("failed", "cannot pull nginx:1.27")
    assert outcome["web02"][0] == "timeout"
    report = build_report(runs, setup.timeline)
    assert report["fleet"] == {
        "hosts": 2,
        "ready": 0,
        "failed": 1,
        "outcomes": {"failed": 1, "timeout": 1},
        "p50": None,
        "p95": None,
        "max": None,
    }
    assert "0/2 ready (1 failed, 1 timeout)" in format_report(report)
    # Running up again does not count the failed host's VM as a success.
    again = setup.fleet().up(["web01"], UpOptions(timeout=4))
    assert (again[0].outcome, again[0].phase) == ("exists", "failed")
    assert again[0].detail == "the VM exists (build 1: failed); --rebuild replaces it"


def test_up_is_idempotent_and_rebuild_replaces(setup: Setup) -> None:
    with setup.guest():
        first = setup.fleet().up(["web01"], UpOptions(timeout=60))
        assert first[0].outcome == "ready" and first[0].build == 1
        old_ref = setup.driver.find("web01")
        again = setup.fleet().up(["web01"], UpOptions(timeout=60))
        assert again[0].outcome == "exists"
        assert setup.driver.find("web01") == old_ref
        rebuilt = setup.fleet().up(["web01"], UpOptions(timeout=60, rebuild=True))
    assert rebuilt[0].outcome == "ready" and rebuilt[0].build == 2
    assert setup.driver.find("web01") != old_ref
    old_token = setup.state.build("web01")
    assert not token_matches(
        setup.state.secret, "web01", 2, old_token.__class__(1, setup.state.secret).token("web01")
    )
    nic = [d for d in vm_config(setup, "web01").hardware.device if hasattr(d, "macAddress")][0]
    assert nic.macAddress == "00:50:56:00:10:01"


def test_down_removes_vms(setup: Setup) -> None:
    with setup.guest():
        setup.fleet().up(["web01"], UpOptions(timeout=60))
    runs = setup.fleet().down(["web01", "web02"])
    assert [(r.name, r.outcome) for r in runs] == [("web01", "destroyed"), ("web02", "absent")]
    assert setup.driver.find("web01") is None


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "photonkick"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_bad_credentials_and_wrong_certificate(
    tmp_path: Path, vcsim: Vcsim, start_vcsim: Callable[..., Vcsim]
) -> None:
    ca = tmp_path / "sim.pem"
    ca.write_text(vcsim.cert_pem)
    spec = tmp_path / "lab.yaml"
    text = spec_text(vcsim, free_port(), HOSTS[:1], ca)
    spec.write_text(text.replace(f"password: {vcsim.password}", "password: wrong"))
    result = run_cli("status", str(spec), cwd=tmp_path)
    assert result.returncode == 1
    assert f"photonkick: logging in to {vcsim.host}:{vcsim.port} as '{vcsim.user}' failed" in (
        result.stderr
    )
    assert "wrong" not in result.stderr  # the password is never shown
    # A CA file that did not sign this server's certificate: refused before logging in.
    other = tmp_path / "other.pem"
    other.write_text(start_vcsim(vcsim.model).cert_pem)
    spec.write_text(text.replace(str(ca), str(other)))
    result = run_cli("status", str(spec), cwd=tmp_path)
    assert result.returncode == 1 and "certificate" in result.stderr.lower(), result.stderr


def test_cli_up_status_down(tmp_path: Path, vcsim: Vcsim) -> None:
    """The real command: it starts its own boot server; the fake guest talks to it."""
    ca = tmp_path / "sim.pem"
    ca.write_text(vcsim.cert_pem)
    port = free_port()
    spec = tmp_path / "lab.yaml"
    spec.write_text(
        spec_text(vcsim, port, [HOSTS[2]], ca, None).replace(
            "  network: VM Network", "  network: VM Network\n  iso: photon.iso"
        )
    )
    build_photon_iso(tmp_path / "photon.iso")
    inventory = load_inventory(spec)
    state = StateDir(tmp_path / ".photonkick")
    timeline = Timeline(state.path / "timeline.db")
    with FakeGuest(inventory, state, timeline, vcsim, tftp_port=0):
        result = run_cli("up", str(spec), "--timeout", "60", "--report", "r.json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1/1 ready;" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["hosts"][0]["outcome"] == "ready"
    status = run_cli("status", str(spec), cwd=tmp_path)
    assert status.returncode == 0 and "gi01" in status.stdout and "ready" in status.stdout
    down = run_cli("down", str(spec), "gi01", cwd=tmp_path)
    assert down.returncode == 0 and "gi01: destroyed" in down.stdout


def test_stop_leaves_a_consistent_state(setup: Setup) -> None:
    """What Ctrl-C does: following stops at once; the VM and its timeline stay as they are."""
    import threading

    fleet = setup.fleet()
    result: list[Any] = []
    with setup.guest(Script(default="silent")):
        worker = threading.Thread(
            target=lambda: result.extend(fleet.up(["web01"], UpOptions(timeout=300)))
        )
        worker.start()
        build = setup.state.build("web01").build
        assert (
            setup.timeline.wait_for("web01", build, {"vm_powered_on"}, since=0, timeout=30)
            is not None
        )
        fleet.stop.set()
        worker.join(10)
    assert not worker.is_alive()
    assert [(r.name, r.outcome) for r in result] == [("web01", "stopped")]
    assert setup.driver.find("web01") is not None
    kinds = [e.kind for e in setup.timeline.events("web01")]
    assert kinds[:2] == ["vm_created", "vm_powered_on"]


def test_cli_ctrl_c_prints_the_report(tmp_path: Path, vcsim: Vcsim) -> None:
    import signal

    ca = tmp_path / "sim.pem"
    ca.write_text(vcsim.cert_pem)
    spec = tmp_path / "lab.yaml"
    spec.write_text(spec_text(vcsim, free_port(), HOSTS[:1], ca))
    state = StateDir(tmp_path / ".photonkick")
    timeline = Timeline(state.path / "timeline.db")
    exe = Path(sys.executable).parent / "photonkick"
    proc = subprocess.Popen(
        [str(exe), "up", str(spec), "--timeout", "300"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert timeline.wait_for("web01", 1, {"vm_powered_on"}, since=0, timeout=60)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "web01  stopped" in out and "0/1 ready" in out


def test_missing_iso_refused_before_anything_changes(tmp_path: Path, vcsim: Vcsim) -> None:
    s = Setup(tmp_path, vcsim, [{"name": "iso02", "mac": "00:50:56:00:10:05", "boot": "iso"}])
    try:
        (tmp_path / "photon.iso").unlink()
        runs = s.fleet().up([], UpOptions(timeout=5))
        assert runs[0].outcome == "error" and "needs vsphere.iso" in runs[0].detail
        assert s.driver.find("iso02") is None
        assert s.timeline.events("iso02") == []
    finally:
        s.close()


def test_stop_during_rebuild_leaves_queued_hosts_alone(setup: Setup) -> None:
    import threading

    with setup.guest():
        setup.fleet().up(["web01", "web02"], UpOptions(timeout=60))
    before = setup.driver.find("web02")
    fleet = setup.fleet()
    result: list[Any] = []
    with setup.guest(Script(default="silent")):
        worker = threading.Thread(
            target=lambda: result.extend(
                fleet.up(["web01", "web02"], UpOptions(parallel=1, timeout=300, rebuild=True))
            )
        )
        worker.start()
        assert setup.timeline.wait_for("web01", 2, {"vm_powered_on"}, since=0, timeout=30)
        fleet.stop.set()
        worker.join(15)
    assert [(r.name, r.outcome) for r in result] == [("web01", "stopped"), ("web02", "stopped")]
    assert setup.driver.find("web02") == before
    assert setup.state.build("web02").build == 1

"""`photonkick up`, `rebuild`, `down` and `status` against the vSphere simulator."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_guest import FakeGuest, Script, spec_text
from fakes import FailingDriver, as_driver
from photon_iso import build_photon_iso
from ports import free_port
from pyVmomi import vim
from vcsim_fixture import Vcsim

from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.tokens import token_matches
from photonkick.server.boot_server import BootServer, Listen
from photonkick.server.cli_fleet import connect_driver as _connect
from photonkick.server.fleet import Fleet, UpOptions
from photonkick.server.report import FleetReport, build_report, format_report
from photonkick.server.state_dir import StateDir
from photonkick.server.timeline import Timeline
from photonkick.server.vsphere import VmDriver, VmRequest

HOSTS = [
    {"name": "web01", "mac": "00:50:56:00:10:01"},
    {"name": "web02", "mac": "00:50:56:00:10:02", "firmware": "bios"},
    {"name": "gi01", "mac": "00:50:56:00:10:03", "boot": "guestinfo"},
    {"name": "iso01", "mac": "00:50:56:00:10:04", "boot": "iso"},
]


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
    for host in report.hosts:
        assert host.time_to_ready is not None and host.time_to_ready > 0
        assert set(host.phases) >= {"vm_created", "installed", "firstboot", "ready"}
    pxe = next(h for h in report.hosts if h.name == "web01")
    assert set(pxe.phases) >= {"config", "kickstart"}
    p50, p95 = report.fleet.p50, report.fleet.p95
    assert report.fleet.ready == 4 and p50 is not None and p95 is not None and p95 >= p50
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


def test_http_boot_vm_gets_its_own_efi_http_boot_settings(tmp_path: Path, vcsim: Vcsim) -> None:
    """``boot: http``: the VM's advanced settings name the UEFI HTTP loader (the simulator
    only stores them); the fake guest boots from what they say, with no DHCP and no TFTP."""
    s = Setup(tmp_path, vcsim, [{"name": "http01", "mac": "00:50:56:00:10:06", "boot": "http"}])
    try:
        with s.guest() as guest:
            runs = s.fleet().up([], UpOptions(timeout=60))
        assert guest.errors == []
        assert [(r.name, r.outcome) for r in runs] == [("http01", "ready")]
        config = vm_config(s, "http01")
        extra = {o.key: o.value for o in config.extraConfig}
        assert extra["networkBootProtocol"] == "httpv4"
        assert extra["networkBootUri"] == f"http://127.0.0.1:{s.http_port}/ipxe/snponly.efi"
        assert config.firmware == "efi"
        kinds = [e.kind for e in s.timeline.events("http01")]
        assert {"config", "kickstart", "ready"} <= set(kinds)
        assert not [e for e in s.timeline.events("http01") if "tftp" in e.detail.lower()]
        assert [type(d).__name__ for d in config.bootOptions.bootOrder] == [
            "vim.vm.BootOptions.BootableDiskDevice"
        ]
    finally:
        s.close()


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
    assert [h.alarms for h in report.hosts if h.name == "web01"] == [[]]
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
    assert report.fleet == FleetReport(
        hosts=2,
        ready=0,
        failed=1,
        outcomes={"failed": 1, "timeout": 1},
        p50=None,
        p95=None,
        max=None,
    )
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


def start_up(spec: Path, cwd: Path) -> subprocess.Popen[str]:
    """`photonkick up SPEC --timeout 300` running in the background."""
    exe = Path(sys.executable).parent / "photonkick"
    return subprocess.Popen(
        [str(exe), "up", str(spec), "--timeout", "300"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_ctrl_c_prints_the_report(tmp_path: Path, vcsim: Vcsim) -> None:
    import signal

    ca = tmp_path / "sim.pem"
    ca.write_text(vcsim.cert_pem)
    spec = tmp_path / "lab.yaml"
    spec.write_text(spec_text(vcsim, free_port(), HOSTS[:1], ca))
    state = StateDir(tmp_path / ".photonkick")
    timeline = Timeline(state.path / "timeline.db")
    proc = start_up(spec, tmp_path)
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


# -- faults: what `up`, `down` and `rebuild` must not hide ------------------------------------


def cdrom_iso(setup: Setup, name: str) -> str | None:
    cdrom = next(
        d
        for d in vm_config(setup, name).hardware.device
        if isinstance(d, vim.vm.device.VirtualCdrom)
    )
    return getattr(cdrom.backing, "fileName", None)


def boot_order(setup: Setup, name: str) -> list[str]:
    return [
        type(d).__name__.rsplit(".", 1)[-1] for d in vm_config(setup, name).bootOptions.bootOrder
    ]


def test_a_failed_after_install_step_fails_the_host_and_the_next_up_finishes_it(
    setup: Setup,
) -> None:
    # The simulator cannot be made to fail only this call: the way a busy host refuses it.
    detach_fails = FailingDriver(
        "detach_iso", "emptying the CD-ROM: TaskInProgress (the VM is busy)", setup.driver
    )
    flaky = Fleet(setup.inventory, setup.state, setup.timeline, as_driver(detach_fails))
    with setup.guest():
        runs = flaky.up(["iso01"], UpOptions(timeout=60))
    assert runs[0].outcome == "failed"
    assert runs[0].detail.startswith(
        "after install: ISO detach: detach_iso: emptying the CD-ROM: TaskInProgress"
    )
    assert cdrom_iso(setup, "iso01") is not None  # still in: its next reboot would reinstall
    assert "failed" in format_report(build_report(runs, setup.timeline))
    again = setup.fleet().up(["iso01"], UpOptions(timeout=60))
    assert (again[0].outcome, again[0].phase) == ("exists", "ready")
    assert again[0].detail == "the VM exists; finished its after-install steps"
    assert cdrom_iso(setup, "iso01") is None
    assert boot_order(setup, "iso01") == ["BootableDiskDevice"]
    # Done once is done: the next run leaves the VM alone.
    third = setup.fleet().up(["iso01"], UpOptions(timeout=60))
    assert third[0].detail == "the VM exists; --rebuild replaces it"


def test_guestinfo_kickstart_ejects_the_cdrom(setup: Setup) -> None:
    with setup.guest(Script(default="silent")):
        runs = setup.fleet().up(["gi01"], UpOptions(timeout=1))
    assert runs[0].outcome == "timeout"
    extra = {o.key: o.value for o in vm_config(setup, "gi01").extraConfig}
    kickstart = json.loads(base64.b64decode(extra["guestinfo.kickstart.data"]))
    assert kickstart["eject_cdrom"] is True


def folder_file(sim: Vcsim, driver: Any, path: str) -> tuple[int, str]:
    """GET a datastore file through the simulator's /folder interface: status, Last-Modified."""
    conn = http.client.HTTPSConnection(
        sim.host, sim.port, context=ssl.create_default_context(cadata=sim.cert_pem)
    )
    dc = "ha-datacenter" if sim.model == "esx" else "DC0"
    session = driver._stub.GetSessionId()
    conn.request(
        "GET",
        f"/folder/{path}?dcPath={dc}&dsName=LocalDS_0",
        headers={"Cookie": f'vmware_soap_session="{session}"'},
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, response.getheader("Last-Modified") or ""


def test_superseded_build_isos_are_deleted(setup: Setup) -> None:
    with setup.guest():
        assert setup.fleet().up(["iso01"], UpOptions(timeout=60))[0].outcome == "ready"
        assert folder_file(setup.sim, setup.driver, "photonkick/iso01-build1.iso")[0] == 200
        rebuilt = setup.fleet().up(["iso01"], UpOptions(timeout=60, rebuild=True))
    assert rebuilt[0].outcome == "ready" and rebuilt[0].build == 2
    assert folder_file(setup.sim, setup.driver, "photonkick/iso01-build1.iso")[0] == 404
    assert folder_file(setup.sim, setup.driver, "photonkick/iso01-build2.iso")[0] == 200
    assert sorted(p.name for p in (setup.state.path / "iso").glob("iso01-*.iso")) == [
        "iso01-build2.iso"
    ]
    assert [r.outcome for r in setup.fleet().down(["iso01"])] == ["destroyed"]
    assert folder_file(setup.sim, setup.driver, "photonkick/iso01-build2.iso")[0] == 404
    assert list((setup.state.path / "iso").glob("iso01-*.iso")) == []


def test_the_stock_iso_is_uploaded_once_and_replaced_when_it_changes(setup: Setup) -> None:
    import hashlib
    import time

    iso = setup.root / "photon.iso"
    with setup.guest():
        assert setup.fleet().up(["gi01"], UpOptions(timeout=60))[0].outcome == "ready"
        status, first = folder_file(setup.sim, setup.driver, "photonkick/photon.iso")
        assert status == 200
        sidecar = setup.driver.read_file("photonkick/photon.iso.sha256")
        digest = hashlib.sha256(iso.read_bytes()).hexdigest()
        assert sidecar == f"{digest}  {iso.stat().st_size}\n".encode()
        time.sleep(1.1)  # Last-Modified has a one-second resolution
        # A new run (new Fleet) reuses the copy whose size and SHA-256 match.
        again = setup.fleet().up(["gi01"], UpOptions(timeout=60, rebuild=True))
        assert again[0].outcome == "ready"
        assert folder_file(setup.sim, setup.driver, "photonkick/photon.iso") == (200, first)
        # A changed local ISO is uploaded again.
        with iso.open("ab") as f:
            f.write(b"\0" * 2048)
        third = setup.fleet().up(["gi01"], UpOptions(timeout=60, rebuild=True))
        assert third[0].outcome == "ready"
    assert folder_file(setup.sim, setup.driver, "photonkick/photon.iso")[1] != first
    digest = hashlib.sha256(iso.read_bytes()).hexdigest()
    assert setup.driver.read_file("photonkick/photon.iso.sha256") == (
        f"{digest}  {iso.stat().st_size}\n".encode()
    )


def write_spec(tmp_path: Path, sim: Vcsim, hosts: list[dict[str, str]], **replace: str) -> Path:
    """A spec for the simulator, trusting its certificate; ``replace`` edits its text."""
    ca = tmp_path / "sim.pem"
    ca.write_text(sim.cert_pem)
    text = spec_text(sim, free_port(), hosts, ca)
    for old, new in replace.items():
        text = text.replace(old, new)
    spec = tmp_path / "lab.yaml"
    spec.write_text(text)
    return spec


def test_insecure_connects_without_a_pin(tmp_path: Path, vcsim: Vcsim) -> None:
    ca_line = f"  ca_file: {tmp_path / 'sim.pem'}"
    spec = write_spec(tmp_path, vcsim, HOSTS[:1], **{ca_line: "  insecure: true"})
    state = StateDir(tmp_path / ".photonkick")
    driver: Any = _connect(load_inventory(spec), state)
    try:
        assert driver.find("web01") is None
    finally:
        driver.close()
    assert not (state.path / "pins").exists()
    status = run_cli("status", str(spec), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "no VM" in status.stdout


def test_down_gives_vsphere_reason_and_fails(tmp_path: Path, start_vcsim: Any) -> None:
    sim = start_vcsim("esx", disable_methods=("Destroy_Task",))
    spec = write_spec(tmp_path, sim, HOSTS[:2])
    driver: Any = _connect(load_inventory(spec), StateDir(tmp_path / ".photonkick"))
    try:
        driver.create(VmRequest(name="web01", mac="00:50:56:00:10:01"))
    finally:
        driver.close()
    down = run_cli("down", str(spec), "web01", "web02", cwd=tmp_path)
    assert down.returncode == 1, down.stdout + down.stderr
    line = next(x for x in down.stdout.splitlines() if x.startswith("web01: "))
    assert line.startswith("web01: error: destroying VM 'web01': ")
    assert "method is disabled" in line and "(MethodDisabled)" in line
    assert "web02: absent" in down.stdout


def refusing_port() -> int:
    """A loopback port nobody listens on: logging in there would fail with exit code 1."""
    return free_port()


@pytest.mark.parametrize(
    "command",
    [
        ("up", "nosuch"),
        ("rebuild", "web01", "nosuch"),
        ("down", "nosuch"),
    ],
)
def test_unknown_host_names_exit_2_before_logging_in(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    spec = tmp_path / "lab.yaml"
    spec.write_text(
        'server: {url: "http://127.0.0.1:9"}\n'
        f"vsphere: {{host: 127.0.0.1, port: {refusing_port()}, user: u, password: p}}\n"
        'hosts:\n  - {name: web01, mac: "00:50:56:00:10:01"}\n'
    )
    result = run_cli(command[0], str(spec), *command[1:], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"photonkick: no such host in {spec}: nosuch (hosts: web01)" in result.stderr
    assert "connect" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["up", "down", "status"])
def test_a_spec_without_vsphere_exits_2(tmp_path: Path, command: str) -> None:
    spec = tmp_path / "lab.yaml"
    spec.write_text(
        'server: {url: "http://127.0.0.1:9"}\nhosts:\n  - {name: web01, mac: "00:50:56:00:10:01"}\n'
    )
    result = run_cli(command, str(spec), *(["--all"] if command == "down" else []), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"photonkick: {spec}: vsphere: the spec has no vsphere section" in result.stderr


def test_a_missing_iso_exits_2_before_logging_in(tmp_path: Path) -> None:
    spec = tmp_path / "lab.yaml"
    spec.write_text(
        'server: {url: "http://127.0.0.1:9"}\n'
        f"vsphere: {{host: 127.0.0.1, port: {refusing_port()}, user: u, password: p, "
        "iso: nothere.iso}\n"
        'hosts:\n  - {name: gi01, mac: "00:50:56:00:10:01", boot: guestinfo}\n'
    )
    result = run_cli("up", str(spec), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "gi01: boot: guestinfo needs vsphere.iso" in result.stderr


def test_managed_dhcp_is_checked_before_logging_in(tmp_path: Path) -> None:
    """`up` runs its in-process boot server with the spec's managed DHCP, so a DHCP setting
    this machine cannot serve stops it first, at the spec's line, with nothing created."""
    spec = tmp_path / "lab.yaml"
    spec.write_text(
        'server:\n  url: "http://127.0.0.1:9"\n  dhcp: {mode: proxy, interface: pknosuch0}\n'
        f"vsphere: {{host: 127.0.0.1, port: {refusing_port()}, user: u, password: p}}\n"
        'hosts:\n  - {name: web01, mac: "00:50:56:00:10:01"}\n'
    )
    result = run_cli("up", str(spec), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"{spec}:3:" in result.stderr and "server.dhcp.interface" in result.stderr
    assert "pknosuch0" in result.stderr
    assert not (tmp_path / ".photonkick" / "dnsmasq.conf").exists()


def test_placement_errors_name_the_spec_key(tmp_path: Path, start_vcsim: Any) -> None:
    sim = start_vcsim("vcenter")
    spec = write_spec(tmp_path, sim, HOSTS[:1], **{"cluster: DC0_C0": "cluster: nope"})
    result = run_cli("up", str(spec), "--timeout", "20", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "web01: error: vsphere.cluster: datacenter DC0 has no cluster or host 'nope'" in (
        result.stdout
    )


def test_a_server_that_hangs_up_during_tls_is_one_line(tmp_path: Path) -> None:
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]

    def hang_up() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    spec = tmp_path / "lab.yaml"
    try:
        for trust in ("", ", insecure: true"):
            spec.write_text(
                'server: {url: "http://127.0.0.1:9"}\n'
                f"vsphere: {{host: 127.0.0.1, port: {port}, user: u, password: p{trust}}}\n"
                'hosts:\n  - {name: web01, mac: "00:50:56:00:10:01"}\n'
            )
            result = run_cli("status", str(spec), cwd=tmp_path)
            assert result.returncode == 1 and "Traceback" not in result.stderr
            assert result.stderr.splitlines()[-1] == (
                f"photonkick: 127.0.0.1:{port} closed the connection during the TLS handshake: "
                "is it an ESXi host or vCenter, and vsphere.port the right port?"
            )
    finally:
        listener.close()


def test_ctrl_c_while_starting_exits_130_without_a_traceback(tmp_path: Path) -> None:
    """SIGINT at moments spread over start-up (loading modules, reading the spec, the TLS
    handshake with a server that never answers)."""
    import signal
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts the connection and never answers
    spec = tmp_path / "lab.yaml"
    spec.write_text(
        'server: {url: "http://127.0.0.1:9"}\n'
        f"vsphere: {{host: 127.0.0.1, port: {listener.getsockname()[1]}, user: u, password: p}}\n"
        'hosts:\n  - {name: web01, mac: "00:50:56:00:10:01"}\n'
    )
    exe = Path(sys.executable).parent / "photonkick"
    try:
        # From 0.2 s on: before that the interpreter itself may still be starting.
        for delay in (0.2, 0.35, 0.5, 0.8, 1.5):
            proc = subprocess.Popen(
                [str(exe), "up", str(spec)],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 130, (delay, err)
            assert "Traceback" not in err, (delay, err)
            assert err.splitlines()[-1] == "photonkick: interrupted", (delay, err)
    finally:
        listener.close()


def test_waitress_queue_warnings_do_not_flood_up(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from photonkick.server.progress import quiet_waitress_queue

    quiet_waitress_queue()
    quiet_waitress_queue()  # a second in-process run adds nothing
    logger = logging.getLogger("waitress.queue")
    with caplog.at_level(logging.WARNING, logger="waitress.queue"):
        for depth in range(1, 200):
            logger.warning("Task queue depth is %d", depth)
    assert [r.getMessage() for r in caplog.records] == ["Task queue depth is 1"]


class Frozen:
    """Freezes the simulator (SIGSTOP) when the fake guest is about to report `installed`,
    so the fleet's after-install reconfigure hangs as on a stuck vSphere; thawed at exit
    (enter it inside the fake guest's block, which needs the simulator to log out)."""

    def __init__(self, sim: Vcsim) -> None:
        self.sim = sim

    def __call__(self, name: str) -> None:
        os.kill(self.sim.process.pid, signal.SIGSTOP)

    def __enter__(self) -> Frozen:
        return self

    def __exit__(self, *exc: object) -> None:
        os.kill(self.sim.process.pid, signal.SIGCONT)


def test_ctrl_c_is_honoured_while_vsphere_hangs(tmp_path: Path, vcsim: Vcsim) -> None:
    build_photon_iso(tmp_path / "photon.iso")
    spec = write_spec(
        tmp_path,
        vcsim,
        [HOSTS[2]],
        **{"  network: VM Network": "  network: VM Network\n  iso: photon.iso"},
    )
    state = StateDir(tmp_path / ".photonkick")
    timeline = Timeline(state.path / "timeline.db")
    freeze = Frozen(vcsim)
    script = Script(default="installed", before_installed=freeze)
    proc = start_up(spec, tmp_path)
    out = err = ""
    try:
        with FakeGuest(load_inventory(spec), state, timeline, vcsim, 0, script), freeze:
            assert timeline.wait_for("gi01", 1, {"installed"}, since=0, timeout=60)
            time.sleep(0.5)  # `up` is inside its boot-order reconfigure, which hangs
            proc.send_signal(signal.SIGINT)
            sent = time.monotonic()
            with contextlib.suppress(subprocess.TimeoutExpired):
                out, err = proc.communicate(timeout=10)
            took = time.monotonic() - sent
    finally:
        proc.kill()
        proc.communicate()
    assert took < 2.0, f"Ctrl-C took {took:.1f} s"
    assert proc.returncode == 130, err
    assert "gi01  stopped" in out and "gi01: stopped: while installed" in out


def test_timeout_is_honoured_while_vsphere_hangs(setup: Setup) -> None:
    freeze = Frozen(setup.sim)
    with setup.guest(Script(default="installed", before_installed=freeze)), freeze:
        started = time.monotonic()
        runs = setup.fleet().up(["web01"], UpOptions(timeout=5))
        took = time.monotonic() - started
    assert took < 5 + 2.0, f"--timeout 5 took {took:.1f} s"
    assert runs[0].outcome == "timeout"
    assert runs[0].detail == "no ready after 5 s (a vSphere call was still running while installed)"

"""The fleet's state machine (`up`, `rebuild`) on in-repo fakes: a fake vSphere, a fake
clock, and a fake guest that records its callbacks straight into a real timeline.

The pyVmomi driver itself, and `up` end to end, are tested against the simulator
(tests/test_vsphere_driver.py, tests/test_up.py).
"""

from __future__ import annotations

import _thread
import inspect
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FailingDriver, FakeClock, FakeDriver, HangingDriver, as_driver

from photonkick.kickstarts.inventory import load_inventory
from photonkick.server.fleet import (
    AFTER_INSTALL_DONE,
    AFTER_INSTALL_FAILED,
    STOP_GRACE,
    Fleet,
    HostRun,
    UpOptions,
)
from photonkick.server.state_dir import StateDir
from photonkick.server.timeline import FAILED, Timeline
from photonkick.server.vsphere import VmDriver, VmHandle

SPEC = """\
server: {url: "http://127.0.0.1:8080"}
vsphere:
  host: vcenter.example
  user: admin
  password: not-used
  datastore: ds1
  iso: photon.iso
hosts:
  - {name: web01, mac: "00:50:56:00:10:01"}
  - {name: web02, mac: "00:50:56:00:10:02", firmware: bios}
  - {name: gi01, mac: "00:50:56:00:10:03", boot: guestinfo}
"""
TIMEOUT = 300.0
ENDINGS = {
    "ready": ("config", "kickstart", "installed", "firstboot", "ready"),
    "fail": ("config", "kickstart", FAILED),
    "installed": ("config", "kickstart", "installed"),
    "silent": (),
}
"""What the fake guest reports after power-on, by script name."""


class World:
    """A spec, its state directory, a timeline on a fake clock and a fake vSphere whose
    guests play ``scripts`` (host name -> key of ENDINGS, "ready" when absent)."""

    def __init__(self, root: Path) -> None:
        (root / "photon.iso").write_bytes(b"not really an ISO")
        spec = root / "lab.yaml"
        spec.write_text(SPEC)
        self.inventory = load_inventory(spec)
        self.state = StateDir(root / ".photonkick")
        self.clock = FakeClock()
        self.timeline = Timeline(self.state.path / "timeline.db", self.clock.clock)
        self.scripts: dict[str, str] = {}
        self.at_power_on: Callable[[str], None] = lambda name: None
        self.driver = FakeDriver(on_power_on=self._guest)

    def _guest(self, vm: VmHandle) -> None:
        self.at_power_on(vm.name)
        build = self.state.build(vm.name).build
        for kind in ENDINGS[self.scripts.get(vm.name, "ready")]:
            self.clock.advance(1.0)
            detail = "cannot pull nginx:1.27\nmore log" if kind == FAILED else ""
            self.timeline.record(vm.name, build, kind, detail)

    def fleet(self, driver: object | None = None) -> Fleet:
        return Fleet(
            self.inventory,
            self.state,
            self.timeline,
            as_driver(self.driver if driver is None else driver),
        )

    def up(self, *names: str, driver: object | None = None, **options: Any) -> list[HostRun]:
        options.setdefault("timeout", TIMEOUT)
        return self.fleet(driver).up(list(names), UpOptions(**options))

    def kinds(self, name: str) -> list[str]:
        return [e.kind for e in self.timeline.events(name)]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.timeline.close()


def outcomes(runs: list[HostRun]) -> dict[str, tuple[str, str | None, str]]:
    return {r.name: (r.phase, r.outcome, r.detail) for r in runs}


def test_every_boot_method_reaches_ready_and_boots_from_disk_after(world: World) -> None:
    runs = world.up()
    assert outcomes(runs) == {name: ("ready", "ready", "") for name in ("web01", "web02", "gi01")}
    vms = world.driver.vms
    assert vms["web02"].request.firmware == "bios" and vms["web01"].request.firmware == "efi"
    assert vms["gi01"].request.boot == "guestinfo" and vms["web01"].request.boot == "pxe"
    assert all(vm.boot_order == ("disk",) for vm in vms.values())
    assert vms["gi01"].iso is None and "guestinfo.kickstart.data" not in vms["gi01"].extra_config
    assert world.driver.files["[ds1] photonkick/photon.iso"] == b"not really an ISO"
    kinds = world.kinds("web01")
    assert kinds[0] == "vm_created"
    assert {"vm_powered_on", "guest_ip", AFTER_INSTALL_DONE, "ready"} <= set(kinds)


def test_a_failed_install_and_its_first_log_line(world: World) -> None:
    world.scripts["web01"] = "fail"
    (run,) = world.up("web01")
    assert outcomes([run])["web01"] == ("failed", "failed", "cannot pull nginx:1.27")


AFTER_INSTALL = "(the VM may boot the installer again; `up` retries these steps)"


@pytest.mark.parametrize(
    ("method", "host", "phase", "outcome", "detail"),
    [
        ("find", "web01", "queued", "error", "find: busy"),
        ("upload", "gi01", "queued", "error", "upload: busy"),
        ("create", "web01", "creating", "error", "create: busy"),
        ("power_on", "web01", "creating", "error", "power_on: busy"),
        (
            "set_boot_order",
            "web01",
            "ready",
            "failed",
            f"after install: boot order: set_boot_order: busy {AFTER_INSTALL}",
        ),
        (
            "detach_iso",
            "gi01",
            "ready",
            "failed",
            f"after install: ISO detach: detach_iso: busy {AFTER_INSTALL}",
        ),
        (
            "clear_guestinfo",
            "gi01",
            "ready",
            "failed",
            f"after install: guestinfo clear: clear_guestinfo: busy {AFTER_INSTALL}",
        ),
        ("wait_for", "web01", "ready", "ready", ""),  # no guest IP: a milestone only
        ("list_files", "web01", "ready", "ready", ""),  # old ISOs stay: logged
    ],
)
def test_a_failing_driver_call(
    world: World, method: str, host: str, phase: str, outcome: str, detail: str
) -> None:
    failing = FailingDriver(method, "busy", inner=world.driver)
    (run,) = world.up(host, driver=failing)
    assert failing.failures >= 1
    assert (run.phase, run.outcome, run.detail) == (phase, outcome, detail)
    kinds = world.kinds(host)
    created = host in world.driver.vms
    assert created == (method not in ("find", "upload", "create"))
    assert ("vm_created" in kinds) == created
    if method == "power_on":
        (event,) = [e for e in world.timeline.events(host) if e.kind == FAILED]
        assert event.detail == "power on failed: power_on: busy"
    assert (AFTER_INSTALL_FAILED in kinds) == (outcome == "failed")
    powered_on = created and method not in ("power_on", "wait_for")
    assert ("guest_ip" in kinds) == powered_on


def test_the_next_up_finishes_failed_after_install_steps(world: World) -> None:
    (run,) = world.up("gi01", driver=FailingDriver("detach_iso", inner=world.driver))
    assert run.outcome == "failed" and world.driver.vms["gi01"].iso is not None
    (again,) = world.up("gi01")
    assert (again.phase, again.outcome) == ("ready", "exists")
    assert again.detail == "the VM exists; finished its after-install steps"
    assert world.driver.vms["gi01"].iso is None
    assert world.driver.called("gi01").count("create") == 1
    (third,) = world.up("gi01")
    assert third.detail == "the VM exists; --rebuild replaces it"


def test_a_failed_destroy_keeps_the_old_vm_on_rebuild(world: World) -> None:
    world.up("web01")
    old = world.driver.vms["web01"].handle
    (run,) = world.up("web01", driver=FailingDriver("destroy", "busy", world.driver), rebuild=True)
    assert (run.phase, run.outcome, run.detail) == ("destroying", "error", "destroy: busy")
    assert world.driver.vms["web01"].handle == old
    (rebuilt,) = world.up("web01", rebuild=True)
    assert rebuilt.outcome == "ready" and rebuilt.build == 2
    assert world.driver.vms["web01"].handle != old


def test_the_timeout_runs_on_the_fleet_clock(world: World) -> None:
    """A silent guest: the fake clock passes the deadline, and following ends at once."""
    world.scripts["web01"] = "silent"
    world.at_power_on = lambda name: world.clock.advance(TIMEOUT + STOP_GRACE / 2)
    (run,) = world.up("web01")
    assert (run.phase, run.outcome, run.detail) == ("booting", "timeout", "no ready after 300 s")
    assert world.kinds("web01")[:2] == ["vm_created", "vm_powered_on"]


def test_a_vsphere_call_that_hangs_past_the_deadline(world: World) -> None:
    """The worker hangs deaf to its stop check: `up` reports the host without it."""
    world.scripts["web01"] = "installed"
    hanging = HangingDriver(
        "set_boot_order",
        world.driver,
        on_hang=lambda: world.clock.advance(TIMEOUT + STOP_GRACE + 1),
    )
    try:
        (run,) = world.up("web01", driver=hanging)
    finally:
        hanging.release()
    assert hanging.hanging.is_set()
    assert (run.phase, run.outcome) == ("installed", "timeout")
    assert run.detail == "no ready after 300 s (a vSphere call was still running while installed)"


@pytest.mark.parametrize("how", ["stop flag", "ctrl-c"])
def test_a_stop_while_following_spares_the_queued_hosts(world: World, how: str) -> None:
    world.scripts["web01"] = "silent"
    fleet = world.fleet()
    # Ctrl-C: SIGINT's KeyboardInterrupt in the main thread, the one running `up`.
    ctrl_c = threading.Timer(0.1, _thread.interrupt_main)
    world.at_power_on = lambda name: fleet.stop.set() if how == "stop flag" else ctrl_c.start()
    try:
        runs = fleet.up(["web01", "web02"], UpOptions(parallel=1, timeout=TIMEOUT))
    finally:
        ctrl_c.cancel()  # never into pytest, should `up` return before it fires
    assert fleet.stop.is_set()
    assert outcomes(runs) == {
        "web01": ("booting", "stopped", ""),
        "web02": ("queued", "stopped", ""),
    }
    assert world.driver.called("web02") == []
    assert "web01" in world.driver.vms and world.kinds("web02") == []


@pytest.mark.parametrize(
    ("stop_in", "rebuild", "phase", "detail", "calls"),
    [
        ("find", False, "stopped", "", ["find"]),
        ("find", True, "stopped", "", ["find"]),
        ("create", False, "created", "created, not powered on", ["find", "create"]),
    ],
)
def test_each_checkpoint_ends_the_host_before_its_next_step(
    world: World, stop_in: str, rebuild: bool, phase: str, detail: str, calls: list[str]
) -> None:
    if rebuild:
        world.up("web01")
        world.driver.calls.clear()
    old = world.driver.vms.get("web01")
    fleet = world.fleet()
    world.driver.before_call = lambda method, name: fleet.stop.set() if method == stop_in else None
    (run,) = fleet.up(["web01"], UpOptions(timeout=TIMEOUT, rebuild=rebuild))
    assert (run.phase, run.outcome, run.detail) == (phase, "stopped", detail)
    assert world.driver.called("web01") == calls
    if old is not None:
        assert world.driver.vms["web01"] is old


def test_the_guest_watch_ends_with_following(world: World) -> None:
    """VMware Tools never report an IP: the watch ends when the host is ready."""
    world.driver.guest_ip = None
    (run,) = world.up("web01")
    assert run.outcome == "ready" and "guest_ip" not in world.kinds("web01")
    assert not [t for t in threading.enumerate() if t.name == "guest-web01"]


def test_the_fake_driver_has_every_driver_method_as_declared() -> None:
    for name, declared in inspect.getmembers(VmDriver, inspect.isfunction):
        if not name.startswith("_"):
            fake = getattr(FakeDriver, name)
            assert inspect.signature(fake) == inspect.signature(declared), name

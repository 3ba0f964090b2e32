"""Phases through VMware Tools: the guest sets ``guestinfo.photonkick.*``, `up` records them.

On the simulator a fake guest sets the keys through ExtraConfig, as vmtoolsd does on ESXi;
the scripts' side runs the real first-boot script with a fake vmtoolsd that writes down what
it was asked to set.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
from fake_guest import Script
from test_kickstart import BUILD, firstboot_of, run_first_boot_script
from test_up import Setup, vm_config
from vcsim_fixture import Vcsim

from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.kickstart import build_kickstart
from photonkick.server.fleet import UpOptions
from photonkick.server.guestinfo_channel import (
    CLIENT,
    KEYS,
    PREFIX,
    REREAD_EVERY,
    VM_SETTINGS,
    GuestinfoChannel,
    GuestReport,
    parse_reports,
    watching_guestinfo,
)
from photonkick.server.timeline import CALLBACKS, FAILED, Timeline
from photonkick.server.vsphere import DriverTimeout, VmDriver, VmHandle, VmRequest

TOOLS_HOSTS = [
    {"name": "gi01", "mac": "00:50:56:00:10:03", "boot": "guestinfo"},
    {"name": "iso01", "mac": "00:50:56:00:10:04", "boot": "iso"},
]


@pytest.fixture
def setup(tmp_path: Path, vcsim: Vcsim) -> Iterator[Setup]:
    s = Setup(tmp_path, vcsim, TOOLS_HOSTS)
    yield s
    s.close()


def reported(setup: Setup, name: str) -> list[tuple[str, str, str]]:
    """The host's callback events of build 1: (kind, first line of detail, client)."""
    return [
        (e.kind, e.detail.split("\n", 1)[0], e.client)
        for e in setup.timeline.events(name, 1)
        if e.kind in (*CALLBACKS, FAILED)
    ]


def left_in_vsphere(setup: Setup, name: str) -> dict[str, str]:
    """The guestinfo.photonkick.* keys a vSphere reader still sees (the last value wins)."""
    values: dict[str, str] = {}
    for option in vm_config(setup, name).extraConfig:
        if option.key.startswith(PREFIX):
            values[option.key] = option.value
    return {k: v for k, v in values.items() if v}


def test_a_guest_that_reports_only_through_tools_reaches_ready(setup: Setup) -> None:
    with setup.guest(Script(channels="guestinfo")) as guest:
        runs = setup.fleet().up([], UpOptions(timeout=60))
    assert guest.errors == []
    assert {r.name: (r.outcome, r.detail) for r in runs} == {
        "gi01": ("ready", ""),
        "iso01": ("ready", ""),
    }
    for host in ("gi01", "iso01"):
        assert reported(setup, host) == [
            ("installed", "", CLIENT),
            ("firstboot", "", CLIENT),
            ("ready", "", CLIENT),
        ]
        # The after-install steps ran on the Tools report, as on an HTTP one.
        assert "vm_after_install" in [e.kind for e in setup.timeline.events(host, 1)]
        assert left_in_vsphere(setup, host) == {}
        extra = {o.key: o.value for o in vm_config(setup, host).extraConfig}
        assert extra.items() >= VM_SETTINGS.items()


def test_a_guest_that_reports_through_both_channels_records_each_phase_once(
    setup: Setup,
) -> None:
    script = Script(channels="both", per_host={"iso01": "fail"})
    with setup.guest(script) as guest:
        runs = setup.fleet().up([], UpOptions(timeout=60))
    assert guest.errors == []
    outcome = {r.name: (r.outcome, r.detail) for r in runs}
    assert outcome == {"gi01": ("ready", ""), "iso01": ("failed", "cannot pull nginx:1.27")}
    assert [kind for kind, _, _ in reported(setup, "gi01")] == ["installed", "firstboot", "ready"]
    (failed,) = [e for e in setup.timeline.events("iso01", 1) if e.kind == FAILED]
    assert failed.detail.startswith("cannot pull nginx:1.27")
    assert left_in_vsphere(setup, "gi01") == left_in_vsphere(setup, "iso01") == {}


def test_a_failure_through_tools_fails_the_host_with_its_reason(setup: Setup) -> None:
    with setup.guest(Script(channels="guestinfo", per_host={"gi01": "fail"})) as guest:
        runs = setup.fleet().up(["gi01"], UpOptions(timeout=60))
    assert guest.errors == []
    assert (runs[0].outcome, runs[0].detail) == ("failed", "cannot pull nginx:1.27")
    assert reported(setup, "gi01") == [(FAILED, "cannot pull nginx:1.27", CLIENT)]
    assert left_in_vsphere(setup, "gi01") == {}


def test_the_next_up_records_what_the_guest_reported_while_nobody_followed(
    setup: Setup,
) -> None:
    with setup.guest(Script(channels="guestinfo", default="silent")):
        runs = setup.fleet().up(["gi01"], UpOptions(timeout=2))
    assert runs[0].outcome == "timeout"
    vm = setup.driver.find("gi01")
    assert vm is not None
    # Later the guest finishes, reporting through Tools only (as vmtoolsd would set them).
    setup.driver.set_guestinfo(vm, {PREFIX + "installed": "1", PREFIX + "ready": "1"})
    again = setup.fleet().up(["gi01"], UpOptions(timeout=10))
    assert (again[0].outcome, again[0].phase) == ("exists", "ready")
    assert [kind for kind, _, _ in reported(setup, "gi01")] == ["installed", "ready"]
    assert left_in_vsphere(setup, "gi01") == {}


# -- the channel on its own: what it accepts from a guest, and replays -----------------------


def test_parse_reports_takes_only_well_formed_values() -> None:
    token_shaped = "A" * 26
    values = {
        PREFIX + "installed": "3",
        PREFIX + "firstboot": "three",
        PREFIX + "ready": "",
        PREFIX + "failed": f"3 docker login failed\x1b[2J {token_shaped} " + "x" * 500,
        PREFIX + "other": "3",
        "guestinfo.kickstart.data": "3",
    }
    installed, failed = parse_reports(values)
    assert installed == GuestReport("installed", 3, "")
    assert (failed.phase, failed.build) == (FAILED, 3)
    assert failed.reason.startswith("docker login failed\\x1b[2J <token> xxx")
    assert len(failed.reason) == 200
    assert parse_reports({PREFIX + "failed": "4"}) == [
        GuestReport(FAILED, 4, "reported through VMware Tools, without a reason")
    ]


def test_the_channel_records_each_report_once_and_ignores_other_builds(tmp_path: Path) -> None:
    timeline = Timeline(tmp_path / "timeline.db")
    try:
        timeline.record_callback("h", 2, "installed", "", "192.0.2.9")  # came over HTTP first
        channel = GuestinfoChannel(timeline, "h", 2)
        assert not channel.take({PREFIX + "installed": "2", PREFIX + "ready": "1"})
        assert not channel.take({PREFIX + "installed": "2", PREFIX + "firstboot": "2"})
        assert channel.take({PREFIX + "firstboot": "2", PREFIX + "ready": "2"})
        assert channel.take({PREFIX + "ready": "2"})
        # The same phases over HTTP afterwards are replays.
        assert timeline.record_callback("h", 2, "ready", "", "192.0.2.9") is None
        kinds = [(e.kind, e.client) for e in timeline.events("h", 2)]
        assert kinds == [
            ("installed", "192.0.2.9"),
            ("firstboot", CLIENT),
            ("ready", CLIENT),
        ]
        assert timeline.events("h", 1) == []
    finally:
        timeline.close()


def test_a_failure_is_one_event_whichever_channel_brings_it_first(tmp_path: Path) -> None:
    timeline = Timeline(tmp_path / "timeline.db")
    try:
        with_tail = "no space left\n--- log tail ---\ntdnf: disk full"
        # HTTP first (with the log tail), then Tools.
        timeline.record_callback("a", 1, FAILED, with_tail, "192.0.2.9")
        GuestinfoChannel(timeline, "a", 1).take({PREFIX + "failed": "1 no space left"})
        # Tools first, then HTTP.
        GuestinfoChannel(timeline, "b", 1).take({PREFIX + "failed": "1 no space left"})
        assert timeline.record_callback("b", 1, FAILED, with_tail, "192.0.2.9") is None
        assert [e.detail for e in timeline.events("a", 1)] == [with_tail]
        assert [e.detail for e in timeline.events("b", 1)] == ["no space left"]
        # A different reason is a different report.
        GuestinfoChannel(timeline, "a", 1).take({PREFIX + "failed": "1 something else"})
        assert len(timeline.events("a", 1)) == 2
    finally:
        timeline.close()


# -- the scripts' side: what the first boot asks vmtoolsd to set ------------------------------

FAKE_VMTOOLSD = 'printf "%s\\n" "$*" >> "$VMTOOLSD_LOG"; exit "${VMTOOLSD_EXIT:-0}"'
FAKE_CURL_NO_ROUTE = 'echo "curl: (7) Failed to connect: No route to host" >&2; exit 7'


def run_firstboot_with_tools(
    write_spec: Callable[[str], Path],
    tmp_path: Path,
    host_keys: str,
    *,
    vmware: bool = True,
    vmtoolsd: bool = True,
    environ: dict[str, str] | None = None,
) -> tuple[int, list[str]]:
    """Run a host's real first-boot script with a fake vmtoolsd (it writes down each
    command), a fake systemd-detect-virt and a fake curl that finds no route to photonkick;
    returns the exit status and the vmtoolsd commands."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private mount namespace")
    spec = write_spec(
        f"""
        server: {{url: "http://192.0.2.1:8080"}}
        hosts:
          - {{name: a, mac: "00:50:56:00:00:01", {host_keys}}}
        """
    )
    inv = load_inventory(spec, {})
    script = tmp_path / "firstboot"
    script.write_text("\n".join(firstboot_of(build_kickstart(inv.hosts[0], inv, BUILD))))
    tools = tmp_path / "tools"
    tools.mkdir()
    fakes = {
        "systemd-detect-virt": f"echo {'vmware' if vmware else 'kvm'}",
        "curl": FAKE_CURL_NO_ROUTE,
    }
    if vmtoolsd:
        fakes["vmtoolsd"] = FAKE_VMTOOLSD
    for name, body in fakes.items():
        (tools / name).write_text(f"#!/bin/bash\n{body}\n")
        (tools / name).chmod(0o755)
    log = tmp_path / "vmtoolsd.log"
    log.touch()
    done = run_first_boot_script(
        script,
        tmp_path,
        {
            "PATH": f"{tools}:{tmp_path / 'fakes'}:/usr/bin:/bin",
            "VMTOOLSD_LOG": str(log),
            **(environ or {}),
        },
    )
    return done.returncode, log.read_text().splitlines()


def test_first_boot_reports_through_tools_when_photonkick_is_out_of_reach(
    write_spec: Callable[[str], Path], tmp_path: Path
) -> None:
    code, commands = run_firstboot_with_tools(write_spec, tmp_path, "docker: true")
    assert code == 0
    build = BUILD.build
    assert commands == [
        f"--cmd info-set {PREFIX}firstboot {build}",
        f"--cmd info-set {PREFIX}ready {build}",
    ]
    values = dict(c.removeprefix("--cmd info-set ").split(" ", 1) for c in commands)
    assert [r.phase for r in parse_reports(values)] == ["firstboot", "ready"]
    assert set(values) <= set(KEYS)


def test_first_boot_failure_through_tools_carries_the_reason_only(
    write_spec: Callable[[str], Path], tmp_path: Path
) -> None:
    code, commands = run_firstboot_with_tools(
        write_spec, tmp_path, "docker: true", environ={"FAKE_DOCKER_DOWN": "1"}
    )
    assert code == 1
    assert commands == [
        f"--cmd info-set {PREFIX}firstboot {BUILD.build}",
        f"--cmd info-set {PREFIX}failed {BUILD.build} docker.service is not running (failed)",
    ]


@pytest.mark.parametrize(
    ("vmware", "vmtoolsd", "exit_status", "asked"),
    [
        (False, True, "0", []),
        (True, False, "0", []),
        (True, True, "1", ["firstboot 1", "ready 1", "failed 1 ready callback failed"]),
    ],
    ids=["not-vmware", "no-vmtoolsd", "vmtoolsd-fails"],
)
def test_without_working_tools_the_first_boot_relies_on_http_alone(
    write_spec: Callable[[str], Path],
    tmp_path: Path,
    vmware: bool,
    vmtoolsd: bool,
    exit_status: str,
    asked: list[str],
) -> None:
    code, commands = run_firstboot_with_tools(
        write_spec,
        tmp_path,
        "docker: true",
        vmware=vmware,
        vmtoolsd=vmtoolsd,
        environ={"VMTOOLSD_EXIT": exit_status},
    )
    # Neither channel took `ready`: the script fails, as it does without Tools.
    assert code == 1
    assert commands == [f"--cmd info-set {PREFIX}{a}" for a in asked]


def test_the_postinstall_reports_installed_through_tools_without_failing(
    write_spec: Callable[[str], Path],
) -> None:
    spec = write_spec(
        'server: {url: "http://192.0.2.1:8080"}\nhosts:\n  - {name: a, mac: "00:50:56:00:00:01"}\n'
    )
    inv = load_inventory(spec, {})
    lines = build_kickstart(inv.hosts[0], inv, BUILD)["postinstall"]
    # The first definition is postinstall's own; the first boot's follows in its file.
    report = next(ln for ln in lines if ln.startswith("pk_report() {"))
    assert report.startswith('pk_report() { pk_guestinfo "$@" || true; curl ')
    assert f"info-set guestinfo.photonkick.$1 {BUILD.build}" in "\n".join(lines)
    assert "pk_report installed" in lines


def test_the_driver_hands_over_each_change_of_the_guestinfo(setup: Setup) -> None:
    driver = setup.driver
    vm = driver.create(VmRequest(name="probe", mac="00:50:56:00:10:09"))
    seen: list[dict[str, str]] = []

    def on_change(values: Mapping[str, str]) -> bool:
        seen.append(dict(values))
        return values.get(PREFIX + "ready") == "1"

    watcher = threading.Thread(
        target=driver.watch_guestinfo, args=(vm, on_change), kwargs={"timeout": 20}
    )
    watcher.start()
    driver.set_guestinfo(vm, {PREFIX + "installed": "1"})
    while not any(PREFIX + "installed" in values for values in seen):
        assert watcher.is_alive(), seen
        time.sleep(0.05)
    driver.set_guestinfo(vm, {PREFIX + "ready": "1"})
    watcher.join(20)
    assert not watcher.is_alive()
    assert seen[-1] == {PREFIX + "installed": "1", PREFIX + "ready": "1"}
    with pytest.raises(DriverTimeout):
        driver.watch_guestinfo(vm, lambda values: False, timeout=1)


class FakeWatchDriver:
    """A fake of the two driver calls the channel makes: its first watch runs out of time
    with no news (as a host that never signals the change would), the second finds `ready`
    when it starts; it writes down the keys it is asked to clear."""

    def __init__(self) -> None:
        self.watches: list[float] = []
        self.cleared: list[tuple[str, ...]] = []

    def watch_guestinfo(
        self, vm: Any, on_change: Callable[[Mapping[str, str]], bool], *, timeout: float, stop: Any
    ) -> None:
        self.watches.append(timeout)
        if len(self.watches) == 1:
            raise DriverTimeout("waiting for the guestinfo: timed out")
        assert on_change({PREFIX + "ready": "1"})

    def clear_guestinfo(self, vm: Any, keys: Any, *, stop: Any = None) -> None:
        self.cleared.append(tuple(keys))


def test_a_watch_without_news_starts_again_and_the_keys_are_cleared_at_the_end(
    tmp_path: Path,
) -> None:
    timeline = Timeline(tmp_path / "timeline.db")
    driver = FakeWatchDriver()
    try:
        deadline = time.monotonic() + 60
        vm = VmHandle("h", "vm-1")
        with watching_guestinfo(
            cast(VmDriver, driver), timeline, "h", vm, 1, deadline=deadline, stop=lambda: False
        ) as channel:
            assert timeline.wait_for("h", 1, {"ready"}, since=0, timeout=10) is not None
            assert not channel.closed.is_set()
        assert channel.closed.is_set()
        assert len(driver.watches) == 2 and all(t <= REREAD_EVERY for t in driver.watches)
        assert driver.cleared == [KEYS]
    finally:
        timeline.close()

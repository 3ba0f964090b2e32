"""The installer's log, shipped from the stand-in installer to ``photonkick serve``.

The ISO's installer is the stand-in guest with :mod:`lab.installer_standin`'s overlay: it
runs the kickstart's ``preinstall`` (which starts photonkick's log shipper), writes
``/var/log/installer.log`` in photon-os-installer's format and fetches the ISO's RPMs. Two
BIOS iPXE VMs boot at once from one server: ``logged-ok`` installs to ``ready``;
``logged-nodisk`` has no disk, so its partitioning fails the way the installer's does.
Everything asserted comes from the server's API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from photon_iso import PhotonIsoSpec, photon_files

from lab.guest import Guest, read_marker
from lab.installer_standin import installer_initrd
from lab.netlab import SERVER_IP, Client, netlab
from lab.qemu import Vm, VmSpec, run_vms
from lab.test_lab_photonkick import (
    EXPECTED,
    PORT,
    RELEASE,
    VM_TIMEOUT,
    _collapse,
    _import_iso,
    http,
)
from lab.test_lab_two_servers import start_serve

pytestmark = pytest.mark.lab

SERVER = f"http://{SERVER_IP}:{PORT}"
INSTALLER_PHASES = ("partitioning", "packages", "bootloader", "postinstall")
#: The timeline of an install whose log reaches photonkick.
EXPECTED_LOGGED = (*EXPECTED[:5], *INSTALLER_PHASES, *EXPECTED[5:])
#: The repo's RPMs (paths under ``RPMS/``), all of which the stand-in downloads.
RPMS = sorted(
    path.removeprefix("RPMS/")
    for path in photon_files(PhotonIsoSpec(release=RELEASE))
    if path.startswith("RPMS/") and path.endswith(".rpm")
)
INSTALL_LOG_TIMEOUT = 300


@dataclass(frozen=True)
class Machine:
    name: str
    mac: str
    ip: str
    disk: bool


OK = Machine("logged-ok", "52:54:00:5e:03:21", "192.0.2.31", disk=True)
NODISK = Machine("logged-nodisk", "52:54:00:5e:03:22", "192.0.2.32", disk=False)
MACHINES = (OK, NODISK)


def _spec_yaml() -> str:
    lines = ["photon:", f'  release: "{RELEASE}"', "server:", f"  url: {SERVER}"]
    lines += [f"  install_log_timeout: {INSTALL_LOG_TIMEOUT}", "hosts:"]
    for m in MACHINES:
        lines += [f"  - name: {m.name}", f'    mac: "{m.mac}"', "    firmware: bios"]
    return "\n".join(lines) + "\n"


@dataclass
class Logged:
    """The VMs and the API's answer for each host."""

    vms: dict[str, Vm]
    status: dict[str, dict[str, Any]]
    wall: float
    marker: str | None


@pytest.fixture(scope="module")
def logged(
    lab_guest: Guest,
    lab_accel: str,
    lab_report: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Logged]:
    """Both VMs booted at once against one server."""
    workdir = tmp_path_factory.mktemp("lab-installer-log")
    installer = installer_initrd(lab_guest, RPMS, workdir / "installer-initrd.img")
    data = _import_iso(installer, workdir)
    with netlab(len(MACHINES), workdir) as lab:
        start_serve(lab, workdir / "server", _spec_yaml(), SERVER_IP, data)
        lab.start_dnsmasq([Client(m.name, m.mac, m.ip) for m in MACHINES])
        disk = lab_guest.new_disk(workdir / f"{OK.name}.img")
        specs = [
            VmSpec(
                name=m.name,
                mac=m.mac,
                tap=lab.taps[i],
                firmware="bios",
                nic="vmxnet3",
                disk=disk if m.disk else None,
            )
            for i, m in enumerate(MACHINES)
        ]
        began = time.monotonic()
        vms = run_vms(lab, specs, lab_accel, VM_TIMEOUT, parallel=len(specs))
        wall = time.monotonic() - began
        status: dict[str, dict[str, Any]] = {}
        for m in MACHINES:
            code, body = http(lab, "GET", f"{SERVER}/api/v1/hosts/{m.name}")
            assert code == 200, body
            status[m.name] = json.loads(body)
    result = Logged(vms, status, wall, read_marker(disk))
    lab_report.extend(_table(result, lab_accel))
    yield result


def _table(result: Logged, accel: str) -> list[str]:
    """Phase offsets (seconds from the first config fetch) with the installer's phases."""
    columns = (*EXPECTED_LOGGED, "failed")
    lines = [
        f"installer log shipped, accel={accel}: 2 VMs at once, {result.wall:.1f}s wall; "
        "phases in seconds from the host's first config fetch (server API)",
        f"  {'VM':15}" + "".join(f"{c[:11]:>12}" for c in columns),
    ]
    for m in MACHINES:
        status = result.status[m.name]
        offsets = dict(status.get("phases", {}))
        failed = _failed_at(status)
        if failed is not None:
            offsets["failed"] = failed
        lines.append(
            f"  {m.name:15}"
            + "".join(f"{offsets[c]:>12.1f}" if c in offsets else f"{'-':>12}" for c in columns)
        )
    return lines


def _failed_at(status: dict[str, Any]) -> float | None:
    """Seconds from the first config fetch to the ``failed`` event, if any."""
    events = status.get("events", [])
    configs = [e["time"] for e in events if e["kind"] == "config"]
    failed = [e["time"] for e in events if e["kind"] == "failed"]
    return failed[0] - configs[0] if configs and failed else None


def _explain(result: Logged, m: Machine) -> str:
    status = result.status[m.name]
    events = [(e["kind"], e["detail"][:60]) for e in status.get("events", [])]
    return (
        f"events {events}\nlog_tail:\n{status.get('log_tail')}\n"
        f"console:\n{result.vms[m.name].console_tail(3000)}"
    )


def test_installed_host_shows_installer_phases(logged: Logged) -> None:
    """The shipped log gives partitioning, packages (with the kickstart's package count),
    bootloader and postinstall, in order between the kickstart and ``installed``."""
    status = logged.status[OK.name]
    assert not logged.vms[OK.name].timed_out, _explain(logged, OK)
    assert status["phase"] == "ready" and status["failed"] is None, _explain(logged, OK)
    kinds = [e["kind"] for e in status["events"]]
    assert _collapse(kinds) == list(EXPECTED_LOGGED), _explain(logged, OK)
    offsets = [status["phases"][k] for k in EXPECTED_LOGGED]
    assert offsets == sorted(offsets), status["phases"]
    (packages,) = [e["detail"] for e in status["events"] if e["kind"] == "packages"]
    (tdnf,) = [line for line in status["log_tail"].splitlines() if "--setopt" in line]
    listed = tdnf.split(" install ", 1)[1].split()
    assert packages == f"{len(listed)} packages" and listed, (packages, tdnf)
    assert logged.marker is not None and logged.marker.startswith(f"{SERVER}/cb/{OK.name}/")


def test_shipped_log_tail(logged: Logged) -> None:
    """``log_tail`` holds the installer's own lines as the guest wrote them."""
    tail = logged.status[OK.name]["log_tail"]
    lines = tail.splitlines()
    assert any(line.endswith(" - Executing: m_postinstall") for line in lines), tail
    assert any(" - running ['sgdisk', '-Z', '/dev/" in line for line in lines), tail
    assert any("mk-setup-grub.sh" in line for line in lines), tail


def test_rpm_count(logged: Logged) -> None:
    """The server counted every RPM the installer downloaded from it, with their bytes."""
    packages = logged.status[OK.name]["packages"]
    assert packages is not None, _explain(logged, OK)
    assert packages["count"] == len(RPMS), packages
    assert packages["size"] >= len(RPMS) * PhotonIsoSpec().rpm_size, packages


def test_partitioning_failure_is_reported_with_its_line(logged: Logged) -> None:
    """Without a disk the install fails in partitioning: the host is ``failed`` with the
    installer's exception line as the reason, long before the log timeout."""
    status = logged.status[NODISK.name]
    assert status["phase"] != "ready", _explain(logged, NODISK)
    reason = status["failed"]
    assert reason is not None, _explain(logged, NODISK)
    assert "failed clearing disk '/dev/sda'" in reason, reason
    kinds = [e["kind"] for e in status["events"]]
    assert "partitioning" in kinds and "packages" not in kinds and "installed" not in kinds
    failed_at = _failed_at(status)
    assert failed_at is not None and failed_at < INSTALL_LOG_TIMEOUT / 3, failed_at
    assert "Traceback (most recent call last):" in status["log_tail"]

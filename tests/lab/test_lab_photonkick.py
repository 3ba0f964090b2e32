"""The real boot server end to end: ``photonkick serve`` network-installs QEMU VMs.

A Photon-shaped ISO whose installer is the stand-in guest (``isolinux/vmlinuz`` and
``isolinux/initrd.img``; ``RPMS/repodata/repomd.xml`` for its repo check) goes through the
real ``photonkick import-iso``; ``photonkick serve`` then runs inside the lab namespace on
192.0.2.1 (HTTP 8080, TFTP 69), and dnsmasq is configured from the DHCP settings that
``serve`` prints. Each scenario is one kind of machine:

===================== ======== ======== ======= ==============================================
scenario              firmware NIC      NIC ROM what DHCP hands it, and what it fetches
===================== ======== ======== ======= ==============================================
bios-ipxe-vmxnet3     SeaBIOS  vmxnet3  iPXE    the iPXE chain -> ``ipxe/<mac>.ipxe``
bios-lpxelinux-virtio SeaBIOS  virtio   iPXE    ``lpxelinux.0`` (a per-client override: QEMU's
                                                ROMs are all iPXE) -> ``pxelinux.cfg/01-<mac>``
uefi-grub-virtio      OVMF     virtio   none    OVMF's own PXE: ``grubx64.efi`` ->
                                                ``grub/grub.cfg-01-<mac>``
uefi-ipxe-vmxnet3     OVMF     vmxnet3  iPXE    the iPXE chain (UEFI iPXE) -> ``ipxe/<mac>.ipxe``
===================== ======== ======== ======= ==============================================

The spec has two hosts per scenario: ``solo-<scenario>`` VMs boot one at a time, then the
four ``fleet-<scenario>`` VMs boot at once. Each VM installs (kernel and initrd over HTTP,
kickstart, repo, ``installed``), reboots, is told by the same loader to boot its disk
(netboot-once), boots the disk and reports ``firstboot`` and ``ready``. Everything asserted
about a host's progress comes from the server's own API.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from photon_iso import PhotonIsoSpec, build_photon_iso

from lab.guest import Guest, read_marker
from lab.netlab import (
    SERVER_IP,
    BootFiles,
    BootKind,
    Client,
    NetLab,
    dnsmasq_conf,
    netlab,
    wait_for,
)
from lab.qemu import Firmware, Nic, Vm, VmSpec, run_vms
from photonkick.server.state_dir import StateDir

pytestmark = pytest.mark.lab

PORT = 8080
SERVER = f"http://{SERVER_IP}:{PORT}"
RELEASE = "5.0"
VM_TIMEOUT = 180.0
SERVE_START_TIMEOUT = 60.0
PHOTONKICK = Path(sys.executable).with_name("photonkick")
#: The timeline of one install as the server's API reports it (``vm_created`` is only
#: recorded for VMs photonkick creates itself).
EXPECTED = (
    "config", "kernel", "initrd", "kickstart", "repo", "installed",
    "local_boot", "firstboot", "ready",
)  # fmt: skip
Run = Literal["solo", "fleet"]
RUNS: tuple[Run, ...] = ("solo", "fleet")
RUN_TITLES = {"solo": "one VM at a time", "fleet": "4 VMs at once"}


@dataclass(frozen=True)
class Scenario:
    """A kind of machine: firmware, NIC, how DHCP treats it, the loader family it must use."""

    name: str
    firmware: Firmware
    nic: Nic
    boot: BootKind
    ipxe_rom: bool
    loader: Literal["ipxe", "pxelinux", "grub"]
    ovmf_pxe: bool = True

    @property
    def boot_file(self) -> str | None:
        """The file the firmware itself fetches over TFTP (None: iPXE's chain over HTTP)."""
        return {"pxelinux": "lpxelinux.0", "grub": "grubx64.efi"}.get(self.loader)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("bios-ipxe-vmxnet3", "bios", "vmxnet3", "auto", ipxe_rom=True, loader="ipxe"),
    Scenario("bios-lpxelinux-virtio", "bios", "virtio", "bios", ipxe_rom=True, loader="pxelinux"),
    Scenario("uefi-grub-virtio", "uefi", "virtio", "auto", ipxe_rom=False, loader="grub"),
    # OVMF's own PXE is off: iPXE's "exit 1" (boot the disk) must fall through to the disk.
    Scenario(
        "uefi-ipxe-vmxnet3", "uefi", "vmxnet3", "auto", ipxe_rom=True, loader="ipxe", ovmf_pxe=False
    ),
)


@dataclass(frozen=True)
class Machine:
    """One host of the spec and its VM: a scenario in one of the runs."""

    scenario: Scenario
    run: Run

    @property
    def number(self) -> int:
        return RUNS.index(self.run) * len(SCENARIOS) + SCENARIOS.index(self.scenario)

    @property
    def name(self) -> str:
        return f"{self.run}-{self.scenario.name}"

    @property
    def mac(self) -> str:
        return f"52:54:00:5e:01:{self.number + 0x21:02x}"

    @property
    def ip(self) -> str:
        return f"192.0.2.{self.number + 21}"

    @property
    def client(self) -> Client:
        return Client(self.name, self.mac, self.ip, boot=self.scenario.boot)


MACHINES: tuple[Machine, ...] = tuple(Machine(s, run) for run in RUNS for s in SCENARIOS)


def spec_yaml() -> str:
    """The spec served: one host per machine, photonkick's defaults for everything else."""
    lines = ["photon:", f'  release: "{RELEASE}"', "server:", f"  url: {SERVER}", "hosts:"]
    for m in MACHINES:
        firmware = "efi" if m.scenario.firmware == "uefi" else "bios"
        lines += [f"  - name: {m.name}", f'    mac: "{m.mac}"', f"    firmware: {firmware}"]
    return "\n".join(lines) + "\n"


def boot_files_from(printed: str) -> BootFiles:
    """The lab's DHCP rules from the dnsmasq example photonkick prints, checked as it goes.

    The example must use the tags the lab's dnsmasq sets (``ipxe``, ``efi64``) and have
    three ``dhcp-boot`` rules: iPXE clients get the chain URL, other UEFI x64 clients the
    GRUB file and the rest the BIOS file, both from the printed next-server.
    """
    block = printed.split("\ndnsmasq:\n", 1)[1].split("\n\n", 1)[0]
    lines = [line.strip() for line in block.splitlines() if line.strip()]
    matches = [line for line in lines if not line.startswith("dhcp-boot=")]
    lab_conf = dnsmasq_conf([], BootFiles(), Path("/nonexistent")).splitlines()
    assert matches and set(matches) <= set(lab_conf), f"unexpected dnsmasq lines: {matches}"
    rules: dict[tuple[str, ...], list[str]] = {}
    for line in lines:
        if line.startswith("dhcp-boot="):
            fields = line.removeprefix("dhcp-boot=").split(",")
            tags = tuple(f for f in fields if f.startswith("tag:"))
            rules[tags] = fields[len(tags) :]
    assert set(rules) == {
        ("tag:ipxe",),
        ("tag:!ipxe", "tag:efi64"),
        ("tag:!ipxe", "tag:!efi64"),
    }, f"unexpected dhcp-boot rules: {rules}"
    (chain,) = rules[("tag:ipxe",)]
    efi64, _, efi_server = rules[("tag:!ipxe", "tag:efi64")]
    bios, _, bios_server = rules[("tag:!ipxe", "tag:!efi64")]
    assert efi_server == bios_server, rules
    # iPXE is tested before the architecture, so UEFI iPXE clients get the chain too.
    return BootFiles(bios=bios, efi64=efi64, ipxe=chain, ipxe_uefi=True, next_server=bios_server)


def http(lab: NetLab, method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    """One request from inside the namespace (no proxy): status and body, also for errors."""

    def call() -> tuple[int, bytes]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(url, data=data, method=method)
        try:
            with opener.open(request, timeout=15) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    return lab.inside(call)


def wrong(token: str) -> str:
    """``token`` with its last character changed: as close to right as a token gets."""
    return token[:-1] + ("a" if token[-1] != "a" else "b")


@dataclass
class Outcome:
    """What one machine's VM did, and what the server's API says about its host."""

    machine: Machine
    vm: Vm
    disk: Path
    status: dict[str, Any]
    token: str
    #: Wall-clock time the VM was started (the API's event times are wall-clock too).
    powered_on: float
    #: Status codes for a near-miss token, "before" the VMs booted and "after" they were done.
    refused: dict[str, dict[str, int]]
    tftp: list[str]


@dataclass
class Fleet:
    """Both runs against one server."""

    outcomes: dict[str, Outcome]
    walls: dict[Run, float]
    printed: str


def _import_iso(guest: Guest, workdir: Path) -> Path:
    """A Photon-shaped ISO with the stand-in as installer, imported with photonkick."""
    assert PHOTONKICK.is_file(), f"no photonkick command beside {sys.executable}: run .ci/setup"
    iso = workdir / "photon.iso"
    build_photon_iso(
        iso,
        PhotonIsoSpec(
            release=RELEASE,
            extra={
                "isolinux/vmlinuz": guest.kernel.read_bytes(),
                "isolinux/initrd.img": guest.initrd.read_bytes(),
            },
        ),
    )
    data = workdir / "data"
    done = subprocess.run(
        [str(PHOTONKICK), "import-iso", str(iso), "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (data / RELEASE / "isolinux" / "vmlinuz").read_bytes() == guest.kernel.read_bytes()
    assert (data / RELEASE / "RPMS" / "repodata" / "repomd.xml").is_file()
    iso.unlink()
    return data


def _start_serve(lab: NetLab, workdir: Path, data: Path) -> tuple[Path, str]:
    """``photonkick serve`` in the namespace; its state folder and what it printed."""
    spec = workdir / "spec.yaml"
    spec.write_text(spec_yaml())
    state = workdir / "state"
    log = workdir / "serve.log"
    serve = lab.spawn(
        [str(PHOTONKICK), "serve", str(spec), "--state", str(state), "--data", str(data),
         "--http", f"{SERVER_IP}:{PORT}", "--tftp", f"{SERVER_IP}:69"],
        log,
    )  # fmt: skip

    def started() -> bool:
        if serve.poll() is not None:
            raise RuntimeError(f"photonkick serve exited {serve.returncode}:\n{log.read_text()}")
        return "ISC dhcpd:" in log.read_text()

    wait_for(started, SERVE_START_TIMEOUT, lambda: f"photonkick serve:\n{log.read_text()}")
    lab.wait_listening(PORT, 10, proc=serve)
    lab.wait_listening(69, 10, udp=True, proc=serve)
    return state, log.read_text()


@pytest.fixture(scope="module")
def fleet(
    lab_guest: Guest,
    lab_accel: str,
    lab_report: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """Install every machine through ``photonkick serve``: solo VMs, then the fleet at once."""
    workdir = tmp_path_factory.mktemp("lab-photonkick")
    data = _import_iso(lab_guest, workdir)
    with netlab(len(MACHINES), workdir) as lab:
        lab.watch()
        state, printed = _start_serve(lab, workdir, data)
        lab.start_dnsmasq([m.client for m in MACHINES], boot_files_from(printed))
        states = StateDir(state)
        tokens = {m.name: states.build(m.name).token(m.name) for m in MACHINES}
        states.close()

        def refusals(m: Machine) -> dict[str, int]:
            bad = wrong(tokens[m.name])
            cb = f"{SERVER}/cb/{m.name}/{bad}"
            return {
                "kickstart": http(lab, "GET", f"{SERVER}/ks/{m.name}/{bad}.json")[0],
                "installed": http(lab, "POST", f"{cb}/installed", b"")[0],
                "ready": http(lab, "POST", f"{cb}/ready", b"")[0],
            }

        # While every host is armed: a near-miss token must neither fetch nor report.
        before = {m.name: refusals(m) for m in MACHINES}
        specs = {
            m.name: VmSpec(
                name=m.name,
                mac=m.mac,
                tap=lab.taps[m.number],
                firmware=m.scenario.firmware,
                nic=m.scenario.nic,
                ipxe_rom=m.scenario.ipxe_rom,
                ovmf_pxe=m.scenario.ovmf_pxe,
                disk=lab_guest.new_disk(workdir / f"{m.name}.img"),
            )
            for m in MACHINES
        }
        vms: dict[str, Vm] = {}
        walls: dict[Run, float] = {}
        powered_on: dict[str, float] = {}
        for run in RUNS:
            batch = [specs[m.name] for m in MACHINES if m.run == run]
            began = time.monotonic()
            parallel = 1 if run == "solo" else len(batch)
            done = run_vms(lab, batch, lab_accel, VM_TIMEOUT, parallel=parallel)
            walls[run] = time.monotonic() - began
            offset = time.time() - time.monotonic()
            powered_on.update({name: vm.started + offset for name, vm in done.items()})
            vms.update(done)
        # After the installs too: a late near-miss must not count as a report.
        after = {m.name: refusals(m) for m in MACHINES}
        outcomes: dict[str, Outcome] = {}
        for m in MACHINES:
            code, body = http(lab, "GET", f"{SERVER}/api/v1/hosts/{m.name}")
            assert code == 200, body
            disk = specs[m.name].disk
            assert disk is not None
            tftp = [p.detail for p in list(lab.packets) if p.kind == "tftp" and p.src_ip == m.ip]
            outcomes[m.name] = Outcome(
                m,
                vms[m.name],
                disk,
                json.loads(body),
                tokens[m.name],
                powered_on[m.name],
                {"before": before[m.name], "after": after[m.name]},
                tftp,
            )
    result = Fleet(outcomes, walls, printed)
    lab_report.extend(_table(result, lab_accel))
    yield result


def _table(result: Fleet, accel: str) -> list[str]:
    """Phase offsets per VM and time to ready per run, for the end-of-session report.

    ``firmware`` is power-on to the first config fetch (firmware, DHCP, loader), which the
    server's time to ready does not see; ``on->ready`` is power-on to ``ready``.
    """
    columns = ("firmware", *EXPECTED, "to_ready", "on->ready")
    lines = [
        f"photonkick serve, accel={accel}: phases in seconds from the host's first config "
        "fetch (server API); firmware: power-on to that fetch",
        f"  {'VM':28}" + "".join(f"{c:>11}" for c in columns),
    ]
    for run in RUNS:
        ready: list[float] = []
        for o in result.outcomes.values():
            if o.machine.run != run:
                continue
            phases = o.status.get("phases", {})
            to_ready = o.status.get("time_to_ready")
            configs = [e["time"] for e in o.status.get("events", []) if e["kind"] == "config"]
            firmware = configs[0] - o.powered_on if configs else None
            on_ready = None
            if to_ready is not None:
                ready.append(to_ready)
                on_ready = None if firmware is None else firmware + to_ready
            cells = [firmware, *(phases.get(c) for c in EXPECTED), to_ready, on_ready]
            lines.append(
                f"  {o.machine.name:28}"
                + "".join(f"{v:>11.1f}" if v is not None else f"{'-':>11}" for v in cells)
            )
        ready.sort()
        summary = (
            f"min {ready[0]:.1f}s, median {ready[len(ready) // 2]:.1f}s, max {ready[-1]:.1f}s"
            if ready
            else "none ready"
        )
        lines.append(
            f"  -> {RUN_TITLES[run]}: {result.walls[run]:.1f}s wall; time to ready {summary} "
            f"({len(ready)}/{len(SCENARIOS)} ready)"
        )
    return lines


def _collapse(kinds: list[str]) -> list[str]:
    """Drop immediate repeats (a loader may fetch a file more than once)."""
    return [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]


def _explain(o: Outcome) -> str:
    events = [(e["kind"], e["detail"][:60], e["client"]) for e in o.status.get("events", [])]
    return f"events {events}\nTFTP {o.tftp}\nconsole:\n{o.vm.console_tail(3000)}"


@pytest.mark.parametrize("machine", MACHINES, ids=[m.name for m in MACHINES])
def test_install_then_local_boot(fleet: Fleet, machine: Machine) -> None:
    """The API shows every phase in order, the second boot local, and a time to ready."""
    o = fleet.outcomes[machine.name]
    assert not o.vm.timed_out, f"{machine.name} did not power off\n{_explain(o)}"
    assert o.vm.proc.returncode == 0, _explain(o)
    kinds = [e["kind"] for e in o.status["events"]]
    assert _collapse(kinds) == list(EXPECTED), _explain(o)
    phases = o.status["phases"]
    assert sorted((k for k in phases if k in EXPECTED), key=phases.__getitem__) == list(EXPECTED)
    assert o.status["phase"] == "ready" and o.status["failed"] is None
    assert o.status["time_to_ready"] is not None
    assert o.status["time_to_ready"] == pytest.approx(phases["ready"], abs=0.01)
    assert {e["client"] for e in o.status["events"]} == {machine.ip}, _explain(o)
    assert read_marker(o.disk) == f"{SERVER}/cb/{machine.name}/{o.token}"
    assert "ready reported" in o.vm.console_tail(4000)


@pytest.mark.parametrize("machine", MACHINES, ids=[m.name for m in MACHINES])
def test_loader_family(fleet: Fleet, machine: Machine) -> None:
    """DHCP (set up from photonkick's printout) led each VM to the intended loader, whose
    per-MAC config offered the install first and the local disk after ``installed``."""
    o = fleet.outcomes[machine.name]
    configs = [(e["kind"], e["detail"]) for e in o.status["events"] if "config" in e["detail"]]
    loader = f"{machine.scenario.loader} config"
    assert {kind for kind, _ in configs} == {"config", "local_boot"}, _explain(o)
    assert {detail for _, detail in configs} == {loader}, _explain(o)
    boot_file = machine.scenario.boot_file
    if boot_file is not None:
        assert boot_file in o.tftp, _explain(o)
    else:
        assert not o.tftp, f"{machine.name} should not use TFTP: {o.tftp}"


@pytest.mark.parametrize("machine", MACHINES, ids=[m.name for m in MACHINES])
def test_wrong_token_refused(fleet: Fleet, machine: Machine) -> None:
    """A token one character off gets 404 for the kickstart and for callbacks, before and
    after the install, and leaves no trace in the host's timeline."""
    o = fleet.outcomes[machine.name]
    refusal = {"kickstart": 404, "installed": 404, "ready": 404}
    assert o.refused == {"before": refusal, "after": refusal}
    assert not [e for e in o.status["events"] if e["client"] == SERVER_IP]
    assert f"/ks/{machine.name}/{o.token}.json" in o.vm.serial_text(), "the real token worked"


def test_dhcp_settings_printed(fleet: Fleet) -> None:
    """``serve`` printed the boot files the lab's dnsmasq was configured from."""
    assert re.search(r"BIOS \(arch 0\)\s+lpxelinux\.0", fleet.printed)
    assert re.search(r"UEFI x64 \(arch 7, 9\)\s+grubx64\.efi", fleet.printed)
    assert re.search(rf"iPXE \(user-class\)\s+{re.escape(SERVER)}/ipxe/boot\.ipxe", fleet.printed)

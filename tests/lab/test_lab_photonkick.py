"""The real boot server end to end: ``photonkick serve`` network-installs QEMU VMs.

A Photon-shaped ISO whose installer is the stand-in guest (``isolinux/vmlinuz`` and
``isolinux/initrd.img``; ``RPMS/repodata/repomd.xml`` for its repo check) goes through the
real ``photonkick import-iso``; ``photonkick serve`` then runs inside the lab namespace on
192.0.2.1 (HTTP 8080, TFTP 69) with its own DHCP: ``--dhcp full`` (photonkick's dnsmasq
hands out the addresses and the boot answers), or ``--dhcp proxy`` beside a plain DHCP
server on another machine of the network (192.0.2.2) that hands out addresses and no boot
options at all. No DHCP configuration is written by the tests. Each scenario is one kind of
machine:

===================== ===== ======== ======== ======= ==========================================
scenario              DHCP  firmware NIC      NIC ROM what DHCP hands it, and what it fetches
===================== ===== ======== ======== ======= ==========================================
bios-ipxe-vmxnet3     full  SeaBIOS  vmxnet3  iPXE    the iPXE chain -> ``ipxe/<mac>.ipxe``
bios-lpxelinux-virtio full  SeaBIOS  virtio   iPXE    ``lpxelinux.0`` over TFTP, though the ROM
                                                      is iPXE (host key ``loader: pxelinux``)
                                                      -> ``pxelinux.cfg/01-<mac>``
uefi-grub-virtio      full  OVMF     virtio   none    OVMF's own PXE: ``grubx64.efi`` ->
                                                      ``grub/grub.cfg-01-<mac>``
uefi-ipxe-vmxnet3     full  OVMF     vmxnet3  iPXE    the iPXE chain (UEFI iPXE) ->
                                                      ``ipxe/<mac>.ipxe``
uefi-http-virtio      full  OVMF     virtio   none    OVMF's HTTP boot (its PXE off): the
                                                      ``snponly.efi`` URL -> ``ipxe/<mac>.ipxe``,
                                                      no TFTP at all
bios-ipxe-vmxnet3     proxy SeaBIOS  vmxnet3  iPXE    as in full mode, boot answer by proxy
uefi-grub-virtio      proxy OVMF     virtio   none    as in full mode, boot answer by proxy
===================== ===== ======== ======== ======= ==========================================

In full mode the spec has two hosts per scenario: ``solo-<scenario>`` VMs boot one at a
time, then the five ``fleet-<scenario>`` VMs boot at once; the ``proxy-<scenario>`` VMs
boot one at a time against their own server. Each VM installs (kernel and initrd over HTTP,
kickstart, repo, ``installed``), reboots, is told by the same loader to boot its disk
(netboot-once), boots the disk and reports ``firstboot`` and ``ready``. Everything asserted
about a host's progress comes from the server's own API.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from photon_iso import PhotonIsoSpec, build_photon_iso

from lab.guest import Guest, read_marker
from lab.netlab import SERVER_IP, Client, NetLab, netlab, wait_for
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
#: recorded for VMs photonkick creates itself), ``dhcp`` events left out: every DHCP
#: exchange (ROM, loader, installer, installed host) adds its own.
EXPECTED = (
    "config", "kernel", "initrd", "kickstart", "repo", "installed",
    "local_boot", "firstboot", "ready",
)  # fmt: skip
Run = Literal["solo", "fleet", "proxy"]
RUNS: tuple[Run, ...] = ("solo", "fleet", "proxy")
RUN_TITLES = {
    "solo": "--dhcp full, one VM at a time",
    "fleet": "--dhcp full, all VMs at once",
    "proxy": "--dhcp proxy, one VM at a time",
}


Mode = Literal["full", "proxy"]


@dataclass(frozen=True)
class Scenario:
    """A kind of machine: firmware, NIC, the loader family it must use, and the host key
    ``loader`` its spec host sets (``auto``: the key is left out)."""

    name: str
    firmware: Firmware
    nic: Nic
    ipxe_rom: bool
    loader: Literal["ipxe", "grub", "pxelinux"]
    ovmf_pxe: bool = True
    http_boot: bool = False
    host_loader: Literal["auto", "ipxe", "grub", "pxelinux"] = "auto"

    @property
    def boot_file(self) -> str | None:
        """The file the firmware itself fetches over TFTP (None: no TFTP at all)."""
        return {"grub": "grubx64.efi", "pxelinux": "lpxelinux.0"}.get(self.loader)


BIOS_IPXE = Scenario("bios-ipxe-vmxnet3", "bios", "vmxnet3", ipxe_rom=True, loader="ipxe")
UEFI_GRUB = Scenario("uefi-grub-virtio", "uefi", "virtio", ipxe_rom=False, loader="grub")
SCENARIOS: tuple[Scenario, ...] = (
    BIOS_IPXE,
    # QEMU's ROMs are all iPXE: without the host's loader key it would get the iPXE chain.
    Scenario(
        "bios-lpxelinux-virtio", "bios", "virtio", True, loader="pxelinux", host_loader="pxelinux"
    ),
    UEFI_GRUB,
    # OVMF's own PXE is off: iPXE's "exit 1" (boot the disk) must fall through to the disk.
    Scenario("uefi-ipxe-vmxnet3", "uefi", "vmxnet3", ipxe_rom=True, loader="ipxe", ovmf_pxe=False),
    # OVMF's PXE is off, so its IPv4 HTTP boot option asks DHCP (vendor class HTTPClient).
    Scenario(
        "uefi-http-virtio", "uefi", "virtio", False, loader="ipxe", ovmf_pxe=False, http_boot=True
    ),
)
PROXY_SCENARIOS: tuple[Scenario, ...] = (BIOS_IPXE, UEFI_GRUB)
#: The network's own DHCP server in the proxy scenarios (another machine of the namespace).
PLAIN_DHCP_IP = "192.0.2.2"
#: The address range photonkick's full-mode DHCP leases from.
FULL_RANGE = ("192.0.2.100", "192.0.2.199")


@dataclass(frozen=True)
class Machine:
    """One host of a spec and its VM: a scenario in one of the runs."""

    scenario: Scenario
    run: Run

    @property
    def mode(self) -> Mode:
        return "proxy" if self.run == "proxy" else "full"

    @property
    def number(self) -> int:
        return MACHINES.index(self)

    @property
    def name(self) -> str:
        return f"{self.run}-{self.scenario.name}"

    @property
    def mac(self) -> str:
        return f"52:54:00:5e:01:{self.number + 0x21:02x}"

    @property
    def ip(self) -> str:
        """The address the plain DHCP server reserves for it (proxy runs only)."""
        return f"192.0.2.{self.number + 21}"

    @property
    def client(self) -> Client:
        return Client(self.name, self.mac, self.ip)


MACHINES: tuple[Machine, ...] = tuple(
    [Machine(s, run) for run in ("solo", "fleet") for s in SCENARIOS]
    + [Machine(s, "proxy") for s in PROXY_SCENARIOS]
)


def spec_yaml(mode: Mode) -> str:
    """The spec served: one host per machine of ``mode``, photonkick's DHCP in that mode,
    its defaults for everything else (the interface is the one holding server.url's address).
    """
    lines = ["photon:", f'  release: "{RELEASE}"', "server:", f"  url: {SERVER}"]
    lines += ["  dhcp:", f"    mode: {mode}"]
    if mode == "full":
        lines.append(f"    range: {FULL_RANGE[0]}-{FULL_RANGE[1]}")
    lines.append("hosts:")
    for m in MACHINES:
        if m.mode == mode:
            firmware = "efi" if m.scenario.firmware == "uefi" else "bios"
            lines += [f"  - name: {m.name}", f'    mac: "{m.mac}"', f"    firmware: {firmware}"]
            if m.scenario.host_loader != "auto":
                lines.append(f"    loader: {m.scenario.host_loader}")
    return "\n".join(lines) + "\n"


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
    #: Status of the right kickstart URL fetched from an address not leased to the host
    #: (full mode only: in proxy mode photonkick leases nothing).
    foreign: int | None

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.status.get("events", []))

    def first(self, kind: str) -> float | None:
        """Seconds from power-on to the first event of ``kind``."""
        times = [e["time"] for e in self.events if e["kind"] == kind]
        return times[0] - self.powered_on if times else None


@dataclass
class Fleet:
    """Both runs against one server."""

    outcomes: dict[str, Outcome]
    walls: dict[Run, float]
    printed: str
    serve_log: str


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


def _start_serve(lab: NetLab, workdir: Path, data: Path, mode: Mode) -> tuple[Path, Path]:
    """``photonkick serve --dhcp MODE`` in the namespace; its state folder and its log."""
    spec = workdir / "spec.yaml"
    spec.write_text(spec_yaml(mode))
    state = workdir / "state"
    log = workdir / "serve.log"
    serve = lab.spawn(
        [str(PHOTONKICK), "serve", str(spec), "--state", str(state), "--data", str(data),
         "--http", f"{SERVER_IP}:{PORT}", "--tftp", f"{SERVER_IP}:69", "--dhcp", mode],
        log,
    )  # fmt: skip

    def started() -> bool:
        if serve.poll() is not None:
            raise RuntimeError(f"photonkick serve exited {serve.returncode}:\n{log.read_text()}")
        return "  DHCP       " in log.read_text()

    wait_for(started, SERVE_START_TIMEOUT, lambda: f"photonkick serve:\n{log.read_text()}")
    lab.wait_listening(PORT, 10, proc=serve)
    lab.wait_listening(69, 10, udp=True, proc=serve)
    return state, log


def _boot(lab: NetLab, guest: Guest, accel: str, workdir: Path, data: Path, mode: Mode) -> Fleet:
    """Install every machine of ``mode`` through ``photonkick serve --dhcp MODE``."""
    machines = [m for m in MACHINES if m.mode == mode]
    runs = [run for run in RUNS if any(m.run == run for m in machines)]
    if mode == "proxy":
        lab.start_plain_dhcp([m.client for m in machines], PLAIN_DHCP_IP)
    state, serve_log = _start_serve(lab, workdir, data, mode)
    printed = serve_log.read_text()
    states = StateDir(state)
    tokens = {m.name: states.build(m.name).token(m.name) for m in machines}
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
    before = {m.name: refusals(m) for m in machines}
    # The right token from an address DHCP never leased to the host's MAC (the server's own).
    foreign = {
        m.name: http(lab, "GET", f"{SERVER}/ks/{m.name}/{tokens[m.name]}.json")[0]
        for m in machines
        if mode == "full"
    }
    specs = {
        m.name: VmSpec(
            name=m.name,
            mac=m.mac,
            tap=lab.taps[m.number],
            firmware=m.scenario.firmware,
            nic=m.scenario.nic,
            ipxe_rom=m.scenario.ipxe_rom,
            ovmf_pxe=m.scenario.ovmf_pxe,
            disk=guest.new_disk(workdir / f"{m.name}.img"),
        )
        for m in machines
    }
    vms: dict[str, Vm] = {}
    walls: dict[Run, float] = {}
    powered_on: dict[str, float] = {}
    for run in runs:
        batch = [specs[m.name] for m in machines if m.run == run]
        began = time.monotonic()
        parallel = len(batch) if run == "fleet" else 1
        done = run_vms(lab, batch, accel, VM_TIMEOUT, parallel=parallel)
        walls[run] = time.monotonic() - began
        offset = time.time() - time.monotonic()
        powered_on.update({name: vm.started + offset for name, vm in done.items()})
        vms.update(done)
    # After the installs too: a late near-miss must not count as a report.
    after = {m.name: refusals(m) for m in machines}
    outcomes: dict[str, Outcome] = {}
    for m in machines:
        code, body = http(lab, "GET", f"{SERVER}/api/v1/hosts/{m.name}")
        assert code == 200, body
        disk = specs[m.name].disk
        assert disk is not None
        tftp = [p.detail for p in list(lab.packets) if p.kind == "tftp" and p.mac == m.mac]
        outcomes[m.name] = Outcome(
            m,
            vms[m.name],
            disk,
            json.loads(body),
            tokens[m.name],
            powered_on[m.name],
            {"before": before[m.name], "after": after[m.name]},
            tftp,
            foreign.get(m.name),
        )
    return Fleet(outcomes, walls, printed, serve_log.read_text())


@pytest.fixture(scope="module")
def lab_data(lab_guest: Guest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The imported release both servers serve."""
    return _import_iso(lab_guest, tmp_path_factory.mktemp("lab-photonkick-data"))


@pytest.fixture(scope="module")
def boot_mode(
    lab_guest: Guest,
    lab_accel: str,
    lab_report: list[str],
    lab_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[Mode], Fleet]:
    """Install every machine of a DHCP mode in a namespace of its own; its timings go to
    the end-of-session report."""

    def run(mode: Mode) -> Fleet:
        workdir = tmp_path_factory.mktemp(f"lab-photonkick-{mode}")
        with netlab(len(MACHINES), workdir) as lab:
            lab.watch()
            result = _boot(lab, lab_guest, lab_accel, workdir, lab_data, mode)
        lab_report.extend(_table(result, lab_accel))
        return result

    return run


@pytest.fixture(scope="module")
def fleet(boot_mode: Callable[[Mode], Fleet]) -> Fleet:
    """Every full-mode machine through ``serve --dhcp full``: solo VMs, then the fleet."""
    return boot_mode("full")


@pytest.fixture(scope="module")
def proxy_fleet(boot_mode: Callable[[Mode], Fleet]) -> Fleet:
    """The proxy machines through ``serve --dhcp proxy`` beside a plain DHCP server."""
    return boot_mode("proxy")


def fleet_of(request: pytest.FixtureRequest, machine: Machine) -> Fleet:
    """The run a machine belongs to (its fixture starts only when a test needs it)."""
    name = "proxy_fleet" if machine.mode == "proxy" else "fleet"
    result: Fleet = request.getfixturevalue(name)
    return result


def _table(result: Fleet, accel: str) -> list[str]:
    """Phase offsets per VM and time to ready per run, for the end-of-session report.

    ``dhcp`` and ``config`` are power-on to the host's first DHCP packet and to its first
    per-MAC config fetch (firmware, DHCP, loader); the phases after them are seconds from
    the first DHCP packet (server API), ``to_ready`` the server's time to ready (also from
    the first DHCP packet) and ``on->ready`` power-on to ``ready``.
    """
    columns = ("dhcp", "config", *EXPECTED[1:], "to_ready", "on->ready")
    lines = [
        f"photonkick serve, accel={accel}: dhcp, config: seconds from power-on; phases, "
        "to_ready: from the host's first DHCP packet (server API)",
        f"  {'VM':28}" + "".join(f"{c:>11}" for c in columns),
    ]
    for run in RUNS:
        if run not in result.walls:
            continue
        ready: list[float] = []
        for o in result.outcomes.values():
            if o.machine.run != run:
                continue
            phases = o.status.get("phases", {})
            to_ready = o.status.get("time_to_ready")
            dhcp = o.first("dhcp")
            on_ready = None
            if to_ready is not None:
                ready.append(to_ready)
                on_ready = None if dhcp is None else dhcp + to_ready
            cells = [dhcp, o.first("config"), *(phases.get(c) for c in EXPECTED[1:])]
            cells += [to_ready, on_ready]
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
        count = sum(1 for o in result.outcomes.values() if o.machine.run == run)
        lines.append(
            f"  -> {RUN_TITLES[run]}: {result.walls[run]:.1f}s wall; time to ready {summary} "
            f"({len(ready)}/{count} ready)"
        )
    return lines


def _collapse(kinds: list[str]) -> list[str]:
    """Drop immediate repeats (a loader may fetch a file more than once)."""
    return [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]


def _explain(o: Outcome) -> str:
    events = [(e["kind"], e["detail"][:70], e["client"]) for e in o.events]
    return f"events {events}\nTFTP {o.tftp}\nconsole:\n{o.vm.console_tail(3000)}"


def _booted_from(o: Outcome) -> str:
    """The one address every non-DHCP request of the host came from."""
    clients = {e["client"] for e in o.events if e["kind"] != "dhcp"}
    assert len(clients) == 1, _explain(o)
    (client,) = clients
    return str(client)


PARAMS = pytest.mark.parametrize(
    "machine",
    MACHINES,
    ids=[m.name for m in MACHINES],
)


@PARAMS
def test_install_then_local_boot(request: pytest.FixtureRequest, machine: Machine) -> None:
    """The API shows DHCP first, then every phase in order, the second boot local, and a
    time to ready counted from the first DHCP packet."""
    o = fleet_of(request, machine).outcomes[machine.name]
    assert not o.vm.timed_out, f"{machine.name} did not power off\n{_explain(o)}"
    assert o.vm.proc.returncode == 0, _explain(o)
    kinds = [e["kind"] for e in o.events]
    assert kinds[0] == "dhcp", _explain(o)
    assert _collapse([k for k in kinds if k != "dhcp"]) == list(EXPECTED), _explain(o)
    phases = o.status["phases"]
    assert phases["dhcp"] == 0
    assert sorted((k for k in phases if k in EXPECTED), key=phases.__getitem__) == list(EXPECTED)
    assert o.status["phase"] == "ready" and o.status["failed"] is None
    assert o.status["time_to_ready"] is not None
    assert o.status["time_to_ready"] == pytest.approx(phases["ready"], abs=0.01)
    assert read_marker(o.disk) == f"{SERVER}/cb/{machine.name}/{o.token}"
    assert "ready reported" in o.vm.console_tail(4000)


@PARAMS
def test_dhcp_phase_and_address(request: pytest.FixtureRequest, machine: Machine) -> None:
    """photonkick's dnsmasq saw the host's DHCP packets: in full mode it leased the one
    address everything came from (ROM, loader, installer, installed host); in proxy mode it
    answered the boot request, and the address is the one the network's own server gave."""
    o = fleet_of(request, machine).outcomes[machine.name]
    client = _booted_from(o)
    details = [e["detail"] for e in o.events if e["kind"] == "dhcp"]
    if machine.mode == "full":
        acks = {e["client"] for e in o.events if e["detail"].startswith("DHCPACK")}
        assert acks == {client}, _explain(o)
        first, last = (int(ip.rsplit(".", 1)[1]) for ip in FULL_RANGE)
        assert first <= int(client.rsplit(".", 1)[1]) <= last
    else:
        assert client == machine.ip, _explain(o)
        assert [d for d in details if d.startswith("PXE")], _explain(o)
    if machine.scenario.http_boot:
        assert [d for d in details if "HTTPClient" in d and "snponly.efi" in d], details


@PARAMS
def test_loader_family(request: pytest.FixtureRequest, machine: Machine) -> None:
    """DHCP led each VM to the intended loader, whose per-MAC config offered the install
    first and the local disk after ``installed``; the HTTP-boot VM used no TFTP at all."""
    o = fleet_of(request, machine).outcomes[machine.name]
    configs = [(e["kind"], e["detail"]) for e in o.events if "config" in e["detail"]]
    loader = f"{machine.scenario.loader} config"
    assert {kind for kind, _ in configs} == {"config", "local_boot"}, _explain(o)
    assert {detail for _, detail in configs} == {loader}, _explain(o)
    boot_file = machine.scenario.boot_file
    if boot_file is not None:
        assert boot_file in o.tftp, _explain(o)
    else:
        assert not o.tftp, f"{machine.name} should not use TFTP: {o.tftp}"
        assert not [e for e in o.events if e["kind"] in ("tftp", "boot_file")], _explain(o)


@PARAMS
def test_wrong_token_refused(request: pytest.FixtureRequest, machine: Machine) -> None:
    """A token one character off gets 404 for the kickstart and for callbacks, before and
    after the install, and leaves no trace in the host's timeline."""
    o = fleet_of(request, machine).outcomes[machine.name]
    refusal = {"kickstart": 404, "installed": 404, "ready": 404}
    assert o.refused == {"before": refusal, "after": refusal}
    assert not [e for e in o.events if e["client"] == SERVER_IP]
    assert f"/ks/{machine.name}/{o.token}.json" in o.vm.serial_text(), "the real token worked"


@pytest.mark.parametrize(
    "machine", [m for m in MACHINES if m.mode == "full"], ids=lambda m: str(m.name)
)
def test_kickstart_bound_to_lease(fleet: Fleet, machine: Machine) -> None:
    """The right kickstart URL fetched from an address DHCP never leased to the host's MAC
    (the server's own, in the namespace) is refused and leaves no trace; the VM, fetching
    from its leased address, got it."""
    o = fleet.outcomes[machine.name]
    assert o.foreign == 404
    assert f"kickstart for {machine.name} refused: DHCP leased nothing to {machine.mac}" in (
        fleet.serve_log
    )
    kickstarts = [e["client"] for e in o.events if e["kind"] == "kickstart"]
    assert kickstarts == [_booted_from(o)], _explain(o)


def test_dhcp_modes_announced(fleet: Fleet, proxy_fleet: Fleet) -> None:
    """``serve`` said which DHCP it runs, and printed no settings for a user's own server."""
    assert "DHCP       full on pkbr0 (192.0.2.0/24)" in fleet.printed
    assert "DHCP       proxy on pkbr0 (192.0.2.0/24)" in proxy_fleet.printed
    assert "DHCP settings for photonkick" not in fleet.printed + proxy_fleet.printed

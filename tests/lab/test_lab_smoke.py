"""The lab harness end to end, with a stand-in boot server written here.

Five VMs boot in one private namespace (as many at once as there are cores), each
through a different firmware and loader, install the stand-in guest, reboot into it from
the disk and report:

==================== ======== ======== ========= ==========================================
VM                   firmware NIC      NIC ROM   network loader
==================== ======== ======== ========= ==========================================
bios-pxelinux-virtio SeaBIOS  virtio   iPXE      pxelinux.0 (TFTP), kernel over HTTP
bios-ipxe-vmxnet3    SeaBIOS  vmxnet3  iPXE      iPXE script over HTTP
uefi-grub-virtio     OVMF     virtio   none      OVMF's own PXE, network GRUB (TFTP)
uefi-grub-vmxnet3    OVMF     vmxnet3  iPXE      iPXE (UEFI), network GRUB (TFTP)
uefi-ipxe-virtio     OVMF     virtio   iPXE      iPXE script; ``exit 1`` falls to the disk
==================== ======== ======== ========= ==========================================

The stand-in answers like photonkick: a per-MAC install config until the host POSTs
``installed``, a "boot the local disk" config after it. Its TFTP side is tftpd-hpa; its
HTTP side is ``http.server`` on a socket created inside the namespace.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from lab.guest import REPOMD, Guest, read_marker
from lab.netlab import SERVER_IP, BootFiles, BootKind, Client, NetLab, netlab
from lab.qemu import Firmware, Nic, Vm, VmSpec, run_vms

pytestmark = pytest.mark.lab

PORT = 8080
SERVER = f"http://{SERVER_IP}:{PORT}"
VM_TIMEOUT = 180.0
PXELINUX_DIR = Path("/usr/lib/PXELINUX")
SYSLINUX_BIOS = Path("/usr/lib/syslinux/modules/bios")
NET_GRUB_MODULES = (
    "efinet", "tftp", "http", "net", "normal", "linux", "configfile", "echo", "test",
    "search", "search_fs_file", "chain", "part_msdos", "part_gpt", "fat",
)  # fmt: skip
PHASES = ("loader", "config", "kernel", "initrd", "ks", "repomd", "installed")
EXPECTED = (*PHASES, "loader", "config", "firstboot", "ready")


@dataclass(frozen=True)
class Scenario:
    """One VM of the smoke run."""

    name: str
    firmware: Firmware
    nic: Nic
    boot: BootKind
    ipxe_rom: bool
    ovmf_pxe: bool = True

    @property
    def mac(self) -> str:
        return f"52:54:00:5e:00:{SCENARIOS.index(self) + 0x11:02x}"

    @property
    def ip(self) -> str:
        return f"192.0.2.{SCENARIOS.index(self) + 11}"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("uefi-grub-virtio", "uefi", "virtio", "auto", ipxe_rom=False),
    Scenario("uefi-grub-vmxnet3", "uefi", "vmxnet3", "auto", ipxe_rom=True),
    Scenario("uefi-ipxe-virtio", "uefi", "virtio", "ipxe", ipxe_rom=True, ovmf_pxe=False),
    Scenario("bios-pxelinux-virtio", "bios", "virtio", "bios", ipxe_rom=True),
    Scenario("bios-ipxe-vmxnet3", "bios", "vmxnet3", "auto", ipxe_rom=True),
)


@dataclass(frozen=True)
class Hit:
    """One request the stand-in saw: over HTTP, or a TFTP read request on the wire."""

    t: float
    client: str
    proto: str
    method: str
    path: str
    status: int


def _dashes(mac: str) -> str:
    return mac.lower().replace(":", "-")


class StandInServer:
    """A minimal boot server: tftpd-hpa for loaders and configs, HTTP for the rest."""

    def __init__(self, lab: NetLab, guest: Guest, clients: list[Client], root: Path) -> None:
        self.lab = lab
        self.guest = guest
        self.clients = {c.name: c for c in clients}
        self.tokens = {c.name: secrets.token_hex(8) for c in clients}
        self.installed: set[str] = set()
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self.tftp = root / "tftp"
        (self.tftp / "pxelinux.cfg").mkdir(parents=True)
        (self.tftp / "grub").mkdir()
        shutil.copy(PXELINUX_DIR / "pxelinux.0", self.tftp)
        shutil.copy(SYSLINUX_BIOS / "ldlinux.c32", self.tftp)
        subprocess.run(
            ["grub-mkimage", "-O", "x86_64-efi", "-p", f"(tftp,{SERVER_IP})/grub",
             "-o", str(self.tftp / "grubx64.efi"), *NET_GRUB_MODULES],
            check=True, capture_output=True,
        )  # fmt: skip
        for client in clients:
            self._write_configs(client)

    # -- what the server answers -------------------------------------------------------

    def kickstart_url(self, name: str) -> str:
        return f"{SERVER}/ks/{name}/{self.tokens[name]}.json"

    def callback_base(self, name: str) -> str:
        return f"{SERVER}/cb/{name}/{self.tokens[name]}"

    def cmdline(self, client: Client) -> str:
        """pxelinux clients: the guest's own line; others: photonkick's installer line.

        The latter has no ``console=`` and no ``pk_host=``: the guest then reports on
        ttyS0 anyway and checks the kickstart's hostname against the DHCP one.
        """
        ks, repos = f"ks={self.kickstart_url(client.name)}", f"repos={SERVER}/repo"
        if client.boot == "bios":
            return self.guest.cmdline(ks, repos, f"pk_host={client.name}")
        return f"root=/dev/ram0 loglevel=3 {ks} {repos} insecure_installation=1"

    def kickstart(self, name: str) -> dict[str, Any]:
        report = (
            "pk_report() { curl -fsS --retry 10 --retry-delay 3 --retry-connrefused "
            f'--max-time 30 -X POST "{self.callback_base(name)}/$1" "${{@:2}}" '
            ">/dev/null || true; }"
        )
        return {
            "hostname": name,
            "disk": "/dev/vda",
            "repos": {"photon": {"baseurl": f"{SERVER}/repo", "enabled": 1}},
            "postinstall": ["#!/bin/bash", report, "pk_report installed"],
        }

    def _write_configs(self, client: Client) -> None:
        installed = client.name in self.installed
        kernel, initrd = f"{SERVER}/guest/vmlinuz", f"{SERVER}/guest/initrd.img"
        if installed:
            pxelinux = "SERIAL 0 115200\nDEFAULT local\nPROMPT 0\nLABEL local\n  LOCALBOOT 0\n"
            grub = (
                "echo 'stand-in: installed, booting the local disk'\n"
                "search --no-floppy --file --set=root /EFI/BOOT/BOOTX64.EFI\n"
                "chainloader ($root)/EFI/BOOT/BOOTX64.EFI\nboot\n"
            )
        else:
            pxelinux = (
                "SERIAL 0 115200\nDEFAULT install\nPROMPT 0\nTIMEOUT 0\nLABEL install\n"
                f"  KERNEL {kernel}\n  APPEND initrd={initrd} {self.cmdline(client)}\n"
            )
            grub = (
                "echo 'stand-in: install'\n"
                f"linux (http,{SERVER_IP}:{PORT})/guest/vmlinuz {self.cmdline(client)}\n"
                f"initrd (http,{SERVER_IP}:{PORT})/guest/initrd.img\nboot\n"
            )
        _replace(self.tftp / "pxelinux.cfg" / f"01-{_dashes(client.mac)}", pxelinux)
        _replace(self.tftp / "grub" / f"grub.cfg-01-{_dashes(client.mac)}", grub)

    def ipxe_script(self, mac: str) -> str:
        client = next((c for c in self.clients.values() if _dashes(c.mac) == mac), None)
        if client is None or client.name in self.installed:
            return "#!ipxe\necho stand-in: booting the local disk\nexit 1\n"
        return (
            "#!ipxe\n"
            f"kernel {SERVER}/guest/vmlinuz initrd=initrd.img {self.cmdline(client)}\n"
            f"initrd --name initrd.img {SERVER}/guest/initrd.img\n"
            "boot || exit 1\n"
        )

    def get(self, path: str) -> tuple[int, bytes | Path]:
        if path == "/guest/vmlinuz":
            return 200, self.guest.kernel
        if path == "/guest/initrd.img":
            return 200, self.guest.initrd
        if path == "/ipxe/boot.ipxe":
            return 200, f"#!ipxe\nchain {SERVER}/ipxe/${{mac:hexhyp}}.ipxe || exit 1\n".encode()
        if path.startswith("/ipxe/") and path.endswith(".ipxe"):
            return 200, self.ipxe_script(path[len("/ipxe/") : -len(".ipxe")]).encode()
        if path == "/repo/repodata/repomd.xml":
            return 200, REPOMD.encode()
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "ks" and f"{self.tokens.get(parts[1])}.json" == parts[2]:
            return 200, json.dumps(self.kickstart(parts[1]), indent=2).encode()
        return 404, b"not found\n"

    def post(self, path: str) -> int:
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "cb" or self.tokens.get(parts[1]) != parts[2]:
            return 403
        name, event = parts[1], parts[3]
        if event == "installed":
            with self._lock:
                self.installed.add(name)
            self._write_configs(self.clients[name])
        return 200

    # -- plumbing ------------------------------------------------------------------------

    def record(self, client: str, proto: str, method: str, path: str, status: int) -> None:
        with self._lock:
            self.hits.append(Hit(time.monotonic(), client, proto, method, path, status))

    def start(self) -> None:
        """tftpd-hpa and the HTTP server, both on 192.0.2.1 inside the lab."""
        self.lab.start_tftpd(self.tftp)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _reply(self, status: int, body: bytes | Path) -> None:
                server.record(self.client_address[0], "http", self.command, self.path, status)
                size = body.stat().st_size if isinstance(body, Path) else len(body)
                self.send_response(status)
                self.send_header("Content-Length", str(size))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if self.command == "HEAD":
                    return
                if isinstance(body, Path):
                    with body.open("rb") as f:
                        shutil.copyfileobj(f, self.wfile, 1 << 20)
                else:
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self._reply(*server.get(self.path))

            def do_HEAD(self) -> None:
                self._reply(*server.get(self.path))

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._reply(server.post(self.path), b"ok\n")

        httpd = self.lab.inside(lambda: ThreadingHTTPServer((SERVER_IP, PORT), Handler))
        thread = threading.Thread(target=httpd.serve_forever, daemon=True, name="stand-in-http")
        thread.start()
        self.lab.on_teardown(httpd.server_close)
        self.lab.on_teardown(httpd.shutdown)

    def hits_of(self, client: Client) -> list[Hit]:
        """HTTP requests and TFTP read requests from ``client``, in time order."""
        with self._lock:
            hits = [h for h in self.hits if h.client == client.ip]
        tftp = [
            Hit(p.t, p.src_ip, "tftp", "RRQ", p.detail.lstrip("/"), 0)
            for p in list(self.lab.packets)
            if p.kind == "tftp" and p.src_ip == client.ip
        ]
        return sorted(hits + tftp, key=lambda h: h.t)


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.rename(path)


def phase_of(hit: Hit) -> str | None:
    """The boot phase a request stands for, None for requests that mark none."""
    path = hit.path.split("?")[0]
    if path in ("pxelinux.0", "lpxelinux.0", "grubx64.efi", "/ipxe/boot.ipxe"):
        return "loader"
    if path.startswith(("pxelinux.cfg/01-", "grub/grub.cfg-01-")) or (
        path.startswith("/ipxe/") and path.endswith(".ipxe")
    ):
        return "config"
    named = {
        "/guest/vmlinuz": "kernel",
        "/guest/initrd.img": "initrd",
        "/repo/repodata/repomd.xml": "repomd",
    }
    if path in named:
        return named[path]
    if path.startswith("/ks/"):
        return "ks"
    if path.startswith("/cb/"):
        return path.rsplit("/", 1)[-1]
    return None


def collapse(phases: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """Drop immediate repeats (loaders ask for a config twice, firmware retries TFTP)."""
    out: list[tuple[float, str]] = []
    for t, phase in phases:
        if not out or out[-1][1] != phase:
            out.append((t, phase))
    return out


@dataclass
class Outcome:
    """What one scenario's VM did."""

    scenario: Scenario
    client: Client
    vm: Vm
    disk: Path
    phases: list[tuple[float, str]]
    hits: list[Hit]
    dhcp: list[tuple[float, str]]
    callback_base: str


@pytest.fixture(scope="module")
def smoke(
    lab_guest: Guest,
    lab_accel: str,
    lab_report: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Outcome]]:
    """Boot every scenario's VM through the stand-in server; their outcomes by name."""
    workdir = tmp_path_factory.mktemp("lab-smoke")
    clients = [Client(s.name, s.mac, s.ip, boot=s.boot) for s in SCENARIOS]
    with netlab(len(SCENARIOS), workdir) as lab:
        lab.watch()
        server = StandInServer(lab, lab_guest, clients, workdir)
        server.start()
        lab.start_dnsmasq(clients, BootFiles(bios="pxelinux.0", ipxe=f"{SERVER}/ipxe/boot.ipxe"))
        specs = [
            VmSpec(
                name=s.name,
                mac=s.mac,
                tap=lab.taps[i],
                firmware=s.firmware,
                nic=s.nic,
                ipxe_rom=s.ipxe_rom,
                ovmf_pxe=s.ovmf_pxe,
                disk=lab_guest.new_disk(workdir / f"{s.name}.img"),
            )
            for i, s in enumerate(SCENARIOS)
        ]
        began = time.monotonic()
        vms = run_vms(lab, specs, lab_accel, VM_TIMEOUT, parallel=os.cpu_count() or 2)
        wall = time.monotonic() - began
        outcomes: dict[str, Outcome] = {}
        for s, client, spec in zip(SCENARIOS, clients, specs, strict=True):
            vm = vms[s.name]
            hits = server.hits_of(client)
            marked = [(h.t - vm.started, p) for h in hits if (p := phase_of(h))]
            dhcp = [
                (p.t - vm.started, p.detail)
                for p in list(lab.packets)
                if p.kind == "dhcp" and p.mac == client.mac and p.detail.startswith("DISCOVER")
            ]
            assert spec.disk is not None
            outcomes[s.name] = Outcome(
                s, client, vm, spec.disk, collapse(marked), hits, dhcp, server.callback_base(s.name)
            )
        lab_report.extend(_table(outcomes, lab_accel, wall))
        yield outcomes


def _table(outcomes: dict[str, Outcome], accel: str, wall: float) -> list[str]:
    columns = (
        *("dhcp", "loader", "kernel", "linux", "ks", "installed"),
        *("config#2", "firstboot", "ready", "off"),
    )
    lines = [
        f"smoke: {len(outcomes)} VMs, accel={accel}, {wall:.1f}s wall; "
        "seconds after each VM's start",
        f"  {'VM':22}" + "".join(f"{c:>10}" for c in columns),
    ]
    for name, o in outcomes.items():
        seen: dict[str, float] = {}
        if o.dhcp:
            seen["dhcp"] = o.dhcp[0][0]
        linux = o.vm.first_line(r"PK: [0-9.]+ init ")
        if linux is not None:
            seen["linux"] = linux
        configs = 0
        for t, phase in o.phases:
            if phase == "config":
                configs += 1
                if configs == 2:
                    seen["config#2"] = t
            seen.setdefault(phase, t)
        if o.vm.ended is not None and not o.vm.timed_out:
            seen["off"] = o.vm.ended - o.vm.started
        cells = "".join(f"{seen[c]:>10.1f}" if c in seen else f"{'-':>10}" for c in columns)
        lines.append(f"  {name:22}{cells}")
    return lines


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_install_then_disk_boot(smoke: dict[str, Outcome], scenario: Scenario) -> None:
    """Config -> kernel -> initrd -> ks -> repomd -> installed -> disk -> firstboot -> ready."""
    o = smoke[scenario.name]
    console = o.vm.console_tail(4000)
    assert not o.vm.timed_out, f"{scenario.name} did not power off; console:\n{console}"
    assert o.vm.proc.returncode == 0, console
    assert [p for _, p in o.phases] == list(EXPECTED), (
        f"phases {o.phases}\nrequests {o.hits}\nconsole:\n{console}"
    )
    assert [h.path for h in o.hits if phase_of(h) == "kernel"] == ["/guest/vmlinuz"], (
        "the second boot must come from the disk, not the network"
    )
    declined = urlsplit(BootFiles().uefi_http).path  # OVMF's HTTP boot, turned away on purpose
    errors = [h for h in o.hits if h.proto == "http" and h.status >= 400 and h.path != declined]
    assert not errors, errors
    assert read_marker(o.disk) == o.callback_base, "the install boot's marker on the disk"
    assert "ready reported" in console


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_firmware_asked_as_expected(smoke: dict[str, Outcome], scenario: Scenario) -> None:
    """The first DHCP request tells the firmware apart: arch 0 or 7, iPXE or not."""
    o = smoke[scenario.name]
    assert o.dhcp, "no DHCPDISCOVER seen from the firmware"
    first = o.dhcp[0][1]
    arch = 7 if scenario.firmware == "uefi" else 0
    assert f"arch={arch} " in first
    assert ("user_class='iPXE'" in first) == scenario.ipxe_rom

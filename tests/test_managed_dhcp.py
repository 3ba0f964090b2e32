"""`photonkick serve --dhcp full|proxy` with the real dnsmasq, in network namespaces of its own.

A DHCP client in another namespace (raw DHCP packets, see dhcp_client.py) plays BIOS, UEFI
x64 and iPXE firmware. Needs root, dnsmasq and iproute2; skips, saying which, without them.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from dhcp_client import (
    ACK,
    ARCH_EFI_X64,
    BIOS,
    DISCOVER,
    IPXE,
    REQUEST,
    UEFI,
    UEFI_HTTP,
    DhcpClient,
    Firmware,
    Reply,
)
from dhcp_netns import BRIDGE, CLIENT_IF, OFFICE_IP, SERVER_IP, DhcpNet, create

from photonkick.kickstarts.tokens import host_token
from photonkick.server.dhcp_site import find_dnsmasq

WEB = "00:50:56:00:10:01"  # static 192.0.2.21: reserved in full mode
EFI = "00:50:56:00:10:02"  # no static address: from the range
STRANGER = "00:50:56:00:10:99"  # not in the spec
NOBODY = 65534
CHAIN = f"http://{SERVER_IP}:8080/ipxe/boot.ipxe"
NO_PXEDHCP = b"\xb0\x01\x01\xff"  # option 175: 176 (no-pxedhcp) = 1

SPEC = """\
server:
  url: http://192.0.2.1:8080
  dhcp: {range: 192.0.2.100-192.0.2.150}
hosts:
  - name: web01
    mac: "00:50:56:00:10:01"
    network: {address: 192.0.2.21/24, gateway: 192.0.2.1}
  - {name: efi01, mac: "00:50:56:00:10:02"}
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces and DHCP port 67"
    if find_dnsmasq() is None:
        return "dnsmasq is not installed (Debian package dnsmasq-base)"
    if shutil.which("ip") is None:
        return "ip is not installed (Debian package iproute2)"
    return None


@pytest.fixture
def net() -> Iterator[DhcpNet]:
    why = _missing()
    if why:
        pytest.skip(why)
    built = create()
    try:
        yield built
    finally:
        for ns in (built.server, built.client, built.office):
            _kill_namespace_processes(ns)
        built.delete()


def _kill_namespace_processes(ns: str) -> None:
    """End what this test started in ``ns`` (serve, dnsmasq) by process id."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    for pid in out.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


class Serve:
    """`photonkick serve` running in the server namespace, its output collected."""

    def __init__(
        self, net: DhcpNet, spec: Path, *args: str, wrap: Sequence[str] = (), group: bool = False
    ) -> None:
        """``group``: serve leads a process group of its own (to be killed as a group)."""
        argv = [*wrap, sys.executable, "-m", "photonkick.server", "serve", str(spec)]
        argv += ["--http", f"{SERVER_IP}:8080", "--tftp", f"{SERVER_IP}:6969", *args]
        self.proc = subprocess.Popen(
            net.exec_args(net.server, argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=group,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                self._reader.join(2)
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} from serve (exit {self.proc.poll()}):\n{self.output}")

    def finish(self, timeout: float = 15.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(2)
        return code

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.finish()


@pytest.fixture
def serve(net: DhcpNet, tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(
        *args: str,
        spec: str = SPEC,
        folder: Path = tmp_path,
        wrap: Sequence[str] = (),
        group: bool = False,
    ) -> Serve:
        path = folder / "lab.yaml"
        path.write_text(spec)
        state = ("--state", str(folder / "state"))
        started.append(Serve(net, path, *state, *args, wrap=wrap, group=group))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def _client(net: DhcpNet, body: Callable[[DhcpClient], Any]) -> Any:
    def run() -> Any:
        client = DhcpClient(CLIENT_IF)
        try:
            return body(client)
        finally:
            client.close()

    return net.inside(net.client, run)


def _host(net: DhcpNet, name: str) -> dict[str, Any]:
    def get() -> dict[str, Any]:
        url = f"http://{SERVER_IP}:8080/api/v1/hosts/{name}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            found: dict[str, Any] = json.load(resp)
            return found

    return net.inside(net.server, get)


def _dhcp_events(net: DhcpNet, name: str) -> list[dict[str, Any]]:
    return [e for e in _host(net, name)["events"] if e["kind"] == "dhcp"]


def _wait(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def _from(replies: list[Reply], server: str) -> Reply:
    found = [r for r in replies if r.server_id == server]
    assert len(found) == 1, f"replies: {replies}"
    return found[0]


def test_full_mode_answers_each_firmware_and_records_the_lease(
    net: DhcpNet, serve: Callable[..., Serve], tmp_path: Path
) -> None:
    server = serve("--dhcp", "full")
    server.wait_for("photonkick serving")
    assert f"DHCP       full on {BRIDGE} (192.0.2.0/24)" in server.output

    def boot(client: DhcpClient) -> dict[str, Any]:
        return {
            "bios": client.exchange(WEB, DISCOVER, BIOS, count=1),
            "uefi": client.lease(EFI, UEFI),
            "ipxe": client.lease(WEB, IPXE),
        }

    got = _client(net, boot)
    (bios,) = got["bios"]
    assert (bios.yiaddr, bios.siaddr, bios.boot_file) == ("192.0.2.21", SERVER_IP, "lpxelinux.0")
    offer, efi_ack = got["uefi"]
    assert offer.boot_file == efi_ack.boot_file == "grubx64.efi"
    assert 100 <= int(efi_ack.yiaddr.rsplit(".", 1)[1]) <= 150
    offer, ack = got["ipxe"]
    assert (ack.yiaddr, ack.boot_file, ack.options[175]) == ("192.0.2.21", CHAIN, NO_PXEDHCP)

    _wait(lambda: any("DHCPACK" in e["detail"] for e in _dhcp_events(net, "web01")))
    details = [e["detail"] for e in _dhcp_events(net, "web01")]
    assert details[0] == "DHCPDISCOVER (PXEClient:Arch:00000:UNDI:003016)"
    assert f"DHCPACK 192.0.2.21 boot {CHAIN} (PXEClient:Arch:00000:UNDI:003016 iPXE)" in details
    assert _dhcp_events(net, "efi01")[-1]["client"] == efi_ack.yiaddr
    assert _host(net, "web01")["phase"] == "dhcp"

    # The leased address fetches the per-MAC iPXE script: time to ready now counts from DHCP.
    subprocess.run(["ip", "-n", net.client, "addr", "add", "192.0.2.21/24", "dev", CLIENT_IF])

    def fetch() -> bytes:
        url = f"http://{SERVER_IP}:8080/ipxe/00-50-56-00-10-01.ipxe"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body: bytes = resp.read()
            return body

    assert net.inside(net.client, fetch).startswith(b"#!ipxe")
    status = _host(net, "web01")
    assert status["phase"] == "config"
    assert status["phases"]["dhcp"] == 0.0 and status["phases"]["config"] > 0.0

    def dashboard() -> str:
        with urllib.request.urlopen(f"http://{SERVER_IP}:8080/", timeout=5) as resp:
            page: str = resp.read().decode()
            return page

    assert 'class="seg p-dhcp"' in net.inside(net.server, dashboard)

    # The kickstart goes only to an address dnsmasq leased to the host's MAC.
    secret = bytes.fromhex((tmp_path / "state" / "secret").read_text().strip())
    ks = f"http://{SERVER_IP}:8080/ks/web01/{host_token(secret, 'web01', 1)}.json"
    assert net.inside(net.client, lambda: _status(ks)) == 200
    assert net.inside(net.office, lambda: _status(ks)) == 404
    server.wait_for(
        f"kickstart for web01 refused: DHCP leased 192.0.2.21 to {WEB}, not {OFFICE_IP}"
    )

    conf = tmp_path / "state" / "dnsmasq.conf"
    assert conf.stat().st_mode & 0o777 == 0o600
    leases = (tmp_path / "state" / "dnsmasq.leases").read_text()
    assert f" {WEB} 192.0.2.21 web01 " in leases  # written by dnsmasq after it dropped root
    assert "dhcp-host=00:50:56:00:10:01,192.0.2.21,web01\n" in conf.read_text()
    assert server.stop() == 0
    assert "dnsmasq" not in _namespace_commands(net.server)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _namespace_commands(ns: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    names = []
    for pid in out.split():
        try:
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            pass
    return names


def test_proxy_mode_adds_boot_answers_beside_another_dhcp_server(
    net: DhcpNet, serve: Callable[..., Serve], tmp_path: Path
) -> None:
    office = subprocess.Popen(
        net.exec_args(
            net.office,
            ["dnsmasq", "--keep-in-foreground", "--port=0", "--interface=pko0",
             "--bind-interfaces", "--no-ping", "--dhcp-range=192.0.2.50,192.0.2.60,255.255.255.0",
             f"--dhcp-leasefile={tmp_path / 'office.leases'}", "--pid-file=",
             "--log-facility=-"],
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        spec = SPEC.replace("dhcp: {range: 192.0.2.100-192.0.2.150}", "dhcp: {mode: proxy}")
        server = serve(spec=spec)
        server.wait_for("photonkick serving")
        assert f"DHCP       proxy on {BRIDGE} (192.0.2.0/24)" in server.output

        def boot(client: DhcpClient) -> dict[str, list[Reply]]:
            return {
                name: client.exchange(mac, DISCOVER, firmware, wait=3.0, count=2)
                for name, mac, firmware in (
                    ("bios", WEB, BIOS),
                    ("uefi", EFI, UEFI),
                    ("ipxe", WEB, IPXE),
                    ("http", EFI, UEFI_HTTP),
                )
            }

        got = _client(net, boot)
        # UEFI PXE then asks the proxy on port 4011, from the address the office DHCP gave.
        uefi_ip = _from(got["uefi"], OFFICE_IP).yiaddr
        subprocess.run(["ip", "-n", net.client, "addr", "add", f"{uefi_ip}/24", "dev", CLIENT_IF])
        pxe_request = {"to": (SERVER_IP, 4011), "ciaddr": uefi_ip, "count": 1}
        (boot_server,) = _client(net, lambda c: c.exchange(EFI, REQUEST, UEFI, **pxe_request))
    finally:
        office.terminate()
        office.wait(10)
    for name, boot_file in (("bios", "lpxelinux.0"), ("uefi", "grubx64.efi"), ("ipxe", CHAIN)):
        address = _from(got[name], OFFICE_IP)
        assert address.yiaddr.startswith("192.0.2.5") and address.boot_file == ""
        proxy = _from(got[name], SERVER_IP)
        assert (proxy.yiaddr, proxy.boot_file) == ("0.0.0.0", boot_file), name
        assert proxy.options[60] == b"PXEClient"
        # iPXE ignores a proxy answer without a next-server, even one naming an HTTP URL.
        assert proxy.siaddr == SERVER_IP, name
    assert (boot_server.kind, boot_server.boot_file) == (ACK, "grubx64.efi")
    assert boot_server.siaddr == SERVER_IP
    # dnsmasq's proxy answers PXEClient only: a UEFI HTTP-boot client gets no boot answer.
    assert [r.server_id for r in got["http"]] == [OFFICE_IP]
    _wait(lambda: len(_dhcp_events(net, "efi01")) >= 2)
    details = [e["detail"] for e in _dhcp_events(net, "efi01")]
    assert details == ["PXE proxy boot grubx64.efi (PXEClient:Arch:00007:UNDI:003016)"] * 2


def test_full_mode_answers_uefi_http_boot_with_the_loader_url(
    net: DhcpNet, serve: Callable[..., Serve]
) -> None:
    loader = Path("/usr/lib/ipxe/snponly.efi")
    if not loader.is_file():
        pytest.skip("no /usr/lib/ipxe/snponly.efi (Debian package ipxe)")
    server = serve("--dhcp", "full")
    server.wait_for("photonkick serving")
    offer, ack = _client(net, lambda c: c.lease(EFI, UEFI_HTTP))
    url = f"http://{SERVER_IP}:8080/ipxe/snponly.efi"
    for reply in (offer, ack):
        assert (reply.options[60], reply.boot_file) == (b"HTTPClient", url)
    subprocess.run(["ip", "-n", net.client, "addr", "add", f"{ack.yiaddr}/24", "dev", CLIENT_IF])

    def fetch() -> bytes:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body: bytes = resp.read()
            return body

    assert net.inside(net.client, fetch) == loader.read_bytes()
    _wait(lambda: any("DHCPACK" in e["detail"] for e in _dhcp_events(net, "efi01")))
    assert f"DHCPACK {ack.yiaddr} boot {url} (HTTPClient:Arch:00016:UNDI:003016)" in [
        e["detail"] for e in _dhcp_events(net, "efi01")
    ]


LOADERS_SPEC = """\
server:
  url: http://192.0.2.1:8080
  dhcp: {mode: MODE, range: 192.0.2.100-192.0.2.150}
hosts:
  - name: rom01
    mac: "00:50:56:00:10:01"
    firmware: bios
    loader: pxelinux
    network: {address: 192.0.2.21/24, gateway: 192.0.2.1}
  - {name: esx01, mac: "00:50:56:00:10:02", loader: ipxe}
  - {name: efi01, mac: "00:50:56:00:10:03"}
"""
UEFI_IPXE = Firmware(ARCH_EFI_X64, b"iPXE")


@pytest.mark.parametrize("mode", ["full", "proxy"])
def test_hosts_get_the_loader_they_chose(
    net: DhcpNet, serve: Callable[..., Serve], mode: str
) -> None:
    """loader: pxelinux gets lpxelinux.0 even from iPXE; loader: ipxe gets UEFI iPXE from
    the firmware's PXE and the chain URL once iPXE runs; a host on auto is unchanged."""
    server = serve(spec=LOADERS_SPEC.replace("MODE", mode))
    server.wait_for("photonkick serving")
    asks = {
        "rom-pxe": ("00:50:56:00:10:01", BIOS),
        "rom-ipxe": ("00:50:56:00:10:01", IPXE),
        "esx-pxe": ("00:50:56:00:10:02", UEFI),
        "esx-ipxe": ("00:50:56:00:10:02", UEFI_IPXE),
        "efi-pxe": ("00:50:56:00:10:03", UEFI),
        "efi-ipxe": ("00:50:56:00:10:03", UEFI_IPXE),
    }

    def boot(client: DhcpClient) -> dict[str, list[Reply]]:
        return {
            name: client.exchange(mac, DISCOVER, firmware, count=1)
            for name, (mac, firmware) in asks.items()
        }

    got = {name: replies[0] for name, replies in _client(net, boot).items() if replies}
    assert {name: (r.boot_file, r.siaddr) for name, r in got.items()} == {
        "rom-pxe": ("lpxelinux.0", SERVER_IP),
        "rom-ipxe": ("lpxelinux.0", SERVER_IP),
        "esx-pxe": ("snponly.efi", SERVER_IP),
        "esx-ipxe": (CHAIN, SERVER_IP),
        "efi-pxe": ("grubx64.efi", SERVER_IP),
        "efi-ipxe": (CHAIN, SERVER_IP),
    }
    if mode == "full":
        assert got["rom-ipxe"].yiaddr == "192.0.2.21"  # the tag rides on the reservation
        # UEFI HTTP boot still gets its URL: the HTTPClient line comes after the hosts' lines.
        offer, _ = _client(net, lambda c: c.lease("00:50:56:00:10:02", UEFI_HTTP))
        assert offer.boot_file == f"http://{SERVER_IP}:8080/ipxe/snponly.efi"
        return
    # Proxy mode: UEFI PXE takes its boot file from the proxy's answer on port 4011.
    subprocess.run(["ip", "-n", net.client, "addr", "add", "192.0.2.77/24", "dev", CLIENT_IF])
    pxe_request = {"to": (SERVER_IP, 4011), "ciaddr": "192.0.2.77", "count": 1}
    (esx,) = _client(net, lambda c: c.exchange("00:50:56:00:10:02", REQUEST, UEFI, **pxe_request))
    assert (esx.kind, esx.boot_file, esx.siaddr) == (ACK, "snponly.efi", SERVER_IP)
    _wait(lambda: len(_dhcp_events(net, "esx01")) >= 3)
    assert "PXE proxy boot snponly.efi (PXEClient:Arch:00007:UNDI:003016)" in [
        e["detail"] for e in _dhcp_events(net, "esx01")
    ]


def test_dnsmasq_is_restarted_when_it_dies(net: DhcpNet, serve: Callable[..., Serve]) -> None:
    server = serve("--dhcp", "full")
    server.wait_for("photonkick serving")
    first = _dnsmasq_pid(net)
    os.kill(first, signal.SIGKILL)
    server.wait_for("dnsmasq exited (status -9); restarting in 1 s")
    _wait(lambda: server.output.count("dnsmasq: DHCP, IP range") == 2, timeout=10)
    assert _dnsmasq_pid(net) not in (None, first)
    replies = _client(net, lambda c: c.exchange(WEB, DISCOVER, BIOS, count=1))
    assert [r.yiaddr for r in replies] == ["192.0.2.21"]


def _dnsmasq_pid(net: DhcpNet) -> int | None:
    out = subprocess.run(["ip", "netns", "pids", net.server], capture_output=True, text=True)
    for pid in out.stdout.split():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "dnsmasq":
                return int(pid)
        except OSError:
            pass
    return None


def test_spec_reload_rewrites_the_config(
    net: DhcpNet, serve: Callable[..., Serve], tmp_path: Path
) -> None:
    server = serve("--dhcp", "full")
    server.wait_for("photonkick serving")
    before = _client(net, lambda c: c.exchange(STRANGER, DISCOVER, BIOS, count=1))
    assert [r.yiaddr for r in before] != ["192.0.2.77"]
    spec = tmp_path / "lab.yaml"
    spec.write_text(
        SPEC
        + '  - name: new01\n    mac: "00:50:56:00:10:99"\n'
        + "    network: {address: 192.0.2.77/24, gateway: 192.0.2.1}\n"
    )
    os.utime(spec, (time.time() + 5, time.time() + 5))
    server.wait_for("DHCP config rewritten; restarting dnsmasq")
    _wait(lambda: server.output.count("dnsmasq: DHCP, IP range") == 2)  # the new one is up
    after = _client(net, lambda c: c.exchange(STRANGER, DISCOVER, BIOS, count=1))
    assert [r.yiaddr for r in after] == ["192.0.2.77"]
    assert "dnsmasq exited" not in server.output  # a restart asked for is not a crash


def test_port_67_in_use_stops_serve_before_anything_starts(
    net: DhcpNet, serve: Callable[..., Serve], tmp_path: Path
) -> None:
    def hold() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, BRIDGE.encode())
        sock.bind(("0.0.0.0", 67))
        return sock

    holder = net.inside(net.server, hold)
    try:
        server = serve("--dhcp", "full")
        assert server.finish() == 1
    finally:
        holder.close()
    assert _only_error(server) == [
        f"photonkick: DHCP port 67 on {BRIDGE} is in use (Address already in use): another "
        "DHCP server runs here; stop it, or serve with --dhcp off and use your own DHCP server"
    ]
    assert not (tmp_path / "state" / "dnsmasq.conf").exists()


def test_range_outside_the_subnet_is_a_spec_error(
    net: DhcpNet, serve: Callable[..., Serve], tmp_path: Path
) -> None:
    spec = SPEC.replace("192.0.2.100-192.0.2.150", "198.51.100.10-198.51.100.20")
    server = serve("--dhcp", "full", spec=spec)
    assert server.finish() == 2
    assert server.lines[-2:] == [
        f"{tmp_path / 'lab.yaml'}:3:17: server.dhcp.range: 198.51.100.10-198.51.100.20 is not "
        f"inside 192.0.2.0/24, the subnet of {BRIDGE}",
        "photonkick: 1 problem(s); nothing was changed",
    ]


def _only_error(server: Serve) -> list[str]:
    return [line for line in server.lines if not line.startswith("warning:")]


def test_without_root_serve_names_the_fix(net: DhcpNet, serve: Callable[..., Serve]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="photonkick-dhcp-"))
    try:
        os.chown(folder, NOBODY, NOBODY)
        folder.chmod(0o755)
        wrap = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        server = serve("--dhcp", "proxy", folder=folder, wrap=wrap)
        assert server.finish() == 1
    finally:
        shutil.rmtree(folder)
    assert _only_error(server) == [
        "photonkick: managed DHCP needs root (DHCP port 67): run serve as root, or serve with "
        "--dhcp off and use your own DHCP server"
    ]


def test_without_dnsmasq_serve_names_the_package(
    net: DhcpNet, serve: Callable[..., Serve], tmp_path: Path
) -> None:
    dnsmasq = find_dnsmasq()
    assert dnsmasq is not None
    # A private mount namespace where the binary is an empty, non-executable file.
    hide = f'mount --bind /dev/null {dnsmasq} && exec "$@"'
    server = serve("--dhcp", "full", wrap=["unshare", "-m", "sh", "-c", hide, "sh"])
    assert server.finish() == 1
    assert _only_error(server) == [
        "photonkick: managed DHCP needs dnsmasq: apt-get install dnsmasq-base, or serve with "
        "--dhcp off and use your own DHCP server"
    ]
    assert not (tmp_path / "state" / "dnsmasq.conf").exists()


def test_an_interface_that_is_not_there_is_a_spec_error(
    net: DhcpNet, serve: Callable[..., Serve], tmp_path: Path
) -> None:
    spec = SPEC.replace("dhcp: {range:", "dhcp: {interface: nope0, range:")
    server = serve("--dhcp", "proxy", spec=spec)
    assert server.finish() == 2
    assert server.lines[-2].startswith(
        f"{tmp_path / 'lab.yaml'}:3:9: server.dhcp.interface: no interface nope0 on this "
        "machine (it has lo, pkbr0"
    )


def _pid_file(tmp_path: Path) -> int:
    return int((tmp_path / "state" / "dnsmasq.pid").read_text().split()[0])


def _ended(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie waiting for its reaper counts as ended)."""
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("\nPPid:\t", 1)[1].split()[0])


@pytest.mark.parametrize("kill", ["process", "group"])
def test_dnsmasq_ends_with_a_killed_serve(
    net: DhcpNet, serve: Callable[..., Serve], tmp_path: Path, kill: str
) -> None:
    server = serve("--dhcp", "full", group=True)
    server.wait_for("photonkick serving")
    dnsmasq = _pid_file(tmp_path)
    assert _dnsmasq_pid(net) == dnsmasq
    assert Path(f"/proc/{dnsmasq}").stat().st_uid == NOBODY  # it still gives up root
    if kill == "process":
        os.kill(server.proc.pid, signal.SIGKILL)
    else:  # what a test harness or a service manager does to serve's process group
        os.killpg(server.proc.pid, signal.SIGKILL)
    server.finish()
    killed = time.monotonic()
    _wait(lambda: _ended(dnsmasq), timeout=5)
    assert time.monotonic() - killed < 2
    _wait(lambda: _namespace_commands(net.server) == [], timeout=2)  # nothing keeps it alive
    assert _client(net, lambda c: c.exchange(WEB, DISCOVER, BIOS, wait=1.0)) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_stopped_serve_ends_dnsmasq_before_it_exits(
    net: DhcpNet, serve: Callable[..., Serve], tmp_path: Path, signum: int
) -> None:
    server = serve("--dhcp", "proxy")
    server.wait_for("photonkick serving")
    dnsmasq = _pid_file(tmp_path)
    assert _dnsmasq_pid(net) == dnsmasq
    server.proc.send_signal(signum)
    assert server.finish() == 0
    assert not Path(f"/proc/{dnsmasq}").exists()  # ended and reaped while serve still ran
    assert "dnsmasq exited" not in server.output


def test_dnsmasq_left_by_a_killed_serve_is_stopped_by_the_next(
    net: DhcpNet, serve: Callable[..., Serve], tmp_path: Path
) -> None:
    first = serve("--dhcp", "full")
    first.wait_for("photonkick serving")
    orphan = _pid_file(tmp_path)
    tether = _parent(orphan)
    # Only a kill of serve and of the tether that stops dnsmasq with it leaves dnsmasq behind.
    os.kill(tether, signal.SIGSTOP)
    first.proc.kill()
    first.finish()
    os.kill(tether, signal.SIGKILL)
    _wait(lambda: _parent(orphan) != tether)
    assert _dnsmasq_pid(net) == orphan
    second = serve("--dhcp", "full")
    second.wait_for("photonkick serving")
    assert f"stopped dnsmasq (pid {orphan}) that an earlier serve left running" in second.lines
    assert _dnsmasq_pid(net) not in (None, orphan)
    replies = _client(net, lambda c: c.exchange(WEB, DISCOVER, BIOS, count=1))
    assert [r.yiaddr for r in replies] == ["192.0.2.21"]


def _link_local_ready(net: DhcpNet, ns: str, interface: str) -> bool:
    shown = subprocess.run(
        net.exec_args(ns, ["ip", "-6", "addr", "show", "dev", interface, "scope", "link"]),
        capture_output=True,
        text=True,
    ).stdout
    return "inet6" in shown and "tentative" not in shown


def _solicit(net: DhcpNet, hops: int, wait: float = 2.0) -> list[tuple[bytes, int | None]]:
    """A router solicitation from the client namespace; the advertisements that came back
    (ICMPv6 message and hop limit) within ``wait`` seconds."""
    _wait(lambda: _link_local_ready(net, net.client, CLIENT_IF))

    def exchange() -> list[tuple[bytes, int | None]]:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, CLIENT_IF.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hops)
            ifindex = socket.if_nametoindex(CLIENT_IF)
            sock.sendto(bytes([133, 0, 0, 0, 0, 0, 0, 0]), ("ff02::2", 0, 0, ifindex))
            got: list[tuple[bytes, int | None]] = []
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([sock], [], [], left)[0]:
                    break
                data, ancillary, _, _ = sock.recvmsg(1500, socket.CMSG_SPACE(4))
                if data[:1] == bytes([134]):
                    limits = [struct.unpack("i", d[:4])[0] for _, kind, d in ancillary
                              if kind == socket.IPV6_HOPLIMIT]  # fmt: skip
                    got.append((data, limits[0] if limits else None))
            return got

    return net.inside(net.client, exchange)


@pytest.mark.parametrize("mode", ["proxy", "full"])
def test_router_solicitations_get_empty_adverts(
    net: DhcpNet, serve: Callable[..., Serve], mode: str
) -> None:
    """iPXE waits ~16 s for an IPv6 router on a network without one (this one: the bridge
    has no IPv6 prefix): serve answers its solicitation, once, with an advertisement that
    makes nobody a router and announces nothing."""
    server = serve("--dhcp", mode)
    server.wait_for("photonkick serving")
    _wait(lambda: _link_local_ready(net, net.server, BRIDGE))
    (advert, hops), *more = _solicit(net, hops=255)
    assert not more
    assert hops == 255
    assert len(advert) == 16  # the header alone: no prefix, no MTU, no link-layer option
    kind, code, _sum, hop_limit, flags, lifetime = struct.unpack("!BBHBBH", advert[:8])
    assert (kind, code, hop_limit, flags, lifetime) == (134, 0, 0, 0, 0)
    # A solicitation that crossed a router (hop limit below 255) is not from this link.
    assert _solicit(net, hops=64, wait=1.0) == []

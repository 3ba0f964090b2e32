"""A private network namespace for boot tests: bridge, taps, dnsmasq, a packet watcher.

Everything lives in a network namespace the lab creates and deletes itself: a bridge
holding the server address 192.0.2.1/24 (and fd00:5e:1ab::1/64 for router adverts), one
tap per VM, no uplink and no route out. Processes started through :meth:`NetLab.spawn`
run inside the namespace (``ip netns exec``) in their own process group; teardown kills
exactly those groups and deletes the namespace, also when the body raised.

In-process servers create their sockets inside the namespace with
:meth:`NetLab.inside`: the socket stays in the namespace whatever thread uses it later.

A peer (:meth:`NetLab.add_peer`) is another machine on that network, in a namespace of its
own: :meth:`NetLab.start_plain_dhcp` runs the network's own DHCP server there, one that
hands out addresses and no boot options (for photonkick's proxy DHCP beside it).

DHCP is dnsmasq in DHCP-only mode (``--port=0``). Per client the boot file depends on
the firmware that asks:

* UEFI x64 (option 93 = 7 or 9): :attr:`BootFiles.efi64` (GRUB) from TFTP;
* BIOS iPXE (user class ``iPXE`` or option 175): :attr:`BootFiles.ipxe`, an HTTP URL;
* other BIOS clients: :attr:`BootFiles.bios` (pxelinux) from TFTP;

or one fixed file per client (:attr:`Client.boot`). :class:`BootFiles` has the options.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

T = TypeVar("T")

SERVER_IP = "192.0.2.1"
PREFIX_LEN = 24
SERVER_IP6 = "fd00:5e:1ab::1"
BRIDGE = "pkbr0"
CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003


BootKind = Literal["auto", "bios", "efi64", "ipxe"]


@dataclass(frozen=True)
class Client:
    """One VM as DHCP sees it: MAC, fixed address, host name, and which boot file it gets.

    ``boot="auto"`` chooses by firmware (see :class:`BootFiles`); ``"bios"``, ``"efi64"``
    and ``"ipxe"`` hand that file whatever the client is. QEMU's NIC ROMs are iPXE, so
    ``"bios"`` is how a test reaches pxelinux on QEMU.
    """

    name: str
    mac: str
    ip: str
    boot: BootKind = "auto"


@dataclass(frozen=True)
class BootFiles:
    """Boot files handed out by DHCP, and the rules choosing one per client.

    With ``boot="auto"`` a UEFI x64 client (option 93 = 7 or 9) gets :attr:`efi64` from
    TFTP, a BIOS iPXE client (user class ``iPXE`` or option 175) gets :attr:`ipxe` (an
    HTTP URL), any other client :attr:`bios` from TFTP. ``ipxe_uefi=True`` hands
    :attr:`ipxe` to UEFI iPXE clients too, checking iPXE before the architecture (the order
    photonkick documents); ``ipxe=None`` treats iPXE clients like any other.
    UEFI HTTP boot clients (vendor class ``HTTPClient``, which OVMF tries after PXE) get
    :attr:`uefi_http`; by default a URL that does not exist, so they give up at once
    instead of after a minute of DHCP timeouts. ``extra`` are raw dnsmasq.conf lines
    appended as they are.
    """

    bios: str = "pxelinux.0"
    efi64: str = "grubx64.efi"
    ipxe: str | None = f"http://{SERVER_IP}:8080/ipxe/boot.ipxe"
    ipxe_uefi: bool = False
    uefi_http: str = f"http://{SERVER_IP}:8080/no-uefi-http-boot.efi"
    next_server: str = SERVER_IP
    extra: tuple[str, ...] = ()

    def rules(self) -> list[str]:
        """The ``dhcp-boot`` lines; their tag sets never overlap, so order does not matter."""
        ns = self.next_server
        bios, efi = f"{self.bios},,{ns}", f"{self.efi64},,{ns}"
        rules = [f"tag:pk-bios,{bios}", f"tag:pk-efi64,{efi}"]
        if self.ipxe is None:
            rules += [f"tag:pk-auto,tag:efi64,{efi}", f"tag:pk-auto,tag:!efi64,{bios}"]
        elif self.ipxe_uefi:
            rules += [
                f"tag:pk-ipxe,{self.ipxe}",
                f"tag:pk-auto,tag:ipxe,{self.ipxe}",
                f"tag:pk-auto,tag:!ipxe,tag:efi64,{efi}",
                f"tag:pk-auto,tag:!ipxe,tag:!efi64,{bios}",
            ]
        else:
            rules += [
                f"tag:pk-ipxe,{self.ipxe}",
                f"tag:pk-auto,tag:efi64,{efi}",
                f"tag:pk-auto,tag:!efi64,tag:ipxe,{self.ipxe}",
                f"tag:pk-auto,tag:!efi64,tag:!ipxe,{bios}",
            ]
        return [f"dhcp-boot=tag:!httpboot,{rule}" for rule in rules] + [
            "dhcp-option-force=tag:httpboot,60,HTTPClient",
            f"dhcp-boot=tag:httpboot,{self.uefi_http}",
        ]


def plain_dhcp_conf(clients: Sequence[Client], interface: str, workdir: Path) -> str:
    """A DHCP server that hands out addresses and nothing else: no boot options at all.

    The network's own DHCP server in a proxy-DHCP scenario; each client gets its fixed address.
    """
    lines = [
        "port=0",
        f"interface={interface}",
        "bind-interfaces",
        "user=root",
        "group=root",
        "pid-file=",
        f"dhcp-leasefile={workdir / 'plain-dnsmasq.leases'}",
        "dhcp-authoritative",
        "log-dhcp",
        "dhcp-range=192.0.2.100,192.0.2.199,255.255.255.0,10m",
    ]
    lines += [f"dhcp-host={c.mac},{c.ip},{c.name},10m" for c in clients]
    return "\n".join(lines) + "\n"


def dnsmasq_conf(clients: Sequence[Client], files: BootFiles, workdir: Path) -> str:
    """The dnsmasq configuration for ``clients``: DHCP only, boot file per firmware."""
    lines = [
        "port=0",
        f"interface={BRIDGE}",
        "bind-interfaces",
        "except-interface=lo",
        "user=root",
        "group=root",
        "pid-file=",
        f"dhcp-leasefile={workdir / 'dnsmasq.leases'}",
        "dhcp-authoritative",
        "log-dhcp",
        "dhcp-range=192.0.2.100,192.0.2.199,255.255.255.0,10m",
        # Router adverts (SLAAC only) so iPXE's IPv6 autoconfiguration ends at once.
        "enable-ra",
        f"dhcp-range={SERVER_IP6.rsplit('::', 1)[0]}::,ra-only,64,10m",
        "dhcp-userclass=set:ipxe,iPXE",
        "dhcp-match=set:ipxe,175",
        "dhcp-match=set:efi64,option:client-arch,7",
        "dhcp-match=set:efi64,option:client-arch,9",
        "dhcp-vendorclass=set:httpboot,HTTPClient",
        # iPXE: do not wait ~5 s for ProxyDHCP offers (option 175.176, no-pxedhcp).
        "dhcp-option=tag:ipxe,encap:175,176,1",
    ]
    lines += [f"dhcp-host={c.mac},set:pk-{c.boot},{c.ip},{c.name},10m" for c in clients]
    lines += files.rules()
    lines += files.extra
    return "\n".join(lines) + "\n"


@dataclass
class Packet:
    """A DHCP request or TFTP read request seen on the bridge."""

    t: float
    kind: Literal["dhcp", "tftp"]
    mac: str
    src_ip: str
    detail: str


@dataclass
class NetLab:
    """A live namespace; build it with :func:`netlab`."""

    ns: str
    workdir: Path
    taps: list[str]
    server_ip: str = SERVER_IP
    packets: list[Packet] = field(default_factory=list)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _peers: list[str] = field(default_factory=list)
    _cleanups: list[Callable[[], object]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)

    def exec_args(self, argv: Sequence[str], ns: str | None = None) -> list[str]:
        """``argv`` prefixed so that it runs inside the namespace (or the peer ``ns``)."""
        return ["ip", "netns", "exec", ns or self.ns, *argv]

    def run(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a short command inside the namespace and return its result."""
        return subprocess.run(
            self.exec_args(argv), check=check, capture_output=True, text=True, timeout=60
        )

    def spawn(
        self, argv: Sequence[str], log: Path, ns: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the namespace (or the peer ``ns``) in a new process group,
        output to ``log``.

        The process is killed (its whole group) at teardown unless it ended before.
        """
        with log.open("ab") as out:
            proc = subprocess.Popen(
                self.exec_args(argv, ns),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self._lock:
            self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
        """Terminate a process started by :meth:`spawn` and its group; SIGKILL after ``grace``."""
        _kill_group(proc, grace)

    def inside(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` on a thread that has entered the namespace; return its result.

        Sockets ``fn`` creates belong to the namespace for their whole life.
        """
        return call_in_netns(self.ns, fn)

    def add_peer(self, address: str) -> tuple[str, str]:
        """Another machine on the lab network: a namespace of its own, joined to the bridge
        by a veth pair and holding ``address``; deleted at teardown. Returns the namespace
        and its interface."""
        peer = f"{self.ns}-p{len(self._peers)}"
        outer, inner = f"pkveth{len(self._peers)}", "eth0"
        subprocess.run(["ip", "netns", "add", peer], check=True, capture_output=True)
        self._peers.append(peer)
        for args in (
            ["-n", self.ns, "link", "add", outer, "type", "veth", "peer", "name", inner,
             "netns", peer],
            ["-n", self.ns, "link", "set", outer, "master", BRIDGE],
            ["-n", self.ns, "link", "set", outer, "up"],
            ["-n", peer, "link", "set", "lo", "up"],
            ["-n", peer, "addr", "add", f"{address}/{PREFIX_LEN}", "dev", inner],
            ["-n", peer, "link", "set", inner, "up"],
        ):  # fmt: skip
            subprocess.run(["ip", *args], check=True, capture_output=True)
        return peer, inner

    def start_dnsmasq(self, clients: Sequence[Client], files: BootFiles = BootFiles()) -> Path:
        """Start dnsmasq for ``clients``; return its log file (``log-dhcp`` lines)."""
        return self._dnsmasq("dnsmasq", dnsmasq_conf(clients, files, self.workdir))

    def start_plain_dhcp(self, clients: Sequence[Client], address: str) -> Path:
        """A DHCP server with no boot options (:func:`plain_dhcp_conf`) on a peer at
        ``address``; return its log file."""
        peer, interface = self.add_peer(address)
        conf = plain_dhcp_conf(clients, interface, self.workdir)
        return self._dnsmasq("plain-dnsmasq", conf, peer)

    def _dnsmasq(self, name: str, config: str, ns: str | None = None) -> Path:
        conf = self.workdir / f"{name}.conf"
        log = self.workdir / f"{name}.log"
        conf.write_text(config + f"log-facility={log}\n")
        out = self.workdir / f"{name}.out"
        argv = ["dnsmasq", f"--conf-file={conf}", "--keep-in-foreground"]
        proc = self.spawn(argv, out, ns)

        def why() -> str:
            return f"dnsmasq did not start (exit {proc.poll()}): {out.read_text()}"

        wait_for(lambda: log.exists() and "DHCP, IP range" in log.read_text(), 10, why)
        return log

    def start_tftpd(self, root: Path) -> subprocess.Popen[bytes]:
        """Start tftpd-hpa serving ``root`` (read-only, chrooted) on the server address."""
        proc = self.spawn(
            ["in.tftpd", "--foreground", "--listen", "--address", f"{self.server_ip}:69",
             "--secure", "--blocksize", "1468", str(root)],
            self.workdir / "tftpd.out",
        )  # fmt: skip
        wait_for(lambda: self.listening(69, udp=True) or proc.poll() is not None, 10, "tftpd")
        if proc.poll() is not None:
            raise RuntimeError("in.tftpd exited: " + (self.workdir / "tftpd.out").read_text())
        return proc

    def listening(self, port: int, udp: bool = False) -> bool:
        """Whether something in the namespace listens on ``port`` (TCP, or UDP)."""
        out = self.run(["ss", "-Hnlu" if udp else "-Hnlt", f"sport = :{port}"], check=False)
        return bool(out.stdout.strip())

    def wait_listening(
        self,
        port: int,
        timeout: float,
        udp: bool = False,
        proc: subprocess.Popen[bytes] | None = None,
    ) -> None:
        """Wait until :meth:`listening`; fail early when ``proc`` (the server) has exited."""

        def ready() -> bool:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
            return self.listening(port, udp)

        wait_for(ready, timeout, f"a listener on port {port}")

    def on_teardown(self, fn: Callable[[], object]) -> None:
        """Call ``fn`` at teardown, before the processes are killed (last added, first called).

        In-process servers must close their sockets here: an open socket keeps the
        namespace alive after it has been deleted.
        """
        self._cleanups.append(fn)

    def watch(self) -> None:
        """Record DHCP requests and TFTP read requests on the bridge into :attr:`packets`."""
        sock = self.inside(lambda: _packet_socket(BRIDGE))
        sock.settimeout(0.2)
        thread = threading.Thread(target=self._watch, args=(sock,), daemon=True, name="pk-watch")
        thread.start()
        self.on_teardown(thread.join)
        self.on_teardown(self._stopping.set)

    def _watch(self, sock: socket.socket) -> None:
        with sock:
            while not self._stopping.is_set():
                try:
                    frame, addr = sock.recvfrom(65535)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                packet = _parse(frame)
                if packet:
                    with self._lock:
                        self.packets.append(packet)

    def _teardown(self) -> None:
        errors: list[BaseException] = []
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception as exc:  # keep tearing down; reported below
                errors.append(exc)
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _kill_group(proc, 3.0)
        for ns in [*self._peers, self.ns]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if errors:
            raise RuntimeError(f"lab teardown: {errors!r}") from errors[0]


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # The leader may be gone while others in its group are not.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def call_in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` on a thread that has entered network namespace ``ns``; return its result."""
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            _setns(Path("/run/netns") / ns)
            result.append(fn())
        except BaseException as exc:  # handed to the caller below
            error.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{ns}")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _setns(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _packet_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((ifname, 0))
    return sock


def wait_for(cond: Callable[[], bool], timeout: float, what: str | Callable[[], str]) -> None:
    """Poll ``cond`` every 50 ms until it is true; TimeoutError (``what`` says what) after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what() if callable(what) else f"timed out waiting for {what}")
        time.sleep(0.05)


def _dhcp_options(data: bytes) -> dict[int, bytes]:
    options: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(data):
            break
        length = data[i + 1]
        options[code] = data[i + 2 : i + 2 + length]
        i += 2 + length
    return options


def _parse(frame: bytes) -> Packet | None:
    if len(frame) < 42 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 17 or len(ip) < ihl + 8:
        return None
    src = socket.inet_ntoa(ip[12:16])
    dport = struct.unpack("!H", ip[ihl + 2 : ihl + 4])[0]
    payload = ip[ihl + 8 :]
    mac = frame[6:12].hex(":")
    now = time.monotonic()
    if dport == 69 and payload[:2] == b"\x00\x01":
        name = payload[2:].split(b"\0", 1)[0].decode(errors="replace")
        return Packet(now, "tftp", mac, src, name)
    if dport == 67 and len(payload) > 240 and payload[236:240] == b"\x63\x82\x53\x63":
        options = _dhcp_options(payload[240:])
        types = {1: "DISCOVER", 3: "REQUEST", 8: "INFORM"}
        kind = types.get(options.get(53, b"\0")[0], "OTHER")
        arch = struct.unpack("!H", options[93][:2])[0] if len(options.get(93, b"")) >= 2 else None
        user_class = options.get(77, b"").decode(errors="replace")
        detail = f"{kind} arch={arch} user_class={user_class!r} ipxe={175 in options}"
        return Packet(now, "dhcp", payload[28:34].hex(":"), src, detail)
    return None


def netns_available() -> str | None:
    """None when this process can create network namespaces, else the reason it cannot."""
    if os.geteuid() != 0:
        return "the lab tier needs root (network namespaces, taps, bridges)"
    name = f"pkprobe-{os.getpid()}-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        tap = subprocess.run(
            ["ip", "-n", name, "tuntap", "add", "dev", "pkprobe0", "mode", "tap"],
            capture_output=True,
            text=True,
        )
        if tap.returncode != 0:
            return f"cannot create a tap device in a namespace: {tap.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


@contextmanager
def netlab(vms: int, workdir: Path) -> Iterator[NetLab]:
    """A fresh namespace with a bridge at 192.0.2.1/24 and ``vms`` taps ``pktap0``..

    Deletes the namespace and kills every process it spawned on exit, even on error.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    name = f"pklab-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    lab = NetLab(ns=name, workdir=workdir, taps=[f"pktap{i}" for i in range(vms)])
    try:

        def ip(*args: str) -> None:
            result = subprocess.run(["ip", "-n", name, *args], capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")

        ip("link", "set", "lo", "up")
        ip("link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        ip("addr", "add", f"{SERVER_IP}/{PREFIX_LEN}", "dev", BRIDGE)
        ip("-6", "addr", "add", f"{SERVER_IP6}/64", "dev", BRIDGE, "nodad")
        ip("link", "set", BRIDGE, "up")
        for tap in lab.taps:
            ip("tuntap", "add", "dev", tap, "mode", "tap")
            ip("link", "set", tap, "master", BRIDGE)
            ip("link", "set", tap, "up")
        routes = lab.run(["ip", "-4", "route", "show", "default"]).stdout.strip()
        if routes:
            raise RuntimeError(f"namespace {name} has a default route: {routes}")
        yield lab
    finally:
        lab._teardown()

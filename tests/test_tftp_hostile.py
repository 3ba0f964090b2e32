"""Hostile TFTP datagrams against a running `photonkick serve`: each probe gets the answer it
should (silence, an ERROR code, or the right bytes), the process stays up, logs no traceback
and no forged line, and legitimate clients are served throughout.

Run with -s to see the counts: probes sent, crashes, tracebacks logged.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ports import free_port
from test_tftp import DATA, ERROR, OACK, WRQ, Client, Flood, ack, fetch_asking_again, rrq

MAC = "00:50:56:00:10:01"
CONFIG = "pxelinux.cfg/01-00-50-56-00-10-01"
KERNEL = "releases/5.0/isolinux/vmlinuz"
KERNEL_BYTES = os.urandom(70_000)
SECRET = b"outside the served trees\n"
SPEC = """
server: {{url: "http://127.0.0.1:{port}"}}
hosts:
  - {{name: web01, mac: "{mac}"}}
"""
SERVED, SILENT = "served", "silent"


class Serve:
    """A `photonkick serve` process on loopback, its stderr in a file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        http = free_port()
        spec = root / "lab.yaml"
        spec.write_text(SPEC.format(port=http, mac=MAC))
        release = root / "releases" / "5.0"
        (release / "isolinux").mkdir(parents=True)
        (release / "isolinux" / "vmlinuz").write_bytes(KERNEL_BYTES)
        (root / "secret").write_bytes(SECRET)
        (release / "escape").symlink_to(root / "secret")
        self.log = root / "serve.log"
        exe = Path(sys.executable).parent / "photonkick"
        command = [str(exe), "serve", str(spec), "--http", f"127.0.0.1:{http}"]
        command += ["--tftp", "127.0.0.1:0", "--data", str(root / "releases")]
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            assert self.proc.stdout is not None
            banner = "".join(self.proc.stdout.readline() for _ in range(6))
            found = re.search(r"TFTP       127.0.0.1 port (\d+)", banner)
            assert found, banner + self.log.read_text()
            self.port = int(found.group(1))
            self.config = self.fetch(CONFIG)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        assert b"vmlinuz" in self.config
        self.probes = 0

    def fetch(self, name: str, source: str = "127.0.0.1") -> bytes:
        """A legitimate client's fetch, asking again like a PXE ROM."""
        return fetch_asking_again(self.port, name.encode(), source)

    def assert_serving(self) -> None:
        """The process runs and real clients get their config: raw, tftp-hpa and curl."""
        assert self.proc.poll() is None, self.log.read_text()
        assert self.fetch(CONFIG, "127.0.0.3") == self.config
        out = self.root / "legit.cfg"
        if shutil.which("tftp"):
            command = ["tftp", "-m", "binary", "127.0.0.1", str(self.port), "-c", "get"]
            subprocess.run([*command, CONFIG, str(out)], check=True, timeout=20)
            assert out.read_bytes() == self.config
        else:
            print("tftp-hpa is not installed: no tftp-hpa fetch")
        if shutil.which("curl"):
            url = f"tftp://127.0.0.1:{self.port}/{CONFIG}"
            subprocess.run(["curl", "-sS", "-o", str(out), url], check=True, timeout=20)
            assert out.read_bytes() == self.config
        else:
            print("curl is not installed: no curl fetch")

    def stop(self) -> str:
        """SIGTERM; the whole log."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=15)
        return self.log.read_text()


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    running = Serve(tmp_path_factory.mktemp("hostile"))
    yield running
    crashed = running.proc.poll() is not None
    log = running.stop()
    tracebacks = log.count("Traceback")
    print(f"\nTFTP hostile suite: {running.probes} probes, {int(crashed)} crashes, ", end="")
    print(f"{tracebacks} tracebacks logged")
    assert not crashed and running.proc.returncode == 0, log
    assert tracebacks == 0, log
    assert not [line for line in log.splitlines() if line.startswith("FORGED")], log


@dataclass(frozen=True)
class Probe:
    """Datagrams sent from one fresh port, and the answers allowed to the first of them."""

    label: str
    datagrams: tuple[bytes, ...]
    allowed: frozenset[str]
    content: bytes | None = None  # what a served probe must receive; None: the config
    options: dict[str, str] | None = None  # the OACK a served probe must get


def probe(
    label: str,
    *datagrams: bytes,
    allowed: tuple[str, ...] = (SILENT,),
    content: bytes | None = None,
    options: dict[str, str] | None = None,
) -> Probe:
    return Probe(label, datagrams, frozenset(allowed), content, options)


def config_rrq(options: bytes = b"", mode: bytes = b"octet") -> bytes:
    return rrq(CONFIG.encode(), mode, options)


PROBES = [
    # Truncated or malformed requests.
    probe("empty datagram", b""),
    probe("one byte", b"\0"),
    probe("opcode only", b"\0\x01", allowed=("error 4",)),
    probe("name without NUL", b"\0\x01" + CONFIG.encode(), allowed=("error 4",)),
    probe("no mode", b"\0\x01" + CONFIG.encode() + b"\0", allowed=("error 4",)),
    probe("mode without NUL", b"\0\x01" + CONFIG.encode() + b"\0octet", allowed=("error 4",)),
    probe("one NUL only", b"\0\x01\0", allowed=("error 4",)),
    probe("two NULs only", b"\0\x01\0\0", allowed=("error 2", "error 4")),
    # Opcodes that are no request, to the server port.
    *(probe(f"opcode {n}", struct.pack("!H", n) + b"x\0octet\0") for n in (0, 7, 8, 255, 65535)),
    probe("DATA to the server port", struct.pack("!HH", DATA, 1) + b"payload"),
    probe("ACK to the server port", ack(1)),
    probe("ACK 0 to the server port", ack(0)),
    probe("ERROR to the server port", struct.pack("!HH", ERROR, 0) + b"boom\0"),
    probe("OACK to the server port", struct.pack("!H", OACK) + b"blksize\x00512\0"),
    probe("random bytes", os.urandom(1200)),
    # Writes and modes.
    probe("WRQ", rrq(b"upload.bin", opcode=WRQ), allowed=("error 2",)),
    probe("WRQ over the config", rrq(CONFIG.encode(), opcode=WRQ), allowed=("error 2",)),
    probe("mode mail", config_rrq(mode=b"mail"), allowed=("error 4",)),
    probe("empty mode", config_rrq(mode=b""), allowed=("error 4",)),
    probe("huge mode", config_rrq(mode=b"o" * 1800), allowed=("error 4",)),
    probe("mode OCTET", config_rrq(mode=b"OCTET"), allowed=(SERVED,)),
    # Options: huge, invalid, repeated; blksize, tsize and timeout junk.
    *(
        probe(f"blksize {v!r}", config_rrq(b"blksize\0" + v + b"\0"), allowed=(SERVED,), options={})
        for v in (b"0", b"1", b"7", b"", b"-8", b"abc", b"1e3", b"0x200", b"9" * 40)
    ),
    probe("blksize 8", config_rrq(b"blksize\x008\0"), allowed=(SERVED,), options={"blksize": "8"}),
    *(
        probe(f"blksize {v}", config_rrq(b"blksize\0" + v + b"\0"), allowed=(SERVED,), options=o)
        for v, o in (
            (b"65464", {"blksize": "65464"}),
            (b"65465", {"blksize": "65464"}),
            (b"65536", {"blksize": "65464"}),
            (b"4294967296", {"blksize": "65464"}),
        )
    ),
    *(
        probe(f"tsize {v!r}", config_rrq(b"tsize\0" + v + b"\0"), allowed=(SERVED,), options={})
        for v in (b"", b"-1", b"abc", b"1" * 50, b"\xff\xfe", b" 0")
    ),
    *(
        probe(f"timeout {v!r}", config_rrq(b"timeout\0" + v + b"\0"), allowed=(SERVED,), options={})
        for v in (b"0", b"256", b"-1", b"abc", b"99999999999")
    ),
    probe(
        "500 unknown options",
        config_rrq(b"".join(b"x%d\x001\0" % i for i in range(500))),
        allowed=(SERVED, "error 4"),
    ),
    probe("option name of 1800 bytes", config_rrq(b"a" * 1800 + b"\x001\0"), allowed=(SERVED,)),
    probe(
        "option value of 1800 bytes",
        config_rrq(b"tsize\0" + b"9" * 1800 + b"\0"),
        allowed=(SERVED,),
    ),
    probe("a datagram of 8000 bytes", config_rrq(b"x\0" + b"y" * 8000 + b"\0"), allowed=(SERVED,)),
    probe("odd option fields", config_rrq(b"blksize\x001468\0tsize"), allowed=(SERVED,)),
    probe(
        "repeated blksize",
        config_rrq(b"blksize\x00512\0blksize\x001468\0"),
        allowed=(SERVED,),
    ),
    probe("non-ASCII option", config_rrq("fa\u00e7on\x001\0".encode()), allowed=(SERVED,)),
    probe("option without name", config_rrq(b"\x001468\0"), allowed=(SERVED,)),
    # File names: non-UTF-8, overlong, control characters, traversal.
    probe("latin-1 name", rrq(b"pxelinux.cfg/caf\xe9"), allowed=("error 4",)),
    probe("invalid UTF-8 name", rrq(b"\xff\xfe\xfd"), allowed=("error 4",)),
    probe("UTF-8 name", rrq("pxelinux.cfg/\u00e9t\u00e9".encode()), allowed=("error 4", "error 1")),
    probe("name of 255 bytes", rrq(b"a" * 255), allowed=("error 1",)),
    probe("name of 2000 bytes", rrq(b"releases/5.0/" + b"a" * 1980), allowed=("error 1",)),
    probe(
        "name of 5000 bytes", rrq(b"releases/5.0/" + b"a/" * 2500), allowed=("error 1", "error 4")
    ),
    probe("name of 300 slashes", rrq(b"/" * 300 + b"x"), allowed=("error 1",)),
    probe("control characters", rrq(b"a\nFORGED log line\r\x1b[31m"), allowed=("error 1",)),
    probe("empty name", rrq(b""), allowed=("error 2",)),
    probe("dot", rrq(b"."), allowed=("error 1",)),
    probe("parent", rrq(b"../secret"), allowed=("error 1", "error 2")),
    probe("deep parent", rrq(b"../../../../../../etc/passwd"), allowed=("error 1", "error 2")),
    probe("absolute", rrq(b"/etc/passwd"), allowed=("error 1",)),
    probe("backslashes", rrq(b"..\\..\\etc\\passwd"), allowed=("error 1", "error 2")),
    probe("release parent", rrq(b"releases/5.0/../../secret"), allowed=("error 1", "error 2")),
    probe("release symlink out", rrq(b"releases/5.0/escape"), allowed=("error 1", "error 2")),
    probe("release folder", rrq(b"releases/5.0/isolinux"), allowed=("error 1",)),
    probe("encoded parent", rrq(b"releases/5.0/%2e%2e/%2e%2e/secret"), allowed=("error 1",)),
    probe("bad MAC config", rrq(b"pxelinux.cfg/01-zz-50-56-00-10-01"), allowed=("error 1",)),
    probe("unknown MAC config", rrq(b"pxelinux.cfg/01-00-50-56-99-99-99"), allowed=("error 1",)),
    probe("config with a NUL-free tail", rrq(CONFIG.encode() + b"x" * 100), allowed=("error 1",)),
    # Legitimate requests in odd shapes.
    probe("kernel", rrq(KERNEL.encode()), allowed=(SERVED,), content=KERNEL_BYTES),
    probe(
        "kernel, leading slash",
        rrq(b"/" + KERNEL.encode()),
        allowed=(SERVED,),
        content=KERNEL_BYTES,
    ),
    probe("config, netascii", config_rrq(mode=b"netascii"), allowed=(SERVED,), content=b""),
]


def outcome(client: Client, timeout: float) -> tuple[str, bytes, dict[str, str]]:
    """The first answer within ``timeout`` seconds as 'silent', 'error N' or 'served' (then
    received to the end)."""
    try:
        opcode, rest = client.recv(timeout)
    except TimeoutError:
        return SILENT, b"", {}
    if opcode == ERROR:
        return f"error {struct.unpack('!H', rest[:2])[0]}", b"", {}
    if opcode in (DATA, OACK):
        data, options, _ = client.receive(opcode, rest)
        return SERVED, data, options
    return f"opcode {opcode}", b"", {}


@pytest.mark.parametrize("case", PROBES, ids=[p.label for p in PROBES])
def test_each_hostile_datagram_gets_its_answer(serve: Serve, case: Probe) -> None:
    client = Client(serve.port)
    try:
        for datagram in case.datagrams:
            client.send(datagram)
            serve.probes += 1
        kind, data, options = outcome(client, 0.3 if SILENT in case.allowed else 5.0)
    finally:
        client.close()
    assert kind in case.allowed
    if kind == SERVED:
        expected = serve.config if case.content is None else case.content
        if case.content == b"":  # netascii: the config with CR LF line ends
            expected = serve.config.replace(b"\n", b"\r\n")
        assert data == expected
        if case.options is not None:
            assert options == case.options
    assert SECRET not in data
    assert serve.proc.poll() is None


def test_strangers_and_bad_packets_on_a_transfer_port(serve: Serve) -> None:
    client = Client(serve.port)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        client.send(rrq(KERNEL.encode()))
        first = client.recv()
        assert first[0] == DATA and client.peer is not None
        for datagram in (
            struct.pack("!HH", ERROR, 0) + b"go away\0",
            ack(1),
            rrq(b"../secret"),
            b"\xff",
            b"",
        ):
            stranger.sendto(datagram, client.peer)  # not the client: ignored
            serve.probes += 1
        for datagram in (ack(7), ack(65535), b"\0\x04", b"\0", struct.pack("!HH", DATA, 1) + b"x"):
            client.send(datagram)  # wrong block numbers and junk from the client itself
            serve.probes += 1
        client.send(ack(1))
        opcode, rest = client.recv()
        assert (opcode, rest[:2]) == (DATA, b"\0\x02")
        client.send(struct.pack("!HH", ERROR, 3) + b"disk full\nFORGED log line\0")
        serve.probes += 1
        assert client.silent(0.5)
    finally:
        client.close()
        stranger.close()
    serve.assert_serving()


def test_floods_leave_legitimate_clients_served(serve: Serve) -> None:
    flood = Flood(serve.port, "127.0.0.2", 300)  # never acknowledged
    serve.probes += 300
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    junk.bind(("127.0.0.4", 0))
    try:
        for n in range(2000):
            junk.sendto(os.urandom(n % 600), ("127.0.0.1", serve.port))
            junk.sendto(rrq(b"no-such-file-%d" % n), ("127.0.0.1", serve.port))
        serve.probes += 4000
        for _ in range(5):
            serve.assert_serving()
        assert serve.fetch(KERNEL, "127.0.0.5") == KERNEL_BYTES
    finally:
        flood.close()
        junk.close()


def test_requests_from_a_port_with_an_open_transfer(serve: Serve) -> None:
    client = Client(serve.port)
    try:
        client.send(rrq(KERNEL.encode()))
        client.send(rrq(KERNEL.encode()))  # a copy: answered again by the same transfer
        assert client.recv() == client.recv()
        client.send(ack(1))
        client.recv()
        client.peer = None  # the client starts over from the same port
        data, _, _ = client.fetch(rrq(CONFIG.encode()))
        assert data == serve.config
        serve.probes += 3
    finally:
        client.close()
    serve.assert_serving()


def test_the_server_outlived_every_probe(serve: Serve) -> None:
    time.sleep(0.2)  # the last probes' answers and log lines
    serve.assert_serving()

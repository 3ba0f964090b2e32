"""The embedded TFTP server on loopback: raw datagrams, real clients, bad packets, confinement."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from photonkick.server.tftp import (
    MAX_PER_CLIENT,
    UNACKNOWLEDGED_RETRIES,
    WORKER_GONE,
    TftpServer,
    TftpTransfer,
    confined_file,
)

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6
TIMEOUT = 0.3
RETRIES = 3
MAC_CONFIG = "pxelinux.cfg/01-52-54-00-12-34-56"
MAC_TEXT = b"default photon\nlabel photon\n  kernel vmlinuz\n"
LOADER = os.urandom(100_000)
BIG = os.urandom(5 * 1024 * 1024 + 123)
EXACT = os.urandom(3 * 512)
TEXT = b"line one\nline two\r\nbare cr\rend\n"

CURL = ("curl", "-sS", "--max-time", "60")

needs_curl = pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
needs_tftp_hpa = pytest.mark.skipif(
    not shutil.which("tftp"),
    reason="the tftp-hpa client is not installed (apt-get install tftp-hpa)",
)


class Server:
    """A started TftpServer over a boot tree, and what it reported."""

    def __init__(self, root: Path, *, timeout: float = TIMEOUT, **caps: int) -> None:
        self.root = root
        self.transfers: list[TftpTransfer] = []
        self.asked: list[tuple[str, tuple[str, int]]] = []
        self.tftp = TftpServer(
            self.resolve,
            "127.0.0.1",
            0,
            on_transfer=self.transfers.append,
            timeout=timeout,
            retries=RETRIES,
            **caps,
        )

    def resolve(self, name: str, client: tuple[str, int]) -> bytes | Path | None:
        self.asked.append((name, client))
        if name == MAC_CONFIG:
            return MAC_TEXT
        if name == "broken-resolver":
            raise RuntimeError("a bug in the resolver")
        return confined_file(self.root, name)

    @property
    def port(self) -> int:
        return self.tftp.port

    def wait_transfers(self, count: int) -> list[TftpTransfer]:
        deadline = time.monotonic() + 5
        while len(self.transfers) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.transfers


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A boot tree, plus a secret outside it that a symlink points at."""
    tree = tmp_path / "tftpboot"
    (tree / "pxelinux.cfg").mkdir(parents=True)
    (tree / "pxelinux.0").write_bytes(LOADER)
    (tree / "big.img").write_bytes(BIG)
    (tree / "exact.bin").write_bytes(EXACT)
    (tree / "empty").write_bytes(b"")
    (tree / "notes.txt").write_bytes(TEXT)
    (tree / "pxelinux.cfg" / "default").write_bytes(b"default local\n")
    (tmp_path / "secret").write_bytes(b"outside the boot tree\n")
    (tree / "escape").symlink_to(tmp_path / "secret")
    (tree / "inner").symlink_to(tree / "pxelinux.0")
    return tree


@pytest.fixture
def server(root: Path) -> Iterator[Server]:
    running = Server(root)
    running.tftp.start()
    yield running
    running.tftp.stop()


def rrq(name: bytes, mode: bytes = b"octet", options: bytes = b"", opcode: int = RRQ) -> bytes:
    return struct.pack("!H", opcode) + name + b"\0" + mode + b"\0" + options


def ack(block: int) -> bytes:
    return struct.pack("!HH", ACK, block)


def parse_options(payload: bytes) -> dict[str, str]:
    fields = payload.split(b"\0")[:-1]
    return {k.decode(): v.decode() for k, v in zip(fields[::2], fields[1::2], strict=True)}


class Client:
    """A plain UDP socket that speaks TFTP exactly as a test tells it to."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.peer: tuple[str, int] | None = None

    def send(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, self.peer or self.server)

    def recv(self, timeout: float = 2.0) -> tuple[int, bytes]:
        """The next datagram as (opcode, rest); the transfer's port becomes the peer."""
        self.sock.settimeout(timeout)
        datagram, address = self.sock.recvfrom(70000)
        self.peer = address
        return struct.unpack("!H", datagram[:2])[0], datagram[2:]

    def silent(self, seconds: float) -> bool:
        """Whether nothing arrives for ``seconds``."""
        try:
            self.recv(seconds)
        except TimeoutError:
            return True
        return False

    def error(self) -> tuple[int, str]:
        opcode, rest = self.recv()
        assert opcode == ERROR, (opcode, rest)
        return struct.unpack("!H", rest[:2])[0], rest[2:].rstrip(b"\0").decode()

    def fetch(self, request: bytes) -> tuple[bytes, dict[str, str], list[int]]:
        """Send ``request`` and ACK everything: the data, the OACK options, the DATA sizes."""
        self.send(request)
        return self.receive(*self.recv())

    def receive(self, opcode: int, rest: bytes) -> tuple[bytes, dict[str, str], list[int]]:
        """Go on from the first answer to a request (an OACK or DATA 1) to the end."""
        options: dict[str, str] = {}
        if opcode == OACK:
            options = parse_options(rest)
            self.send(ack(0))
            opcode, rest = self.recv()
        blksize = int(options.get("blksize", 512))
        data, sizes, expected = bytearray(), [], 1
        while True:
            assert opcode == DATA, (opcode, rest)
            block = struct.unpack("!H", rest[:2])[0]
            assert block == expected & 0xFFFF
            data += rest[2:]
            sizes.append(len(rest) - 2)
            self.send(ack(block))
            if len(rest) - 2 < blksize:
                return bytes(data), options, sizes
            expected += 1
            opcode, rest = self.recv()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    raw = Client(server.port)
    yield raw
    raw.close()


def fetch_asking_again(port: int, name: bytes, source: str, attempts: int = 5) -> bytes:
    """Fetch ``name`` with blksize 1468 and, like a PXE ROM, ask again from a new port when a
    second passes without an answer: under a flood the kernel drops datagrams that arrive
    while the listener's buffer is full, and a real client's first request may be one."""
    for _ in range(attempts):
        client = Client(port, source)
        try:
            client.send(rrq(name, options=b"blksize\x001468\0"))
            return client.receive(*client.recv(1.0))[0]
        except TimeoutError:
            continue
        finally:
            client.close()
    raise AssertionError(f"{attempts} requests for {name!r} from {source} got no answer")


def failed(transfers: list[TftpTransfer]) -> list[TftpTransfer]:
    """The failed transfers among ``transfers``: transfers on different workers are reported
    in the order they end, not the order they began."""
    return [t for t in transfers if not t.ok]


def assert_still_serves(server: Server) -> None:
    fresh = Client(server.port)
    try:
        data, _, _ = fresh.fetch(rrq(b"pxelinux.0", options=b"blksize\x001468\0"))
    finally:
        fresh.close()
    assert data == LOADER


def test_plain_read_request_uses_512_byte_blocks(server: Server, client: Client) -> None:
    data, options, sizes = client.fetch(rrq(b"pxelinux.0"))
    assert data == LOADER
    assert options == {}
    assert set(sizes[:-1]) == {512} and sizes[-1] == len(LOADER) % 512


def test_blksize_and_tsize_are_acknowledged_in_an_oack(server: Server, client: Client) -> None:
    data, options, sizes = client.fetch(rrq(b"big.img", options=b"tsize\x000\0blksize\x001468\0"))
    assert data == BIG
    assert options == {"tsize": str(len(BIG)), "blksize": "1468"}
    assert set(sizes[:-1]) == {1468}


@pytest.mark.parametrize(
    ("asked", "granted"), [(b"70000", "65464"), (b"65464", "65464"), (b"8", "8")]
)
def test_blksize_is_clamped_to_the_rfc_range(
    server: Server, client: Client, asked: bytes, granted: str
) -> None:
    data, options, _ = client.fetch(rrq(b"pxelinux.0", options=b"BLKSIZE\0" + asked + b"\0"))
    assert data == LOADER
    assert options == {"blksize": granted}


@pytest.mark.parametrize(
    "options", [b"blksize\x004\0", b"blksize\0abc\0", b"blksize\0-1\0", b"blksize\0" + b"9" * 5000]
)
def test_bad_blksize_is_ignored(server: Server, client: Client, options: bytes) -> None:
    data, granted, sizes = client.fetch(rrq(b"pxelinux.0", options=options))
    assert data == LOADER
    assert granted == {}
    assert sizes[0] == 512
    assert_still_serves(server)


def test_timeout_option_is_echoed_and_bad_ones_ignored(server: Server, client: Client) -> None:
    _, options, _ = client.fetch(rrq(b"empty", options=b"timeout\x003\0"))
    assert options == {"timeout": "3"}
    other = Client(server.port)
    _, options, _ = other.fetch(rrq(b"empty", options=b"timeout\x00300\0tsize\x000\0"))
    other.close()
    assert options == {"tsize": "0"}


def test_unknown_options_are_left_out_of_the_oack(server: Server, client: Client) -> None:
    data, options, _ = client.fetch(rrq(b"pxelinux.0", options=b"windowsize\x004\0tsize\x000\0"))
    assert data == LOADER
    assert options == {"tsize": str(len(LOADER))}


def test_per_mac_config_is_served_from_memory(server: Server, client: Client) -> None:
    data, options, _ = client.fetch(rrq(MAC_CONFIG.encode(), options=b"tsize\x000\0"))
    assert data == MAC_TEXT
    assert options == {"tsize": str(len(MAC_TEXT))}
    assert not (server.root / MAC_CONFIG).exists()


def test_resolver_gets_the_normalized_name_and_the_client(server: Server, client: Client) -> None:
    data, _, _ = client.fetch(rrq(b"/pxelinux.cfg\\default"))
    assert data == b"default local\n"
    assert server.asked == [("pxelinux.cfg/default", client.sock.getsockname())]


def test_write_request_is_refused_and_writes_nothing(server: Server, client: Client) -> None:
    before = sorted(p.name for p in server.root.rglob("*"))
    client.send(rrq(b"uploaded.bin", opcode=WRQ))
    assert client.error() == (2, "access violation: the server is read-only")
    client.peer = None
    client.send(struct.pack("!HH", DATA, 1) + b"payload")
    assert client.silent(0.2)
    assert sorted(p.name for p in server.root.rglob("*")) == before
    [transfer] = server.wait_transfers(1)
    assert (transfer.filename, transfer.ok) == ("uploaded.bin", False)
    assert_still_serves(server)


def test_non_ascii_filename_gets_an_error(server: Server, client: Client) -> None:
    client.send(rrq("pxelinux.0-\u00e9".encode()))
    assert client.error()[0] == 4
    assert_still_serves(server)


@pytest.mark.parametrize(
    "options",
    [
        b"blksize\x001468",  # the last option has no NUL
        b"blksize\x001468\0tsize",  # an odd number of fields
        "blksize\x001468\0fa\u00e7on\x001\0".encode(),  # a non-ASCII option name
        "blksize\x00\u0661\u0664\0".encode(),  # non-ASCII digits
        b"tsize\0\0",  # an empty value
    ],
)
def test_malformed_options_are_dropped_and_the_file_served(
    server: Server, client: Client, options: bytes
) -> None:
    data, granted, sizes = client.fetch(rrq(b"pxelinux.0", options=options))
    assert data == LOADER
    assert granted == {}
    assert sizes[0] == 512
    assert_still_serves(server)


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\0",
        b"\xff\xff",
        b"\0\x01",  # a RRQ with nothing in it
        b"\0\x01pxelinux.0",  # no NUL after the name
        b"\0\x01pxelinux.0\0octet",  # no NUL after the mode
        b"\0\x03\0\x01data",  # DATA to the listener
        b"\0\x04\0\x01",  # ACK to the listener
        b"\0\x05\0\x01oops\0",  # ERROR to the listener
        b"\0\x06blksize\x00512\0",  # OACK to the listener
        b"\0\x09junk",
        os.urandom(1500),
        b"\0\x01" + b"A" * 3000,
    ],
)
def test_garbage_never_stops_the_server(server: Server, client: Client, datagram: bytes) -> None:
    client.send(datagram)
    if datagram.startswith((b"\0\x01", b"\0\x02")):
        assert client.error()[0] == 4
    else:
        assert client.silent(0.1)
    assert_still_serves(server)


def test_unsupported_mode_is_refused(server: Server, client: Client) -> None:
    client.send(rrq(b"pxelinux.0", mode=b"mail"))
    assert client.error()[0] == 4
    other = Client(server.port)
    data, _, _ = other.fetch(rrq(b"pxelinux.0", mode=b"OCTET"))
    other.close()
    assert data == LOADER


def test_netascii_mode_converts_line_ends(server: Server, client: Client) -> None:
    data, options, _ = client.fetch(rrq(b"notes.txt", mode=b"netascii", options=b"tsize\x000\0"))
    assert data == b"line one\r\nline two\r\0\r\nbare cr\r\0end\r\n"
    assert options == {"tsize": str(len(data))}


def test_unknown_file_gets_error_1(server: Server, client: Client) -> None:
    client.send(rrq(b"no/such/file"))
    assert client.error() == (1, "file not found")
    [transfer] = server.wait_transfers(1)
    assert transfer == TftpTransfer(
        "no/such/file", "127.0.0.1", 0, transfer.seconds, False, "file not found"
    )


def test_resolver_failure_is_file_not_found(server: Server, client: Client) -> None:
    client.send(rrq(b"broken-resolver"))
    assert client.error()[0] == 1
    assert_still_serves(server)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        (b"escape", 1),  # a symlink out of the boot tree
        (b"../secret", 2),
        (b"pxelinux.cfg/../../secret", 2),
        (b"..\\secret", 2),
        (b"pxelinux.cfg", 1),  # a folder
        (b"", 2),
    ],
)
def test_nothing_outside_the_boot_tree_is_served(
    server: Server, client: Client, name: bytes, code: int
) -> None:
    client.send(rrq(name))
    assert client.error()[0] == code
    assert_still_serves(server)


def test_absolute_names_stay_inside_the_boot_tree(server: Server, client: Client) -> None:
    client.send(rrq(str(server.root.parent / "secret").encode()))
    assert client.error()[0] == 1
    other = Client(server.port)
    data, _, _ = other.fetch(rrq(b"/inner"))  # a symlink that stays inside is fine
    other.close()
    assert data == LOADER


def test_empty_file_is_one_empty_data_block(server: Server, client: Client) -> None:
    data, options, sizes = client.fetch(rrq(b"empty", options=b"tsize\x000\0"))
    assert (data, options, sizes) == (b"", {"tsize": "0"}, [0])


def test_multiple_of_the_block_size_ends_with_an_empty_block(
    server: Server, client: Client
) -> None:
    data, _, sizes = client.fetch(rrq(b"exact.bin"))
    assert data == EXACT
    assert sizes == [512, 512, 512, 0]
    [transfer] = server.wait_transfers(1)
    assert (transfer.ok, transfer.size, transfer.client) == (True, len(EXACT), "127.0.0.1")


def test_lost_ack_makes_the_server_resend(root: Path) -> None:
    running = Server(root, timeout=1.0)
    running.tftp.start()
    client = Client(running.port)
    try:
        client.send(rrq(b"pxelinux.0"))
        first = client.recv()
        started = time.monotonic()
        again = client.recv()  # the first DATA is never acknowledged
        assert again == first
        assert time.monotonic() - started >= 0.5
        client.send(ack(1))
        assert client.recv()[1][:2] == b"\0\x02"
        client.send(ack(1))  # a duplicate ACK must not trigger a resend
        assert client.silent(0.5)
    finally:
        client.close()
        running.tftp.stop()


def test_a_silent_client_is_given_up(server: Server, client: Client) -> None:
    client.send(rrq(b"pxelinux.0"))
    client.recv()
    client.send(ack(1))
    copies = 0
    while not client.silent(TIMEOUT * 3):
        copies += 1
    assert copies == RETRIES + 1
    [transfer] = server.wait_transfers(1)
    assert not transfer.ok
    assert "no acknowledgement of block 2" in (transfer.error or "")
    assert_still_serves(server)


def test_a_client_that_never_acknowledges_is_given_up_sooner(
    server: Server, client: Client
) -> None:
    client.send(rrq(b"pxelinux.0", options=b"blksize\x001468\0"))
    copies = 0
    while not client.silent(TIMEOUT * 3):
        copies += 1
    assert copies == UNACKNOWLEDGED_RETRIES + 1 < RETRIES + 1
    [transfer] = server.wait_transfers(1)
    assert transfer.error == "no acknowledgement of block 0 after 2 retries"
    assert_still_serves(server)


def test_client_error_ends_the_transfer(server: Server, client: Client) -> None:
    client.send(rrq(b"big.img"))
    client.recv()
    client.send(struct.pack("!HH", ERROR, 0) + b"disk full\0")
    [transfer] = server.wait_transfers(1)
    assert transfer.error == "the client sent an error: 0 disk full"
    assert client.silent(TIMEOUT * 2)


def test_a_repeated_request_is_answered_again_by_the_same_transfer(
    server: Server, client: Client
) -> None:
    client.send(rrq(b"pxelinux.0"))
    client.send(rrq(b"pxelinux.0"))  # a retransmitted request: our first answer was slow
    first, again = client.recv(), client.recv()
    transfer_port = client.peer
    assert first == again and first[1][:2] == b"\0\x01"
    client.send(ack(1))
    assert client.recv()[1][:2] == b"\0\x02"
    assert client.peer == transfer_port
    assert len(server.asked) == 1


def test_a_new_request_after_a_lost_last_ack_is_served_at_once(root: Path) -> None:
    running = Server(root, timeout=30.0)  # the old transfer would wait that long for its ACK
    running.tftp.start()
    client = Client(running.port)
    try:
        client.send(rrq(MAC_CONFIG.encode(), options=b"tsize\x000\0"))
        assert client.recv()[0] == OACK
        client.send(ack(0))
        opcode, rest = client.recv()
        assert (opcode, rest[2:]) == (DATA, MAC_TEXT)  # its ACK is lost on the way back
        old_port, client.peer = client.peer, None
        data, _, _ = client.fetch(rrq(b"pxelinux.0", options=b"blksize\x001468\0"))
        assert data == LOADER
        assert client.peer != old_port
        first = failed(running.wait_transfers(2))[0]
        assert (first.filename, first.size) == (MAC_CONFIG, 0)
        assert first.error == "the client sent a new request from the same port"
    finally:
        client.close()
        running.tftp.stop()


def test_the_same_request_after_a_lost_last_ack_gets_the_answer_again(root: Path) -> None:
    running = Server(root, timeout=30.0)
    running.tftp.start()
    client = Client(running.port)
    try:
        client.send(rrq(MAC_CONFIG.encode()))  # no options: the first answer is all the data
        assert client.recv() == (DATA, b"\0\x01" + MAC_TEXT)
        first_port, client.peer = client.peer, None
        data, _, _ = client.fetch(rrq(MAC_CONFIG.encode()))
        assert (data, client.peer) == (MAC_TEXT, first_port)
        [transfer] = running.wait_transfers(1)
        assert (transfer.ok, transfer.size) == (True, len(MAC_TEXT))
    finally:
        client.close()
        running.tftp.stop()


def test_a_client_restarting_mid_transfer_gets_a_new_transfer(
    server: Server, client: Client
) -> None:
    client.send(rrq(b"pxelinux.0"))
    client.recv()
    client.send(ack(1))
    assert client.recv()[1][:2] == b"\0\x02"
    old_port, client.peer = client.peer, None
    data, _, _ = client.fetch(rrq(b"pxelinux.0"))
    assert data == LOADER and client.peer != old_port
    [first] = failed(server.wait_transfers(2))
    [second] = [t for t in server.transfers if t.ok]
    assert (first.ok, first.size, first.error) == (
        False,
        512,
        "the client sent a new request from the same port",
    )
    assert (second.ok, second.size) == (True, len(LOADER))


def test_strangers_cannot_disturb_a_transfer(server: Server, client: Client) -> None:
    client.send(rrq(b"pxelinux.0"))
    client.recv()
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert client.peer is not None
    stranger.sendto(struct.pack("!HH", ERROR, 0) + b"go away\0", client.peer)
    stranger.sendto(b"\xff", client.peer)
    stranger.close()
    client.send(ack(1))
    opcode, rest = client.recv()
    assert (opcode, rest[:2]) == (DATA, b"\0\x02")


def test_concurrent_clients(server: Server) -> None:
    results: dict[int, bytes] = {}

    def fetch(i: int) -> None:
        raw = Client(server.port)
        name = [b"big.img", MAC_CONFIG.encode(), b"pxelinux.0"][i % 3]
        results[i] = raw.fetch(rrq(name, options=b"blksize\x001468\0"))[0]
        raw.close()

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {i: [BIG, MAC_TEXT, LOADER][i % 3] for i in range(24)}
    assert len(server.wait_transfers(24)) == 24
    assert all(t.ok for t in server.transfers)


def test_hook_failure_does_not_stop_the_server(root: Path) -> None:
    def hook(transfer: TftpTransfer) -> None:
        raise RuntimeError("a bug in the hook")

    tftp = TftpServer(
        lambda name, client: confined_file(root, name), "127.0.0.1", 0, on_transfer=hook
    )
    tftp.start()
    try:
        for _ in range(2):
            raw = Client(tftp.port)
            assert raw.fetch(rrq(b"pxelinux.0"))[0] == LOADER
            raw.close()
    finally:
        tftp.stop()


def test_stop_ends_transfers_and_frees_the_port(root: Path) -> None:
    running = Server(root, timeout=30.0)
    running.tftp.start()
    port = running.port
    raw = Client(port)
    raw.send(rrq(b"big.img"))
    raw.recv()
    started = time.monotonic()
    running.tftp.stop()
    assert time.monotonic() - started < 1.0
    assert [t.error for t in running.transfers] == ["the server stopped"]
    assert not [t for t in threading.enumerate() if t.name.startswith("tftp")]
    for pid in running.tftp.worker_pids():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # exited and reaped
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", port))
    raw.close()


def test_resolver_paths_are_trusted_but_must_be_regular_files(root: Path) -> None:
    os.mkfifo(root / "fifo")
    paths = {"fifo": root / "fifo", "folder": root / "pxelinux.cfg", "loader": root / "inner"}

    def resolve(name: str, client: tuple[str, int]) -> bytes | Path | None:
        if name == "wrong-type":
            return cast(bytes, "a resolver bug")
        return paths.get(name)

    tftp = TftpServer(resolve, "127.0.0.1", 0)
    tftp.start()
    try:
        for name, code in ((b"fifo", 1), (b"folder", 1), (b"wrong-type", 0)):
            raw = Client(tftp.port)
            raw.send(rrq(name))
            assert raw.error()[0] == code
            raw.close()
        raw = Client(tftp.port)
        assert raw.fetch(rrq(b"loader"))[0] == LOADER  # a symlink the resolver chose
        raw.close()
    finally:
        tftp.stop()


def test_start_twice_is_an_error_and_stop_before_start_is_harmless(root: Path) -> None:
    tftp = TftpServer(lambda name, client: None, "127.0.0.1", 0)
    tftp.stop()
    fresh = TftpServer(lambda name, client: None, "127.0.0.1", 0)
    fresh.start()
    try:
        assert fresh.port != 0
        with pytest.raises(RuntimeError):
            fresh.start()
    finally:
        fresh.stop()


def curl(port: int, name: str, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    url = f"tftp://127.0.0.1:{port}/{name}"
    return subprocess.run(
        [*CURL, *options, "-o", str(out), url], capture_output=True, text=True, timeout=90
    )


@needs_curl
@pytest.mark.parametrize("blksize", ["512", "1468"])
@pytest.mark.parametrize(
    ("name", "content"), [("big.img", BIG), ("exact.bin", EXACT), (MAC_CONFIG, MAC_TEXT)]
)
def test_curl_fetches_the_same_bytes(
    server: Server, tmp_path: Path, blksize: str, name: str, content: bytes
) -> None:
    out = tmp_path / "out"
    result = curl(server.port, name, out, "--tftp-blksize", blksize)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == content


@needs_curl
def test_curl_empty_file_and_unknown_file(server: Server, tmp_path: Path) -> None:
    # curl refuses an OACK with tsize 0, whatever the server, so it asks for no options here.
    result = curl(server.port, "empty", tmp_path / "empty", "--tftp-no-options")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "empty").read_bytes() == b""
    result = curl(server.port, "missing", tmp_path / "missing")
    assert result.returncode == 68, result.stderr  # CURLE_TFTP_NOTFOUND


@needs_curl
def test_curl_block_numbers_roll_over(server: Server, tmp_path: Path, root: Path) -> None:
    content = os.urandom(65536 * 16 + 5)
    (root / "rollover.bin").write_bytes(content)
    result = curl(server.port, "rollover.bin", tmp_path / "out", "--tftp-blksize", "16")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out").read_bytes() == content


@needs_curl
def test_concurrent_curl_clients(server: Server, tmp_path: Path) -> None:
    url = f"tftp://127.0.0.1:{server.port}"
    procs = [
        subprocess.Popen(
            [*CURL, "--tftp-blksize", "1468"]
            + ["-o", str(tmp_path / f"{i}.0"), f"{url}/pxelinux.0"]
            + ["-o", str(tmp_path / f"{i}.cfg"), f"{url}/{MAC_CONFIG}"]
        )
        for i in range(20)
    ]
    assert [p.wait(90) for p in procs] == [0] * 20
    for i in range(20):
        assert (tmp_path / f"{i}.0").read_bytes() == LOADER
        assert (tmp_path / f"{i}.cfg").read_bytes() == MAC_TEXT


def tftp_hpa(port: int, mode: str, name: str, out: Path) -> subprocess.CompletedProcess[str]:
    # The tftp-hpa client negotiates no options: it always uses 512-byte blocks.
    return subprocess.run(
        ["tftp", "-m", mode, "127.0.0.1", str(port), "-c", "get", name, str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_tftp_hpa
@pytest.mark.parametrize(
    ("name", "content"), [("big.img", BIG), ("exact.bin", EXACT), ("empty", b"")]
)
def test_tftp_hpa_fetches_the_same_bytes(
    server: Server, tmp_path: Path, name: str, content: bytes
) -> None:
    out = tmp_path / "out"
    result = tftp_hpa(server.port, "binary", name, out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes() == content


@needs_tftp_hpa
def test_tftp_hpa_ascii_mode_and_errors(server: Server, tmp_path: Path) -> None:
    result = tftp_hpa(server.port, "ascii", "notes.txt", tmp_path / "notes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "notes").read_bytes() == TEXT
    result = tftp_hpa(server.port, "binary", "missing", tmp_path / "missing")
    assert "Error code 1: file not found" in result.stdout + result.stderr


def test_confined_file(tmp_path: Path, root: Path) -> None:
    assert confined_file(root, "pxelinux.0") == root / "pxelinux.0"
    assert confined_file(root, "pxelinux.cfg/default") == root / "pxelinux.cfg" / "default"
    assert confined_file(root, "inner") == root / "pxelinux.0"
    for name in [
        "escape",
        "../secret",
        "pxelinux.cfg/../pxelinux.0",
        "/etc/passwd",
        str(root / "pxelinux.0"),
        "pxelinux.cfg",
        "missing",
        "",
        "a\0b",
        ".",
    ]:
        assert confined_file(root, name) is None, name
    os.mkfifo(root / "fifo")
    (root / "loop").symlink_to(root / "loop")
    (root / "dangling").symlink_to(root / "nothing")
    for name in ["fifo", "loop", "dangling"]:
        assert confined_file(root, name) is None, name


def test_confined_file_through_a_symlinked_root(tmp_path: Path, root: Path) -> None:
    link = tmp_path / "link-to-root"
    link.symlink_to(root)
    assert confined_file(link, "pxelinux.0") == root / "pxelinux.0"
    assert confined_file(link, "escape") is None


class Flood:
    """Read requests from many ports of one address that are never acknowledged."""

    def __init__(self, port: int, source: str, count: int) -> None:
        self.socks = []
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((source, 0))
            sock.sendto(rrq(b"pxelinux.0"), ("127.0.0.1", port))
            self.socks.append(sock)

    def answered(self, seconds: float = 2.0) -> int:
        """How many of the requests got an answer within ``seconds``."""
        deadline, count = time.monotonic() + seconds, 0
        for sock in self.socks:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                sock.recv(1024)
            except TimeoutError:
                continue
            count += 1
        return count

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def test_a_flood_from_one_address_leaves_every_other_client_served(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = Server(root, timeout=30.0)  # the flood holds its transfers for the whole test
    running.tftp.start()
    flood = Flood(running.port, "127.0.0.2", 300)
    try:
        assert flood.answered() == MAX_PER_CLIENT
        for _ in range(10):
            assert fetch_asking_again(running.port, b"pxelinux.0", "127.0.0.3") == LOADER
            assert fetch_asking_again(running.port, MAC_CONFIG.encode(), "127.0.0.3") == MAC_TEXT
        if shutil.which("tftp"):  # tftp-hpa, from 127.0.0.1
            result = tftp_hpa(running.port, "binary", "pxelinux.0", tmp_path / "hpa")
            assert result.returncode == 0, result.stdout + result.stderr
            assert (tmp_path / "hpa").read_bytes() == LOADER
        else:
            print("tftp-hpa is not installed: raw datagrams only")
        busy = [r.message for r in caplog.records if "busy" in r.message]
        assert busy == [
            "busy: dropping requests from 127.0.0.2 for a while: "
            f"it has {MAX_PER_CLIENT} transfers open"
        ]
    finally:
        flood.close()
        running.tftp.stop()


def test_a_full_table_makes_room_by_ending_unacknowledged_transfers(root: Path) -> None:
    running = Server(root, timeout=30.0, max_transfers=8, max_per_client=4)
    running.tftp.start()
    floods = [Flood(running.port, f"127.0.0.{n}", 4) for n in (10, 11)]
    try:
        assert [f.answered() for f in floods] == [4, 4]
        assert fetch_asking_again(running.port, b"pxelinux.0", "127.0.0.3") == LOADER
        displaced = failed(running.wait_transfers(2))[0]
        assert displaced.error == "never acknowledged, ended to make room for a new request"
        assert displaced.client == "127.0.0.10"
    finally:
        for flood in floods:
            flood.close()
        running.tftp.stop()


def test_a_table_full_of_acknowledged_transfers_drops_new_requests(root: Path) -> None:
    running = Server(root, timeout=30.0, max_transfers=2)
    running.tftp.start()
    clients = [Client(running.port, f"127.0.0.{n}") for n in (10, 11, 12)]
    try:
        for busy in clients[:2]:
            busy.send(rrq(b"pxelinux.0"))
            busy.recv()
            busy.send(ack(1))
            busy.recv()
        clients[2].send(rrq(b"pxelinux.0"))
        assert clients[2].silent(0.3)  # dropped as if lost: a real client asks again
        clients[0].send(struct.pack("!HH", ERROR, 0) + b"giving up\0")
        running.wait_transfers(1)
        clients[2].peer = None
        assert clients[2].fetch(rrq(b"pxelinux.0"))[0] == LOADER
    finally:
        for raw in clients:
            raw.close()
        running.tftp.stop()


def test_caps_stay_exact_with_transfers_on_several_workers(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = Server(root, max_transfers=4, max_per_client=2, workers=3)
    running.tftp.start()
    seen: list[dict[str, int]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            seen.append(running.tftp.open_transfers())
            time.sleep(0.001)

    names = [b"big.img", b"exact.bin", MAC_CONFIG.encode()]  # big.img holds its slot longest
    results: dict[int, bytes | Exception] = {}

    def fetch(i: int) -> None:
        try:
            results[i] = fetch_asking_again(running.port, names[i % 3], f"127.0.1.{i % 4}", 60)
        except Exception as error:  # reported below with the others
            results[i] = error

    sampler = threading.Thread(target=sample)
    sampler.start()
    clients = [threading.Thread(target=fetch, args=(i,)) for i in range(12)]
    try:
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(120)
    finally:
        sampling.set()
        sampler.join()
        running.tftp.stop()
    assert results == {i: [BIG, EXACT, MAC_TEXT][i % 3] for i in range(12)}
    assert max(sum(counts.values()) for counts in seen) <= 4
    assert max(max(counts.values(), default=0) for counts in seen) <= 2
    displaced = [t for t in running.transfers if t.error and "make room" in t.error]
    dropped = [r for r in caplog.records if r.message.startswith("busy: dropping")]
    assert displaced or dropped  # the caps were under pressure, not just never reached
    assert running.tftp.open_transfers() == {}  # every slot was given back exactly once
    assert sum(t.ok for t in running.transfers) == 12


def test_a_killed_worker_is_replaced_and_its_transfer_reported(root: Path) -> None:
    running = Server(root, timeout=30.0, workers=2)
    running.tftp.start()
    client = Client(running.port)
    try:
        client.send(rrq(b"big.img"))
        client.recv()
        pids = running.tftp.worker_pids()
        os.kill(pids[0], signal.SIGKILL)  # the first transfer went to the first worker
        [transfer] = running.wait_transfers(1)
        assert (transfer.ok, transfer.error) == (False, WORKER_GONE)
        assert running.tftp.open_transfers() == {}
        for _ in range(4):  # both workers, the new one included, serve
            assert fetch_asking_again(running.port, b"pxelinux.0", "127.0.0.1") == LOADER
        fresh = running.tftp.worker_pids()
        assert fresh[0] != pids[0] and fresh[1] == pids[1]
    finally:
        client.close()
        running.tftp.stop()


def test_a_changed_file_is_sent_as_it_is_now(root: Path) -> None:
    running = Server(root, workers=1)  # one worker: the second fetch would hit its cache
    running.tftp.start()
    try:
        assert fetch_asking_again(running.port, b"exact.bin", "127.0.0.1") == EXACT
        changed = bytes(reversed(EXACT))  # same size: only the modification time tells
        (root / "exact.bin").write_bytes(changed)
        os.utime(root / "exact.bin", ns=(0, time.time_ns() + 1_000_000))
        assert fetch_asking_again(running.port, b"exact.bin", "127.0.0.1") == changed
        replacement = root / "exact.new"
        replacement.write_bytes(EXACT[:700])
        replacement.replace(root / "exact.bin")
        assert fetch_asking_again(running.port, b"exact.bin", "127.0.0.1") == EXACT[:700]
        assert fetch_asking_again(running.port, b"exact.bin", "127.0.0.1") == EXACT[:700]
    finally:
        running.tftp.stop()

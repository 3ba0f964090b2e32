"""The embedded TFTP server: read-only, confined to the boot tree, never stopped by a bad packet.

tftpy encodes and decodes the request, OACK and ERROR packets. The DATA/ACK exchange is the hot
path of a transfer, so it is packed and matched with ``struct`` and bytes comparisons instead.
Each transfer has a socket of its own, connected to the client; one thread serves them all
from an epoll loop, which keeps the interpreter lock out of the way of a hundred clients.

Floods of requests that are never acknowledged cannot starve other clients: one client address
holds at most ``MAX_PER_CLIENT`` transfers (its further requests are dropped, as if lost, so a
real client simply retries), and when the whole table is full a new request displaces the
oldest transfer that was never acknowledged, and such a transfer is given up after at most
``UNACKNOWLEDGED_RETRIES`` resends. A new request from the (address, port) of an open
transfer means the client has moved on (its last ACK was lost): it ends that transfer, unless
it repeats the request of a transfer not acknowledged yet, which then sends its packet again.
"""

from __future__ import annotations

import io
import logging
import os
import re
import select
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tftpy.TftpPacketFactory import TftpPacketFactory
from tftpy.TftpPacketTypes import TftpPacketERR, TftpPacketOACK
from tftpy.TftpShared import MIN_BLKSIZE, TftpException

from photonkick.server.confine import confined_file as confined_file

Resolver = Callable[[str, tuple[str, int]], bytes | Path | None]

log = logging.getLogger("photonkick.server.tftp")

RRQ, WRQ, DATA, ACK, ERROR = 1, 2, 3, 4, 5
DEFAULT_BLKSIZE = 512
MAX_BLKSIZE = 65464  # RFC 2348
MAX_REQUEST = 2048
MAX_ACK = 516
MAX_BURST = 64  # requests taken from the listener per wake-up
MAX_TRANSFERS = 256  # each holds a socket and maybe a file: stay far below 1024 fds
MAX_PER_CLIENT = 32  # PXE clients fetch one file at a time; this leaves room for NAT
UNACKNOWLEDGED_RETRIES = 2  # resends of a first packet: a forged address never answers
WARN_EVERY = 10.0  # seconds between two warnings about the same client's dropped requests
TICK = 0.05  # seconds between timeout sweeps; also bounds how long stop() waits for the loop
STOP_WAIT = 5.0
NOT_FOUND = "file not found"
NAME_MAX = 255  # bytes in one path component: a longer one names no file
SHOWN = 120  # characters of a client's text kept in a log line
READ_BUFFER = 64 * 1024

_HEADER = struct.Struct("!HH")
_ERROR = bytes((0, ERROR))
_FACTORY = TftpPacketFactory()
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class TftpTransfer:
    """One finished (or refused) read request, as reported to ``on_transfer``.

    ``client`` is the client's IP address; ``size`` counts the bytes the client acknowledged.
    """

    filename: str
    client: str
    size: int
    seconds: float
    ok: bool
    error: str | None


class _Refused(Exception):
    """A request answered with a TFTP ERROR packet."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class _Request:
    opcode: int
    filename: str
    mode: str
    options: dict[str, str]


class TftpServer:
    """A read-only TFTP server over a resolver, with RFC 2347/2348/2349 options.

    ``resolve`` maps a normalized relative filename and the client address to bytes, a Path
    (trusted: already confined to the boot tree, see ``confined_file``) or None (file not
    found). Only regular files are sent.
    ``timeout`` is the retransmission timeout in seconds and ``retries`` how many times a
    packet is resent before the transfer is given up. At most ``max_transfers`` transfers are
    open at once, ``max_per_client`` of them for one client address. One thread serves every
    transfer from an epoll loop, so ``resolve`` and ``on_transfer`` run on it and must return
    quickly.
    """

    def __init__(
        self,
        resolve: Resolver,
        host: str = "0.0.0.0",
        port: int = 69,
        *,
        on_transfer: Callable[[TftpTransfer], None] | None = None,
        timeout: float = 2.0,
        retries: int = 5,
        max_transfers: int = MAX_TRANSFERS,
        max_per_client: int = MAX_PER_CLIENT,
    ) -> None:
        self._resolve = resolve
        self._host = host
        self._port = port
        self._on_transfer = on_transfer
        self._timeout = timeout
        self._retries = retries
        self._max_transfers = max_transfers
        self._max_per_client = max_per_client
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock: socket.socket | None = None
        self._epoll: select.epoll | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._sessions: dict[int, _Session] = {}  # by socket fd, oldest first
        self._clients: dict[tuple[str, int], _Session] = {}  # by the client's (address, port)
        self._per_host: dict[str, int] = {}  # open transfers by client address
        self._warned: dict[str, float] = {}  # when each address's drops were last logged

    @property
    def port(self) -> int:
        """The UDP port served on: the bound one once started (useful with ``port=0``)."""
        return self._port

    def start(self) -> None:
        """Bind the listening socket and serve in a background thread."""
        if self._sock is not None:
            raise RuntimeError("a TFTP server starts only once")
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        self._port = sock.getsockname()[1]
        self._epoll = select.epoll()
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        self._thread = threading.Thread(target=self._serve, name="tftp", daemon=True)
        self._thread.start()
        log.info("TFTP server on %s port %d", self._host, self._port)

    def stop(self) -> None:
        """Stop serving: end every transfer, join the thread and close the sockets."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(STOP_WAIT)

    def _serve(self) -> None:
        assert self._sock is not None and self._epoll is not None
        listener, poll, sessions = self._sock.fileno(), self._epoll.poll, self._sessions
        next_sweep = time.monotonic() + TICK
        try:
            while not self._stopping.is_set():
                for fd, _ in poll(TICK):
                    if fd == listener:
                        self._accept()
                    elif (session := sessions.get(fd)) is not None:
                        self._guard(session, session.on_readable)
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + TICK
                    for session in [s for s in sessions.values() if s.deadline <= now]:
                        self._guard(session, session.on_timeout)
        except Exception:
            log.exception("the TFTP server stopped on an unexpected error")
        finally:
            for session in list(sessions.values()):
                session.error = session.error or "the server stopped"
                self._finish(session)
            self._epoll.close()
            self._sock.close()

    def _guard(self, session: _Session, step: Callable[[], bool]) -> None:
        """Run one step of a transfer; a failure ends that transfer, never the server."""
        try:
            done = step()
        except Exception as error:
            log.exception("transfer of %s to %s failed", _shown(session.name), session.client)
            session.error, done = f"internal error: {error}", True
        if done:
            self._finish(session)

    def _accept(self) -> None:
        assert self._sock is not None
        for _ in range(MAX_BURST):
            try:
                datagram, address = self._sock.recvfrom(MAX_REQUEST)
            except BlockingIOError:
                return
            except OSError as error:
                log.debug("listener: %s", error)
                continue
            if len(datagram) < 2 or datagram[0] != 0 or datagram[1] not in (RRQ, WRQ):
                log.debug("ignoring a datagram that is no request from %s", address[:2])
                continue
            try:
                self._dispatch(datagram, address)
            except Exception:
                log.exception("a request from %s failed", address[:2])

    def _dispatch(self, datagram: bytes, address: tuple[str, int]) -> None:
        """Start a transfer for a request, within the caps, or answer a copy of one again."""
        old = self._clients.get(address)
        if old is not None:
            if not old.acknowledged and datagram == old.request:
                self._guard(old, old.resend)  # the client did not hear our first answer
                return
            old.error = "the client sent a new request from the same port"
            self._finish(old)
        host = address[0]
        if self._per_host.get(host, 0) >= self._max_per_client:
            self._dropped(host, f"it has {self._max_per_client} transfers open")
        elif len(self._sessions) >= self._max_transfers and not self._displace_unacknowledged():
            self._dropped(host, f"all {self._max_transfers} transfers are acknowledged and open")
        else:
            self._begin(datagram, address)

    def _displace_unacknowledged(self) -> bool:
        """End the oldest transfer that has never been acknowledged; False if there is none."""
        for session in self._sessions.values():
            if not session.acknowledged:
                session.error = "never acknowledged, ended to make room for a new request"
                self._finish(session)
                return True
        return False

    def _dropped(self, host: str, reason: str) -> None:
        """Log a dropped request, at most once per ``WARN_EVERY`` seconds for each address."""
        now = time.monotonic()
        if now - self._warned.get(host, -WARN_EVERY) < WARN_EVERY:
            log.debug("busy: dropping a request from %s: %s", host, reason)
            return
        if len(self._warned) > self._max_transfers:
            self._warned = {h: t for h, t in self._warned.items() if now - t < WARN_EVERY}
        self._warned[host] = now
        log.warning("busy: dropping requests from %s for a while: %s", host, reason)

    def _begin(self, datagram: bytes, address: tuple[str, int]) -> None:
        """Answer a request from a socket of its own: the first packet, or an error."""
        assert self._epoll is not None
        started = time.monotonic()
        client, name = (address[0], address[1]), ""
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self._host, 0))
            sock.connect(address)
            request = _decode_request(datagram)
            name = _normalize(request.filename)
            reader, size = self._open(request, name, client)
            blksize, timeout, oack = _negotiate(request.options, size, self._timeout)
        except _Refused as refused:
            self._refuse(sock, refused.code, str(refused), name, client[0], started)
            return
        except Exception:
            log.exception("a request from %s failed", client[0])
            self._refuse(sock, 0, "internal error", name, client[0], started)
            return
        session = _Session(sock, address, name, reader, blksize, timeout, self._retries, started)
        session.request = datagram
        self._sessions[sock.fileno()] = session
        self._clients[address] = session
        self._per_host[client[0]] = self._per_host.get(client[0], 0) + 1
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        self._guard(session, lambda: session.begin(_encode_oack(oack) if oack else None))

    def _refuse(
        self, sock: socket.socket, code: int, message: str, name: str, client: str, started: float
    ) -> None:
        _send_quietly(sock, _encode_error(code, message))
        sock.close()
        seconds = time.monotonic() - started
        self._report(TftpTransfer(name, client, 0, seconds, False, message))

    def _open(self, request: _Request, name: str, client: tuple[str, int]) -> tuple[BinaryIO, int]:
        if request.opcode == WRQ:
            raise _Refused(2, "access violation: the server is read-only")
        if request.mode not in ("octet", "netascii"):
            raise _Refused(4, f"illegal TFTP operation: unsupported mode {_shown(request.mode)}")
        parts = name.split("/")
        if not name or ".." in parts:
            raise _Refused(2, "access violation: the name leaves the boot tree")
        if any(len(part) > NAME_MAX for part in parts):
            raise _Refused(1, NOT_FOUND)
        try:
            source = self._resolve(name, client)
        except OSError as error:
            log.warning("resolving %s for %s failed: %s", _shown(name), client[0], error.strerror)
            raise _Refused(1, NOT_FOUND) from None
        except Exception:
            log.exception("resolving %s for %s failed", _shown(name), client[0])
            raise _Refused(1, NOT_FOUND) from None
        if source is None:
            raise _Refused(1, NOT_FOUND)
        return _open(source, netascii=request.mode == "netascii")

    def _finish(self, session: _Session) -> None:
        assert self._epoll is not None
        fd = session.sock.fileno()
        self._epoll.unregister(fd)
        del self._sessions[fd]
        if self._clients.get(session.address) is session:
            del self._clients[session.address]
        if (count := self._per_host.pop(session.client, 1) - 1) > 0:
            self._per_host[session.client] = count
        session.close()
        self._report(session.outcome())

    def _report(self, transfer: TftpTransfer) -> None:
        if transfer.ok:
            log.info(
                "sent %s to %s: %d bytes in %.3fs",
                _shown(transfer.filename),
                transfer.client,
                transfer.size,
                transfer.seconds,
            )
        else:
            # PXE loaders probe for configs that do not exist: a miss is routine.
            level = logging.INFO if transfer.error == NOT_FOUND else logging.WARNING
            name, error = _shown(transfer.filename), _shown(transfer.error or "")
            log.log(level, "%s for %s: %s", name, transfer.client, error)
        if self._on_transfer is None:
            return
        try:
            self._on_transfer(transfer)
        except Exception:
            log.exception("the on_transfer hook failed")


class _Session:
    """The state of one transfer: lock-step DATA/ACK with retransmission on timeout.

    Each step returns True once the transfer is over, with ``error`` set if it failed.
    ``acknowledged`` turns True with the client's first ACK: until then the client may be a
    forged address that will never answer.
    """

    def __init__(
        self,
        sock: socket.socket,
        address: tuple[str, int],
        name: str,
        reader: BinaryIO,
        blksize: int,
        timeout: float,
        retries: int,
        started: float,
    ) -> None:
        self.sock, self.address, self.name = sock, address, name
        self.client = address[0]
        self.reader, self.blksize, self.timeout, self.retries = reader, blksize, timeout, retries
        self.started = started
        self.block = 0
        self.packet = self.expected = b""
        self.pending = self.acked = self.tries = 0
        self.final = self.acknowledged = False
        self.request = b""
        self.deadline = 0.0
        self.error: str | None = None

    def begin(self, oack: bytes | None) -> bool:
        """Send the OACK, or the first block when no option was accepted."""
        if oack is None:
            return self._next()
        return self._send(oack, 0)

    def on_readable(self) -> bool:
        """Handle one datagram from the client."""
        try:
            reply = self.sock.recv(MAX_ACK)
        except BlockingIOError:
            return False
        except OSError as error:
            self.error = str(error)
            return True
        if reply.startswith(self.expected):
            self.acked += self.pending
            self.acknowledged = True
            return self.final or self._next()
        if reply.startswith(_ERROR):
            self.error = f"the client sent an error: {_error_text(reply)}"
            return True
        return False  # a duplicate ACK or junk: resending now would double the traffic

    def on_timeout(self) -> bool:
        """Resend the unacknowledged packet, or give up after ``retries`` resends (fewer
        before the client's first ACK)."""
        limit = self.retries if self.acknowledged else min(self.retries, UNACKNOWLEDGED_RETRIES)
        if self.tries >= limit:
            self.error = f"no acknowledgement of block {self.block} after {self.tries} retries"
            return True
        self.tries += 1
        return self._transmit()

    def resend(self) -> bool:
        """Send the unacknowledged packet again now, as the client asked again."""
        self.tries = 0
        return self._transmit()

    def outcome(self) -> TftpTransfer:
        """The record of this transfer for ``on_transfer``."""
        seconds = time.monotonic() - self.started
        return TftpTransfer(
            self.name, self.client, self.acked, seconds, self.error is None, self.error
        )

    def close(self) -> None:
        """Release the socket and the file."""
        self.sock.close()
        self.reader.close()

    def _next(self) -> bool:
        data = self.reader.read(self.blksize)
        self.block += 1
        self.pending = len(data)
        self.final = len(data) < self.blksize
        number = self.block & 0xFFFF
        return self._send(_HEADER.pack(DATA, number) + data, number)

    def _send(self, packet: bytes, number: int) -> bool:
        self.packet, self.expected, self.tries = packet, _HEADER.pack(ACK, number), 0
        return self._transmit()

    def _transmit(self) -> bool:
        self.deadline = time.monotonic() + self.timeout
        try:
            self.sock.send(self.packet)
        except BlockingIOError:
            pass  # a full send buffer: as good as lost, the timeout resends it
        except OSError as error:
            self.error = str(error)
            return True
        return False


def _decode_request(datagram: bytes) -> _Request:
    """Decode a RRQ/WRQ with tftpy; a malformed option list is dropped, not fatal."""
    first = datagram.find(b"\0", 2)
    end = datagram.find(b"\0", first + 1) if first >= 0 else -1
    if end < 0:
        raise _Refused(4, "illegal TFTP operation: malformed request")
    try:
        packet = _FACTORY.parse(datagram)
    except (TftpException, UnicodeDecodeError, struct.error, ValueError) as error:
        log.debug("ignoring the options of a request: %s", _shown(str(error)))
        try:
            packet = _FACTORY.parse(datagram[: end + 1])
        except (TftpException, UnicodeDecodeError, struct.error, ValueError):
            raise _Refused(4, "illegal TFTP operation: the name or mode is not ASCII") from None
    options = {str(k).lower(): str(v) for k, v in packet.options.items()}
    return _Request(int(packet.opcode), str(packet.filename), str(packet.mode), options)


def _normalize(filename: str) -> str:
    return filename.replace("\\", "/").lstrip("/")


def _negotiate(
    requested: dict[str, str], size: int, timeout: float
) -> tuple[int, float, dict[str, str]]:
    """Block size, retransmission timeout and the OACK options; bad values are ignored."""
    accepted: dict[str, str] = {}
    blksize = _integer(requested.get("blksize"))
    if blksize is not None and blksize >= MIN_BLKSIZE:
        blksize = min(blksize, MAX_BLKSIZE)
        accepted["blksize"] = str(blksize)
    else:
        blksize = DEFAULT_BLKSIZE
    if _integer(requested.get("tsize")) is not None:
        accepted["tsize"] = str(size)
    seconds = _integer(requested.get("timeout"))
    if seconds is not None and 1 <= seconds <= 255:
        accepted["timeout"] = str(seconds)
        timeout = float(seconds)
    return blksize, timeout, accepted


def _integer(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 10:
        return None
    return int(value)


def _open(source: bytes | Path, *, netascii: bool) -> tuple[BinaryIO, int]:
    """A reader over ``source`` and its size in bytes as it will be sent."""
    if isinstance(source, Path):
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the loop
        except FileNotFoundError:
            raise _Refused(1, NOT_FOUND) from None
        except OSError:
            raise _Refused(2, "access violation") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise _Refused(1, NOT_FOUND)
        reader: BinaryIO = open(fd, "rb", buffering=READ_BUFFER)
        if not netascii:
            return reader, info.st_size
        with reader:
            source = reader.read()
    if netascii:
        source = source.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
    return io.BytesIO(source), len(source)


def _encode_error(code: int, message: str) -> bytes:
    packet = TftpPacketERR()
    packet.errorcode = code
    packet.errmsgs = {code: message.encode("ascii", "replace")}
    return bytes(packet.encode().buffer)


def _encode_oack(options: dict[str, str]) -> bytes:
    packet = TftpPacketOACK()
    packet.options = options
    return bytes(packet.encode().buffer)


def _error_text(datagram: bytes) -> str:
    code = int.from_bytes(datagram[2:4], "big")
    message = datagram[4:].split(b"\0")[0].decode("ascii", "replace")
    return f"{code} {message}"


def _shown(text: str) -> str:
    """A client's text as it may be logged: control characters escaped, the length capped."""
    if not text:
        return "(empty)"
    if len(text) > SHOWN:
        text = f"{text[:SHOWN]}... ({len(text)} characters)"
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _send_quietly(sock: socket.socket, packet: bytes) -> None:
    try:
        sock.send(packet)
    except OSError as error:
        log.debug("could not send an error packet: %s", error)

"""The embedded TFTP server: read-only, confined to the boot tree, never stopped by a bad packet.

tftpy decodes the requests and encodes the OACK and ERROR packets. One thread reads the requests,
admits them within the caps, opens each one's file and a socket of its own connected to the
client, and hands both to one of a few worker processes that run the DATA/ACK exchange (see
``tftp_worker``): a single Python process would get at most one core, and on a busy machine a
share of one. The worker processes only run transfers; every decision about who is served is
taken here, in the table of open transfers (thread-safe, shared with the thread that reads the
workers' events).

Floods of requests that are never acknowledged cannot starve other clients: one client address
holds at most ``MAX_PER_CLIENT`` transfers (its further requests are dropped, as if lost, so a
real client simply retries), and when the whole table is full a new request displaces the
oldest transfer that was never acknowledged, and such a transfer is given up after at most
``UNACKNOWLEDGED_RETRIES`` resends. A new request from the (address, port) of an open
transfer means the client has moved on (its last ACK was lost): it ends that transfer, unless
it repeats the request of a transfer not acknowledged yet, which then sends its packet again.
"""

from __future__ import annotations

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
from itertools import count
from pathlib import Path

from tftpy.TftpPacketFactory import TftpPacketFactory
from tftpy.TftpPacketTypes import TftpPacketERR, TftpPacketOACK
from tftpy.TftpShared import MIN_BLKSIZE, TftpException

from photonkick.server.confine import confined_file as confined_file
from photonkick.server.tftp_worker import (
    ACKED,
    ENDED,
    READY_WAIT,
    STOPPED,
    TICK,
    WorkerHandle,
)
from photonkick.server.tftp_worker import (
    UNACKNOWLEDGED_RETRIES as UNACKNOWLEDGED_RETRIES,
)

Resolver = Callable[[str, tuple[str, int]], bytes | Path | None]

log = logging.getLogger("photonkick.server.tftp")

RRQ, WRQ, DATA, ACK, ERROR = 1, 2, 3, 4, 5
DEFAULT_BLKSIZE = 512
MAX_BLKSIZE = 65464  # RFC 2348
MAX_REQUEST = 2048
MAX_BURST = 64  # requests taken from the listener per wake-up
MAX_TRANSFERS = 256  # each holds a socket and maybe a file: stay far below 1024 fds
MAX_PER_CLIENT = 32  # PXE clients fetch one file at a time; this leaves room for NAT
WORKERS = 4  # processes running transfers: on a busy machine more than the cores still help
WARN_EVERY = 10.0  # seconds between two warnings about the same client's dropped requests
STOP_WAIT = 5.0
NOT_FOUND = "file not found"
NAME_MAX = 255  # bytes in one path component: a longer one names no file
SHOWN = 120  # characters of a client's text kept in a log line
WORKER_GONE = "the transfer's worker process exited"

_FACTORY = TftpPacketFactory()
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ALL = 0xFFFFFFFF  # transfer ids travel as 32-bit numbers


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
    open at once, ``max_per_client`` of them for one client address; ``workers`` processes run
    them. ``resolve`` runs on the thread that reads requests and ``on_transfer`` on the server's
    threads, one call at a time; both must return quickly.
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
        workers: int = WORKERS,
    ) -> None:
        if workers < 1:
            raise ValueError("a TFTP server needs at least one worker")
        self._resolve = resolve
        self._host = host
        self._port = port
        self._on_transfer = on_transfer
        self._timeout = timeout
        self._retries = retries
        self._max_transfers = max_transfers
        self._max_per_client = max_per_client
        self._worker_count = workers
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._table = _Table()
        self._workers: list[WorkerHandle] = []  # replaced one by one, never resized
        self._turn = count()
        self._ids = count(1)
        self._report_lock = threading.Lock()
        self._events_lock = threading.Lock()
        self._warned: dict[str, float] = {}  # when each address's drops were last logged

    @property
    def port(self) -> int:
        """The UDP port served on: the bound one once started (useful with ``port=0``)."""
        return self._port

    def start(self) -> None:
        """Bind the listening socket, start the worker processes and serve in the background."""
        if self._sock is not None:
            raise RuntimeError("a TFTP server starts only once")
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.bind((self._host, self._port))
            self._workers = [WorkerHandle() for _ in range(self._worker_count)]
            deadline = time.monotonic() + READY_WAIT
            for worker in self._workers:
                worker.wait_ready(deadline)
        except BaseException:
            sock.close()
            for worker in self._workers:
                worker.close()
                worker.wait(STOP_WAIT)
            raise
        sock.settimeout(TICK)
        self._sock = sock
        self._port = sock.getsockname()[1]
        self._threads = [
            threading.Thread(target=self._listen, name="tftp", daemon=True),
            threading.Thread(target=self._follow_workers, name="tftp-events", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info("TFTP server on %s port %d", self._host, self._port)

    def stop(self) -> None:
        """Stop serving: end every transfer, stop the workers and threads, close the sockets."""
        self._stopping.set()
        if not self._threads:
            return
        for worker in self._workers:
            worker.close()  # they end their transfers while the threads stop
        self._wake_listener()
        self._threads[0].join(STOP_WAIT)
        self._threads[1].join(STOP_WAIT)
        for worker in self._workers:
            worker.wait(STOP_WAIT)
        for entry in self._table.remaining():
            self._report(entry.outcome(0, STOPPED))

    def _wake_listener(self) -> None:
        """Send the listener an empty datagram, so that it sees ``_stopping`` at once."""
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1"}
        try:
            with socket.socket(self._family, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"", (wildcard.get(self._host, self._host), self._port))
        except OSError:
            pass  # it sees ``_stopping`` within ``TICK`` anyway

    def worker_pids(self) -> list[int]:
        """The process ids of the worker processes running now."""
        return [worker.process.pid for worker in self._workers]

    def open_transfers(self) -> dict[str, int]:
        """How many transfers are open, by client address: a consistent snapshot."""
        return self._table.per_host()

    def _listen(self) -> None:
        assert self._sock is not None
        try:
            while not self._stopping.is_set():
                self._accept()
        except Exception:
            log.exception("the TFTP server stopped on an unexpected error")
        finally:
            self._sock.close()

    def _accept(self) -> None:
        """Take the requests waiting on the listener, waiting up to ``TICK`` for the first."""
        assert self._sock is not None
        for _ in range(MAX_BURST):
            try:
                datagram, address = self._sock.recvfrom(MAX_REQUEST)
            except (BlockingIOError, TimeoutError):
                return
            except OSError as error:
                log.debug("listener: %s", error)
                continue
            if self._stopping.is_set():
                return
            if len(datagram) < 2 or datagram[0] != 0 or datagram[1] not in (RRQ, WRQ):
                log.debug("ignoring a datagram that is no request from %s", address[:2])
                continue
            try:
                self._dispatch(datagram, address)
            except Exception:
                log.exception("a request from %s failed", address[:2])

    def _dispatch(self, datagram: bytes, address: tuple[str, int]) -> None:
        """Start a transfer for a request, within the caps, or answer a copy of one again.

        Only this thread adds transfers to the table (the events thread only removes them),
        so a cap found not reached here is still not reached when the transfer is added.
        """
        old = self._table.at(address)
        if old is not None:
            if not old.acknowledged and datagram == old.request:
                self._apply_all()  # was it acknowledged just now?
            if not old.acknowledged and datagram == old.request:
                old.worker.resend(old.ident)  # the client did not hear our first answer
                return
            if self._table.cancel(old, "the client sent a new request from the same port"):
                old.worker.end(old.ident)
        host = address[0]
        if self._table.count(host) >= self._max_per_client:
            self._dropped(host, f"it has {self._max_per_client} transfers open")
        elif len(self._table) >= self._max_transfers and not self._displace_unacknowledged():
            self._dropped(host, f"all {self._max_transfers} transfers are acknowledged and open")
        else:
            self._begin(datagram, address)

    def _displace_unacknowledged(self) -> bool:
        """End the oldest transfer that has never been acknowledged; False if there is none."""
        self._apply_all()  # a transfer acknowledged just now is not displaced
        entry = self._table.cancel_oldest_unacknowledged(
            "never acknowledged, ended to make room for a new request"
        )
        if entry is None:
            return False
        entry.worker.end(entry.ident)
        return True

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
        """Open a request's file and socket and hand them to a worker, or answer an error."""
        started = time.monotonic()
        client, name = (address[0], address[1]), ""
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        fd = -1
        try:
            sock.setblocking(False)
            sock.bind((self._host, 0))
            sock.connect(address)
            request = _decode_request(datagram)
            name = _normalize(request.filename)
            fd, size, cacheable = self._open(request, name, client)
            blksize, timeout, oack = _negotiate(request.options, size, self._timeout)
            entry = _Entry(next(self._ids) & _ALL, address, name, datagram, started)
            entry.worker = self._workers[next(self._turn) % len(self._workers)]
            self._table.add(entry)
            try:
                packet = _encode_oack(oack) if oack else b""
                entry.worker.start(
                    entry.ident, sock, fd, blksize, timeout, self._retries, packet, cacheable
                )
            except OSError as error:
                self._table.finish(entry.ident)
                log.warning("no TFTP worker could take a transfer: %s", error)
                self._report(entry.outcome(0, "no worker could take the transfer"))
            except BaseException:
                self._table.finish(entry.ident)
                raise
        except _Refused as refused:
            self._refuse(sock, refused.code, str(refused), name, client[0], started)
        except Exception:
            log.exception("a request from %s failed", client[0])
            self._refuse(sock, 0, "internal error", name, client[0], started)
        finally:
            sock.close()  # the worker has its own copy
            if fd >= 0:
                os.close(fd)

    def _refuse(
        self, sock: socket.socket, code: int, message: str, name: str, client: str, started: float
    ) -> None:
        _send_quietly(sock, _encode_error(code, message))
        seconds = time.monotonic() - started
        self._report(TftpTransfer(name, client, 0, seconds, False, message))

    def _open(self, request: _Request, name: str, client: tuple[str, int]) -> tuple[int, int, bool]:
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

    def _follow_workers(self) -> None:
        """Apply the workers' events to the table and report finished transfers; a worker
        that exits is replaced (unless the server is stopping) and its transfers reported."""
        poll = select.epoll()
        try:
            by_fd = {}
            for worker in self._workers:
                poll.register(worker.control.fileno(), select.EPOLLIN)
                by_fd[worker.control.fileno()] = worker
            while by_fd:
                for fd, _ in poll.poll(TICK):
                    worker = by_fd[fd]
                    with self._events_lock:
                        if self._apply(worker):
                            continue
                    poll.unregister(fd)
                    del by_fd[fd]
                    if (fresh := self._replace(worker)) is not None:
                        poll.register(fresh.control.fileno(), select.EPOLLIN)
                        by_fd[fresh.control.fileno()] = fresh
        except Exception:
            log.exception("the TFTP server stopped following its workers on an unexpected error")
        finally:
            poll.close()

    def _apply_all(self) -> None:
        """Apply the events the workers have sent so far (from the thread reading requests,
        before a decision that depends on which transfers are acknowledged)."""
        for worker in list(self._workers):
            with self._events_lock:
                self._apply(worker)

    def _apply(self, worker: WorkerHandle) -> bool:
        """Apply one worker's waiting events; False once the worker is gone. Called with
        ``_events_lock`` held, so that a worker's events are applied in their order."""
        events = worker.events()
        for kind, ident, acked, error in events or ():
            if kind == ACKED:
                self._table.acknowledge(ident)
            elif (entry := self._table.finish(ident)) is not None:
                self._report(entry.outcome(acked, error))
        return events is not None

    def _replace(self, worker: WorkerHandle) -> WorkerHandle | None:
        """Report a gone worker's transfers and start another in its place, unless stopping."""
        stopping = self._stopping.is_set()
        for entry in self._table.of_worker(worker):
            self._report(entry.outcome(0, STOPPED if stopping else WORKER_GONE))
        if stopping:
            return None
        log.warning("a TFTP worker process exited (%s); starting another", worker.process.poll())
        worker.wait(STOP_WAIT)
        try:
            fresh = WorkerHandle()
            fresh.wait_ready(time.monotonic() + READY_WAIT)
        except OSError as error:
            log.error("cannot start a TFTP worker process: %s", error)
            return None
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    def _report(self, transfer: TftpTransfer) -> None:
        """Log a finished transfer and pass it to ``on_transfer``, one call at a time."""
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
        with self._report_lock:
            try:
                self._on_transfer(transfer)
            except Exception:
                log.exception("the on_transfer hook failed")


class _Entry:
    """An open transfer as the server sees it; ``listed``, ``acknowledged`` and ``ended``
    change only under the ``_Table``'s lock."""

    def __init__(
        self, ident: int, address: tuple[str, int], name: str, request: bytes, started: float
    ) -> None:
        self.ident, self.address, self.name, self.request = ident, address, name, request
        self.client, self.started = address[0], started
        self.worker: WorkerHandle
        self.listed = self.acknowledged = False
        self.ended: str | None = None  # why the server ended it

    def outcome(self, acked: int, error: str | None) -> TftpTransfer:
        """The record of this transfer for ``on_transfer``; ``ended`` explains a transfer
        the server ended. One that its worker finished first (every block acknowledged, or
        an error of its own) is reported as it went."""
        if error == ENDED:
            error = self.ended or error
        seconds = time.monotonic() - self.started
        return TftpTransfer(self.name, self.client, acked, seconds, error is None, error)


class _Table:
    """The open transfers: by id, by client (address, port), counted by address; thread-safe.

    A transfer is ``listed`` (it counts against the caps) from ``add`` until ``cancel`` or
    ``finish``, and known by its id until ``finish``: a transfer the server ended is reported
    when its worker says it is closed. Only the thread reading requests adds, so a cap it found
    not reached stays so until it adds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[int, _Entry] = {}
        self._listed: dict[int, _Entry] = {}  # oldest first
        self._by_address: dict[tuple[str, int], _Entry] = {}
        self._per_host: dict[str, int] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._listed)

    def at(self, address: tuple[str, int]) -> _Entry | None:
        """The listed transfer to the client (address, port), if any."""
        with self._lock:
            return self._by_address.get(address)

    def count(self, host: str) -> int:
        """How many listed transfers the client address ``host`` has."""
        with self._lock:
            return self._per_host.get(host, 0)

    def per_host(self) -> dict[str, int]:
        """A snapshot of the listed transfers by client address."""
        with self._lock:
            return dict(self._per_host)

    def add(self, entry: _Entry) -> None:
        """List a new transfer."""
        with self._lock:
            self._by_id[entry.ident] = self._listed[entry.ident] = entry
            self._by_address[entry.address] = entry
            self._per_host[entry.client] = self._per_host.get(entry.client, 0) + 1
            entry.listed = True

    def acknowledge(self, ident: int) -> None:
        """Mark a listed transfer's first ACK."""
        with self._lock:
            if (entry := self._listed.get(ident)) is not None:
                entry.acknowledged = True

    def cancel(self, entry: _Entry, reason: str) -> bool:
        """Unlist a transfer that must end for ``reason``; False if it was not listed."""
        with self._lock:
            if not self._unlist(entry):
                return False
            entry.ended = reason
            return True

    def cancel_oldest_unacknowledged(self, reason: str) -> _Entry | None:
        """Cancel the oldest listed transfer never acknowledged; None if every one was."""
        with self._lock:
            for entry in self._listed.values():
                if not entry.acknowledged:
                    self._unlist(entry)
                    entry.ended = reason
                    return entry
            return None

    def finish(self, ident: int) -> _Entry | None:
        """Forget a transfer that is over; None if it was unknown."""
        with self._lock:
            entry = self._by_id.pop(ident, None)
            if entry is not None:
                self._unlist(entry)
            return entry

    def of_worker(self, worker: WorkerHandle) -> list[_Entry]:
        """Forget and return the transfers of one worker."""
        with self._lock:
            entries = [e for e in self._by_id.values() if e.worker is worker]
            for entry in entries:
                del self._by_id[entry.ident]
                self._unlist(entry)
            return entries

    def remaining(self) -> list[_Entry]:
        """Forget and return every transfer."""
        with self._lock:
            entries = list(self._by_id.values())
            for entry in entries:
                self._unlist(entry)
            self._by_id.clear()
            return entries

    def _unlist(self, entry: _Entry) -> bool:
        if not entry.listed:
            return False
        entry.listed = False
        del self._listed[entry.ident]
        if self._by_address.get(entry.address) is entry:
            del self._by_address[entry.address]
        if (left := self._per_host.pop(entry.client, 1) - 1) > 0:
            self._per_host[entry.client] = left
        return True


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


def _open(source: bytes | Path, *, netascii: bool) -> tuple[int, int, bool]:
    """A file descriptor to read ``source`` from, its size in bytes as it will be sent, and
    whether it is the file itself (bytes and netascii go to an anonymous memory file)."""
    if isinstance(source, Path):
        try:
            # O_NONBLOCK: opening a FIFO must not block the thread reading requests
            fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise _Refused(1, NOT_FOUND) from None
        except OSError:
            raise _Refused(2, "access violation") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise _Refused(1, NOT_FOUND)
        if not netascii:
            return fd, info.st_size, True
        with open(fd, "rb") as reader:
            source = reader.read()
    if netascii:
        source = source.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
    return _memory_file(source), len(source), False


def _memory_file(data: bytes) -> int:
    fd = os.memfd_create("tftp", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _encode_error(code: int, message: str) -> bytes:
    packet = TftpPacketERR()
    packet.errorcode = code
    packet.errmsgs = {code: message.encode("ascii", "replace")}
    return bytes(packet.encode().buffer)


def _encode_oack(options: dict[str, str]) -> bytes:
    packet = TftpPacketOACK()
    packet.options = options
    return bytes(packet.encode().buffer)


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

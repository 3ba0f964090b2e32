"""The processes that run TFTP transfers, and the handle the server keeps on each.

A transfer is lock-step: send a packet, wait for its ACK. Most of its time goes to sending (on
loopback a send delivers the datagram and wakes the client), and one Python process gets at
most one core, and on a busy machine a share of one. So the server's reading thread admits a
request, opens its socket and file, and passes both (as file descriptors) to one of a few worker
processes, each running its transfers from an epoll loop of its own. A worker tells the server
when a transfer is first acknowledged and when it is over; it never decides who is served.

The control channel is a SOCK_SEQPACKET socket pair, one message per command or event:

- server to worker: START (with the socket and file), RESEND (the client asked again for a
  transfer it never acknowledged), END (the server ended it: a new request from the same port,
  or room made for another);
- worker to server: READY (once, when it has started), ACKED (the first ACK arrived),
  FINISHED (bytes acknowledged, and an error or none).

A worker whose control channel closes ends its transfers, reports them, and exits: it never
outlives the server.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO

from photonkick.server.fd_wait import wait_for_fd

DATA, ACK, ERROR = 3, 4, 5
MAX_ACK = 516
TICK = 0.05  # seconds between timeout sweeps
UNACKNOWLEDGED_RETRIES = 2  # resends of a first packet: a forged address never answers
READ_BUFFER = 64 * 1024
CACHED_FILE = 8 << 20  # bytes: files up to this size are sent from packets built once
CACHE_SIZE = 64 << 20  # bytes of cached packets in one worker
MAX_MESSAGE = 1024  # an OACK or an error text; file contents travel as file descriptors
TELL_WAIT = 5.0  # seconds a worker waits for room to report an event before giving up

START, RESEND, END, ACKED, FINISHED, READY = 1, 2, 3, 4, 5, 6
READY_WAIT = 30.0  # seconds a worker process may take to start (a busy machine is slow)
# kind, transfer id, blksize, timeout, retries, whether the file may be cached; then the OACK
_START = struct.Struct("!BIIdI?")
_ID = struct.Struct("!BI")  # kind, transfer id: RESEND, END, ACKED
_FINISHED = struct.Struct("!BIQB")  # kind, transfer id, bytes acknowledged, failed; then why
_HEADER = struct.Struct("!HH")
_ERROR = bytes((0, ERROR))
_monotonic = time.monotonic
STOPPED = "the server stopped"
ENDED = "ended by the server"  # the server gives its own reason in place of this one


class Transfer:
    """One transfer in a worker: lock-step DATA/ACK with retransmission on timeout.

    Each step returns True once the transfer is over, with ``error`` set if it failed.
    ``acknowledged`` turns True with the client's first ACK (until then the client may be a
    forged address that will never answer), and ``on_first_ack`` is called before anything
    else is sent: whatever the client does next, the server knows of that ACK first.
    """

    def __init__(
        self,
        ident: int,
        sock: socket.socket,
        reader: BinaryIO,
        blksize: int,
        timeout: float,
        retries: int,
        oack: bytes,
        on_first_ack: Callable[[Transfer], None],
    ) -> None:
        self.ident, self.sock, self.fd = ident, sock, sock.fileno()
        self.on_first_ack = on_first_ack
        self.packets: Sequence[bytes] | None = None  # every DATA packet, when they are cached
        self.reader, self.blksize, self.timeout, self.retries = reader, blksize, timeout, retries
        self.oack = oack
        self.block = 0
        self.packet = self.expected = b""
        self.pending = self.acked = self.tries = 0
        self.final = self.acknowledged = False
        self.deadline = 0.0
        self.error: str | None = None

    def begin(self) -> bool:
        """Send the OACK, or the first block when no option was accepted."""
        if not self.oack:
            return self._next()
        return self._send(self.oack, 0)

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
            if not self.acknowledged:
                self.acknowledged = True
                self.on_first_ack(self)
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
        if self.acknowledged:
            return False
        self.tries = 0
        return self._transmit()

    def close(self) -> None:
        """Release the socket and the file."""
        self.sock.close()
        self.reader.close()

    def _next(self) -> bool:
        self.block = block = self.block + 1
        number = block & 0xFFFF
        if self.packets is not None:
            packet = self.packets[block - 1]
        else:
            packet = _HEADER.pack(DATA, number) + self.reader.read(self.blksize)
        self.pending = size = len(packet) - 4
        self.final = size < self.blksize
        return self._send(packet, number)

    def _send(self, packet: bytes, number: int) -> bool:
        self.packet, self.expected, self.tries = packet, _HEADER.pack(ACK, number), 0
        return self._transmit()

    def _transmit(self) -> bool:
        self.deadline = _monotonic() + self.timeout
        try:
            self.sock.send(self.packet)
        except BlockingIOError:
            pass  # a full send buffer: as good as lost, the timeout resends it
        except OSError as error:
            self.error = str(error)
            return True
        return False


class PacketCache:
    """The DATA packets of recently sent files, built once for each block size.

    PXE clients fetch the same loaders and menus over and over. A file is known by its device,
    inode, size and modification time, so a changed or replaced file is read again. At most
    ``CACHE_SIZE`` bytes are kept, the least recently used file going first.
    """

    def __init__(self, limit: int = CACHE_SIZE) -> None:
        self._limit = limit
        self._size = 0
        self._files: dict[tuple[int, ...], tuple[bytes, ...]] = {}

    def get(self, reader: BinaryIO, blksize: int) -> tuple[bytes, ...] | None:
        """The packets of the open file ``reader`` at ``blksize``, or None if it is too big."""
        info = os.fstat(reader.fileno())
        if info.st_size > CACHED_FILE:
            return None
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, blksize)
        packets = self._files.pop(key, None)
        if packets is None:
            data = reader.read()
            reader.seek(0)
            if len(data) != info.st_size:
                return None  # it changed while being read: stream it instead
            packets = tuple(
                _HEADER.pack(DATA, (n + 1) & 0xFFFF) + data[offset : offset + blksize]
                for n, offset in enumerate(range(0, len(data) + 1, blksize))
            )
            self._size += len(data)
            while self._size > self._limit and self._files:
                oldest = next(iter(self._files))
                del self._files[oldest]
                self._size -= oldest[2]  # its st_size
        self._files[key] = packets
        return packets


class Worker:
    """The loop of a worker process over its control channel and its transfers."""

    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._epoll = select.epoll()
        self._epoll.register(control.fileno(), select.EPOLLIN)
        self._by_fd: dict[int, Transfer] = {}
        self._by_id: dict[int, Transfer] = {}
        self._packets = PacketCache()
        self._open = True

    def run(self) -> None:
        """Serve until the control channel closes, then end every transfer and report it."""
        control, poll, by_fd = self._control.fileno(), self._epoll.poll, self._by_fd
        next_sweep = time.monotonic() + TICK
        while self._open:
            for fd, _ in poll(TICK):
                if (transfer := by_fd.get(fd)) is not None:
                    self._step(transfer, transfer.on_readable)
                elif fd == control:
                    self._read_commands()
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + TICK
                for transfer in [t for t in by_fd.values() if t.deadline <= now]:
                    self._step(transfer, transfer.on_timeout)
        for transfer in list(by_fd.values()):
            transfer.error = transfer.error or STOPPED
            self._finish(transfer)

    def _read_commands(self) -> None:
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(self._control, MAX_MESSAGE, 2)
            except BlockingIOError:
                return
            if not message:
                self._open = False
                return
            kind, ident = _ID.unpack_from(message)
            if kind == START:
                self._start(message, fds)
            elif (transfer := self._by_id.get(ident)) is not None:
                if kind == RESEND:
                    self._step(transfer, transfer.resend)
                elif kind == END:
                    transfer.error = transfer.error or ENDED
                    self._finish(transfer)

    def _start(self, message: bytes, fds: list[int]) -> None:
        _, ident, blksize, timeout, retries, cacheable = _START.unpack_from(message)
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        reader = open(fds[1], "rb", buffering=READ_BUFFER)
        oack = message[_START.size :]
        transfer = Transfer(ident, sock, reader, blksize, timeout, retries, oack, self._acked)
        if cacheable:
            transfer.packets = self._packets.get(reader, blksize)
        self._by_fd[transfer.fd] = transfer
        self._by_id[ident] = transfer
        self._epoll.register(transfer.fd, select.EPOLLIN)
        self._step(transfer, transfer.begin)

    def _step(self, transfer: Transfer, step: Callable[[], bool]) -> None:
        """Run one step of a transfer; a failure ends that transfer, never the worker."""
        try:
            done = step()
        except Exception as error:
            transfer.error, done = f"internal error: {error!r}", True
        if done:
            self._finish(transfer)

    def _acked(self, transfer: Transfer) -> None:
        self._tell(_ID.pack(ACKED, transfer.ident))

    def _finish(self, transfer: Transfer) -> None:
        self._epoll.unregister(transfer.fd)
        del self._by_fd[transfer.fd], self._by_id[transfer.ident]
        transfer.close()
        why = (transfer.error or "").encode("utf-8", "replace")[:MAX_MESSAGE]
        failed = transfer.error is not None
        self._tell(_FINISHED.pack(FINISHED, transfer.ident, transfer.acked, failed) + why)

    def _tell(self, message: bytes) -> None:
        deadline = time.monotonic() + TELL_WAIT
        while True:
            try:
                self._control.send(message)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break  # the server reads no more: it is stuck or going away
                wait_for_fd(self._control.fileno(), select.POLLOUT, TICK)
            except OSError:
                break
        self._open = False


class WorkerHandle:
    """The server's side of one worker process: start it, command it, read its events."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            command = [sys.executable, "-m", __name__, str(theirs.fileno())]
            self.process = subprocess.Popen(
                command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.control = ours
        self.control.setblocking(False)

    def start(
        self,
        ident: int,
        sock: socket.socket,
        reader_fd: int,
        blksize: int,
        timeout: float,
        retries: int,
        oack: bytes,
        cacheable: bool,
    ) -> None:
        """Hand a transfer over; raises OSError if the worker cannot take it now.

        ``cacheable``: the file is a file of the boot tree, whose packets may be kept.
        """
        message = _START.pack(START, ident, blksize, timeout, retries, cacheable) + oack
        socket.send_fds(self.control, [message], [sock.fileno(), reader_fd])

    def wait_ready(self, deadline: float) -> None:
        """Wait until the worker has started (by ``deadline``, a ``time.monotonic`` value), so
        that the first transfer does not wait for an interpreter to start."""
        while True:
            left = deadline - time.monotonic()
            readable = wait_for_fd(self.control.fileno(), select.POLLIN, max(left, 0))
            message = self.control.recv(MAX_MESSAGE) if readable else b""
            if message[:1] == bytes((READY,)):
                return
            if not readable or not message:
                raise OSError(f"the TFTP worker process did not start ({self.process.poll()})")

    def resend(self, ident: int) -> None:
        """Ask the worker to send a transfer's unacknowledged packet again."""
        self._send_quietly(_ID.pack(RESEND, ident))

    def end(self, ident: int) -> None:
        """Ask the worker to end a transfer now."""
        self._send_quietly(_ID.pack(END, ident))

    def events(self) -> list[tuple[int, int, int, str | None]] | None:
        """The events waiting: (ACKED or FINISHED, transfer id, bytes acknowledged, error);
        None once the worker is gone."""
        events: list[tuple[int, int, int, str | None]] = []
        while True:
            try:
                message = self.control.recv(MAX_MESSAGE + _FINISHED.size)
            except BlockingIOError:
                return events
            except OSError:
                message = b""
            if not message:
                return None if not events else events
            kind, ident = _ID.unpack_from(message)
            if kind == ACKED:
                events.append((ACKED, ident, 0, None))
            elif kind == FINISHED:
                _, _, acked, failed = _FINISHED.unpack_from(message)
                why = message[_FINISHED.size :].decode("utf-8", "replace") if failed else None
                events.append((FINISHED, ident, acked, why))

    def close(self) -> None:
        """Stop sending: the worker ends its transfers, reports them and exits."""
        try:
            self.control.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def wait(self, seconds: float) -> None:
        """Wait for the process to exit (killing it after ``seconds``) and close the channel."""
        try:
            self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.control.close()

    def _send_quietly(self, message: bytes) -> None:
        try:
            self.control.send(message)
        except OSError:
            pass  # a full or closed channel: the transfer times out or the worker is gone


def _error_text(datagram: bytes) -> str:
    code = int.from_bytes(datagram[2:4], "big")
    message = datagram[4:].split(b"\0")[0].decode("ascii", "replace")
    return f"{code} {message}"


def main() -> None:
    """Entry point of a worker process: argv[1] is the control channel's descriptor."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's: it closes us
    control = socket.socket(fileno=int(sys.argv[1]))
    control.setblocking(False)
    worker = Worker(control)
    control.send(_ID.pack(READY, 0))
    worker.run()
    os._exit(0)  # everything is closed and reported: skip the interpreter's slow teardown


if __name__ == "__main__":
    main()

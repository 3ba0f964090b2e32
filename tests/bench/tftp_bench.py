"""Benchmark: photonkick's TFTP server next to tftpd-hpa, same files, same client (curl).

Run: .venv/bin/python tests/bench/tftp_bench.py [--clients 100] [--big-mib 60] [--rounds 3]
Needs curl and tftpd-hpa (/usr/sbin/in.tftpd), which is started here in the foreground on a
loopback port, never as the system service. Each server runs in a process of its own.
Goals: (a) 100 concurrent clients, each from a loopback address of its own like PXE clients on
a LAN (photonkick caps the transfers of one address), fetching a 1 MiB loader and its per-MAC
config:
photonkick's wall time <= 1.1x tftpd-hpa's with no failed transfer; (b) one client fetching
60 MiB at blksize 1468: photonkick's throughput >= 0.8x tftpd-hpa's.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from photonkick.server.tftp import TftpServer, confined_file

IN_TFTPD = "/usr/sbin/in.tftpd"
LOADER = "pxelinux.0"
BIG = "photon.iso"
CURL_MAX_TIME = 300
# Lock-step TFTP over loopback is a ping-pong: across two cores every packet pays a cross-CPU
# wake-up and throughput is bimodal, so the single-client run keeps server and client on one.
PIN = ["taskset", "-c", "0"]
SERVERS = ("tftpd-hpa", "photonkick")
SCENARIOS = {
    "a512": ("(a) {clients} clients, loader + config, blksize 512", "s", 1.1),
    "a1468": ("(a) {clients} clients, loader + config, blksize 1468", "s", 1.1),
    "b": ("(b) 1 client, {mib} MiB, blksize 1468", "MiB/s", 0.8),
}


def config_name(client: int) -> str:
    """The per-MAC config file a PXE client asks for."""
    return f"pxelinux.cfg/01-52-54-00-00-{client >> 8:02x}-{client & 0xFF:02x}"


def config_text(client: int) -> bytes:
    """A small pxelinux config, different for every client."""
    return (
        f"default photon\nlabel photon\n  kernel vmlinuz\n  append initrd=initrd.img "
        f"ks=http://10.0.0.1/ks/{client}.json console=ttyS0\n"
    ).encode()


def make_tree(root: Path, clients: int, big_mib: int) -> None:
    """Write the boot tree both servers serve; tftpd-hpa reads it as its own user."""
    (root / "pxelinux.cfg").mkdir(parents=True)
    (root / LOADER).write_bytes(os.urandom(1 << 20))
    with (root / BIG).open("wb") as f:
        for _ in range(big_mib):
            f.write(os.urandom(1 << 20))
    for client in range(clients):
        (root / config_name(client)).write_bytes(config_text(client))
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def serve_photonkick(root: Path, clients: int) -> None:
    """Child mode: serve ``root`` (configs from memory) until stdin closes."""
    configs = {config_name(c): config_text(c) for c in range(clients)}

    def resolve(name: str, client: tuple[str, int]) -> bytes | Path | None:
        return configs.get(name) or confined_file(root, name)

    server = TftpServer(resolve, "127.0.0.1", 0)
    server.start()
    print(server.port, flush=True)
    sys.stdin.read()
    server.stop()


def client_address(client: int) -> str:
    """The loopback address client number ``client`` sends from: 127.1.0.1 and on."""
    return str(ipaddress.IPv4Address("127.1.0.1") + client)


def free_port() -> int:
    """A UDP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def tftpd_hpa(root: Path, pin: list[str]) -> Iterator[int]:
    """tftpd-hpa in the foreground on a loopback port; yields the port."""
    port = free_port()
    command = [*pin, IN_TFTPD, "--foreground", "--listen", "--address", f"127.0.0.1:{port}"]
    proc = subprocess.Popen([*command, "--secure", str(root)], start_new_session=True, text=True)
    try:
        time.sleep(0.3)
        if proc.poll() is not None:
            raise SystemExit(f"in.tftpd exited with {proc.returncode}")
        yield port
    finally:
        end(proc, group=True)


@contextmanager
def photonkick(root: Path, pin: list[str], clients: int) -> Iterator[int]:
    """photonkick's server in a child process; yields the port."""
    command = [*pin, sys.executable, __file__, "--serve", str(root), "--clients", str(clients)]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        end(proc, group=False)


def end(proc: subprocess.Popen[str], *, group: bool) -> None:
    """Stop a child (and, for tftpd-hpa, the transfer children it forked), bounded in time.

    photonkick stops when its stdin closes; tftpd-hpa gets SIGTERM.
    """
    if proc.stdin is not None:
        proc.stdin.close()
    elif group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()
        proc.wait(5)


def run_clients(port: int, root: Path, out: Path, clients: int, blksize: int) -> tuple[float, int]:
    """``clients`` curl processes at once, each from its own address, fetching the loader
    then its config.

    Returns the wall time and the number of failed or corrupt transfers.
    """
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    url = f"tftp://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    start = time.perf_counter()
    try:
        for c in range(clients):
            loader = ("-o", str(out / f"{c}.loader"), f"{url}/{LOADER}")
            config = ("-o", str(out / f"{c}.cfg"), f"{url}/{config_name(c)}")
            source = ("--interface", client_address(c))
            procs.append(subprocess.Popen([*curl(blksize), *source, *loader, *config]))
        codes = [p.wait(CURL_MAX_TIME + 10) for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall = time.perf_counter() - start
    expected = (root / LOADER).read_bytes()
    failed = sum(code != 0 for code in codes)
    for c in range(clients):
        for name, content in ((f"{c}.loader", expected), (f"{c}.cfg", config_text(c))):
            path = out / name
            failed += not path.exists() or path.read_bytes() != content
    return wall, failed


def run_big(port: int, root: Path, out: Path, blksize: int) -> tuple[float, bool]:
    """One curl fetching the big file, on the server's CPU; returns seconds and a bytes check."""
    target = out / "big"
    target.unlink(missing_ok=True)
    start = time.perf_counter()
    code = subprocess.run(
        [*PIN, *curl(blksize), "-o", str(target), f"tftp://127.0.0.1:{port}/{BIG}"],
        timeout=CURL_MAX_TIME + 10,
    ).returncode
    seconds = time.perf_counter() - start
    same = code == 0 and files_equal(target, root / BIG)
    return seconds, same


def curl(blksize: int) -> list[str]:
    """The client command line, shared by both servers."""
    return ["curl", "-sS", "--max-time", str(CURL_MAX_TIME), "--tftp-blksize", str(blksize)]


def files_equal(a: Path, b: Path) -> bool:
    """Compare two files without loading both whole."""
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            chunk = fa.read(1 << 20)
            if chunk != fb.read(1 << 20):
                return False
            if not chunk:
                return True


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--big-mib", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_photonkick(args.serve, args.clients)
        return
    for tool in ("curl", "taskset", IN_TFTPD):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install -y curl tftpd-hpa util-linux")
    # Files live in memory (tmpfs) so that disk writeback does not throttle the clients.
    memory = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="tftp-bench-", dir=memory) as tmp, ExitStack() as stack:
        root, out = Path(tmp) / "root", Path(tmp) / "out"
        Path(tmp).chmod(0o755)
        make_tree(root, args.clients, args.big_mib)
        ports = {
            ("tftpd-hpa", False): stack.enter_context(tftpd_hpa(root, [])),
            ("tftpd-hpa", True): stack.enter_context(tftpd_hpa(root, PIN)),
            ("photonkick", False): stack.enter_context(photonkick(root, [], args.clients)),
            ("photonkick", True): stack.enter_context(photonkick(root, PIN, args.clients)),
        }
        load_before = os.getloadavg()
        figures, failures = measure(ports, root, out, args)
    report(figures, failures, args)
    shown = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(load_before, os.getloadavg(), strict=True))
    print(f"load average (1, 5, 15 min) before/after the run: {shown}")


def measure(
    ports: dict[tuple[str, bool], int], root: Path, out: Path, args: argparse.Namespace
) -> tuple[dict[tuple[str, str], list[float]], dict[str, int]]:
    """Run every scenario on both servers back to back, alternating which goes first.

    Returns the figures by (server, scenario) and the failed transfers by server.
    """
    figures: dict[tuple[str, str], list[float]] = {}
    failures = dict.fromkeys(SERVERS, 0)
    for round_ in range(args.rounds):
        for scenario in SCENARIOS:
            for server in SERVERS if round_ % 2 == 0 else SERVERS[::-1]:
                if scenario == "b":
                    seconds, same = run_big(ports[server, True], root, out, 1468)
                    figure, failed = args.big_mib / seconds, int(not same)
                else:
                    blksize = int(scenario[1:])
                    port = ports[server, False]
                    figure, failed = run_clients(port, root, out, args.clients, blksize)
                figures.setdefault((server, scenario), []).append(figure)
                failures[server] += failed
    return figures, failures


def report(
    figures: dict[tuple[str, str], list[float]], failures: dict[str, int], args: argparse.Namespace
) -> None:
    """The side-by-side table: medians, and the median of the per-round ratios."""
    print(f"{'scenario':50} {'tftpd-hpa':>11} {'photonkick':>11} {'ratio':>6}  goal")
    for scenario, (label, unit, goal) in SCENARIOS.items():
        hpa, ours = figures["tftpd-hpa", scenario], figures["photonkick", scenario]
        ratio = statistics.median(o / h for o, h in zip(ours, hpa, strict=True))
        met = "met" if (ratio <= goal if unit == "s" else ratio >= goal) else "MISSED"
        sign = "<=" if unit == "s" else ">="
        label = label.format(clients=args.clients, mib=args.big_mib)
        print(
            f"{label:50} {statistics.median(hpa):7.2f} {unit:<4}{statistics.median(ours):7.2f} "
            f"{unit:<4}{ratio:6.2f}  {sign} {goal:.2f} {met}"
        )
    print(f"medians of {args.rounds} rounds; each round, in order:")
    for scenario in SCENARIOS:
        for server in SERVERS:
            values = " ".join(f"{v:.2f}" for v in figures[server, scenario])
            print(f"  {scenario:5} {server:10}  {values}")
    print(f"failed or corrupt transfers: {failures}")
    print(f"(b) runs client and server on CPU 0 ({' '.join(PIN)}); (a) runs unpinned")


if __name__ == "__main__":
    main()

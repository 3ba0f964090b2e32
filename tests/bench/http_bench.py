"""Benchmark: photonkick's HTTP server next to nginx, same files, same clients (wrk, curl).

Run: .venv/bin/python tests/bench/http_bench.py [--rounds 3] [--duration 10] [--clients 20]
Needs curl, wrk and nginx (apt-get install wrk nginx). photonkick runs as the real
`photonkick serve` command in a process of its own; nginx is started here in the foreground on
a loopback port with a generated config in a temporary folder, never as the system service.
Both serve the same files; nginx serves the kickstart as a static file.
Goals: (1) one host's kickstart under `wrk -t2 -c64 -d10s`: >= 2,000 req/s with p99 < 100 ms;
(2) 20 concurrent curl clients fetching a 60 MiB initrd: photonkick's aggregate throughput
>= 0.5x nginx's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

RELEASE_FILE = "releases/5.0/isolinux/initrd.img"
HOSTS = 4
MAC = "00:50:56:00:10:{:02x}"
SERVERS = ("nginx", "photonkick")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
CURL_MAX_TIME = 300
RPS_GOAL = 2000.0
P99_GOAL_MS = 100.0
BIG_RATIO_GOAL = 0.5
INSTALL = "apt-get install wrk nginx curl"


def generate_spec(port: int, hosts: int) -> str:
    """A small lab whose kickstarts may be fetched again and again from loopback."""
    lines = [
        f'server: {{url: "http://127.0.0.1:{port}", bind_kickstart_to_boot_ip: false}}',
        "defaults:",
        '  users: [{name: ops, password_hash: "$6$saltsalt$HASHVALUEabc", ssh_keys: []}]',
        "hosts:",
    ]
    lines += [f'  - {{name: node{i:02d}, mac: "{MAC.format(i + 1)}"}}' for i in range(hosts)]
    return "\n".join(lines) + "\n"


def make_tree(www: Path, big_mib: int) -> None:
    """The release tree both servers serve: a random initrd of ``big_mib`` MiB."""
    initrd = www / RELEASE_FILE
    initrd.parent.mkdir(parents=True)
    with initrd.open("wb") as f:
        for _ in range(big_mib):
            f.write(os.urandom(1 << 20))


def readable_by_all(root: Path) -> None:
    """nginx's workers may run as another user: let them read the tree."""
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(log: Path) -> str:
    """The end of a server's log, for error messages (the temporary folder goes away)."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    except OSError:
        return "(no log)"


def spawn_logged(command: list[str], log: Path, mode: str) -> subprocess.Popen[bytes]:
    """Start a server in its own session with its output going to ``log``."""
    with log.open(mode) as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def wait_until_up(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Wait until ``port`` accepts connections; fail if the process exits or time runs out."""
    name = Path(str(proc.args[0] if isinstance(proc.args, list) else proc.args)).name
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{name} did not listen on port {port}:\n{log_tail(log)}")


def end(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server and whatever it forked: SIGTERM to its session, then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(STOP_TIMEOUT)


@dataclass(frozen=True)
class Photonkick:
    """A running `photonkick serve`."""

    http_port: int
    tftp_port: int


@contextmanager
def photonkick_serve(lab: Path, www: Path) -> Iterator[Photonkick]:
    """`photonkick serve` in its own session, logging to a file in ``lab``."""
    port = free_port()
    spec = lab / "lab.yaml"
    spec.write_text(generate_spec(port, HOSTS))
    log = lab / "serve.log"
    exe = Path(sys.executable).parent / "photonkick"
    command = [str(exe), "serve", str(spec), "--http", f"127.0.0.1:{port}"]
    command += ["--tftp", "127.0.0.1:0", "--data", str(www / "releases")]
    proc = spawn_logged(command, log, "wb")
    try:
        wait_until_up(proc, port, log)
        deadline = time.monotonic() + START_TIMEOUT
        while not (found := re.search(r"TFTP +127\.0\.0\.1 port (\d+)", log.read_text())):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"photonkick serve printed no TFTP port:\n{log_tail(log)}")
            time.sleep(0.05)
        yield Photonkick(port, int(found.group(1)))
    finally:
        end(proc)


@contextmanager
def nginx(prefix: Path, www: Path, workers: str) -> Iterator[int]:
    """nginx in the foreground with a config, pid, logs and temp files all under ``prefix``."""
    port = free_port()
    temp = prefix / "temp"
    temp.mkdir(parents=True)
    paths = "\n".join(
        f"    {kind}_temp_path {temp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"worker_processes {workers};\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "    types { application/json json; }\n"
        "    default_type application/octet-stream;\n"
        "    sendfile on;\n"
        "    tcp_nopush on;\n"
        "    access_log off;\n"
        f"{paths}\n"
        f"    server {{ listen 127.0.0.1:{port}; root {www}; }}\n"
        "}\n"
    )
    log = prefix / "error.log"
    command = ["nginx", "-c", str(conf), "-p", str(prefix), "-e", str(log), "-g", "daemon off;"]
    proc = spawn_logged(command, log, "ab")
    try:
        wait_until_up(proc, port, log)
        yield port
    finally:
        end(proc)


def kickstart_path(tftp_port: int, mac: str) -> str:
    """The kickstart URL path in a host's pxelinux config, fetched over TFTP like a loader."""
    name = "01-" + mac.replace(":", "-")
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", f"tftp://127.0.0.1:{tftp_port}/pxelinux.cfg/{name}"],
        capture_output=True,
        check=True,
        timeout=20,
    )
    match = re.search(rb"ks=http://127\.0\.0\.1:\d+(/ks/\S+\.json)", result.stdout)
    if match is None:
        raise SystemExit(f"no kickstart URL in the pxelinux config: {result.stdout[:200]!r}")
    return match.group(1).decode()


def fetch(url: str) -> bytes:
    """One GET; the body."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: bytes = resp.read()
        return body


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reported."""

    rps: float
    p99_ms: float
    failed: int


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def run_wrk(url: str, duration: int) -> WrkResult:
    """`wrk -t2 -c64 -d<duration>s --latency url`: requests/s, p99 and failed requests."""
    result = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    )
    out = result.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    if rps is None or p99 is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    failed = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        failed += sum(int(n) for n in errors.groups())
    return WrkResult(float(rps.group(1)), float(p99.group(1)) * _UNITS_MS[p99.group(2)], failed)


@dataclass(frozen=True)
class BigResult:
    """Concurrent downloads of the big file: wall time, slowest client, failures."""

    wall: float
    slowest: float
    failed: int


def run_big(url: str, clients: int, size: int) -> BigResult:
    """``clients`` curl processes fetching ``url`` at once to /dev/null."""
    command = ["curl", "-s", "--max-time", str(CURL_MAX_TIME), "-o", "/dev/null"]
    command += ["-w", "%{http_code} %{size_download} %{time_total}", url]
    procs: list[subprocess.Popen[str]] = []
    start = time.perf_counter()
    try:
        for _ in range(clients):
            procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        outputs = [p.communicate(timeout=CURL_MAX_TIME + 10)[0] for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall = time.perf_counter() - start
    failed, slowest = 0, 0.0
    for proc, output in zip(procs, outputs, strict=True):
        fields = output.split()
        ok = proc.returncode == 0 and len(fields) == 3
        ok = ok and fields[0] == "200" and int(float(fields[1])) == size
        failed += not ok
        slowest = max(slowest, float(fields[2]) if len(fields) == 3 else 0.0)
    return BigResult(wall, slowest, failed)


def check_tools() -> None:
    """Stop early with the packages to install when a tool is missing."""
    missing = [tool for tool in ("curl", "wrk", "nginx") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"{', '.join(missing)} not found; install with: {INSTALL}")


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that every server started here is stopped."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--clients", type=int, default=20, help="concurrent big-file clients")
    parser.add_argument("--big-mib", type=int, default=60)
    parser.add_argument("--nginx-workers", default="1", help="worker_processes (or auto)")
    args = parser.parse_args()
    check_tools()
    stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="http-bench-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        www, lab, prefix = root / "www", root / "lab", root / "nginx"
        lab.mkdir()
        make_tree(www, args.big_mib)
        pk = stack.enter_context(photonkick_serve(lab, www))
        path = kickstart_path(pk.tftp_port, MAC.format(1))
        pk_base = f"http://127.0.0.1:{pk.http_port}"
        kickstart = fetch(pk_base + path)
        if json.loads(kickstart)["hostname"] != "node00":
            raise SystemExit("photonkick served the wrong kickstart")
        static = www / path.lstrip("/")
        static.parent.mkdir(parents=True)
        static.write_bytes(kickstart)
        root.chmod(0o755)
        readable_by_all(www)
        nginx_port = stack.enter_context(nginx(prefix, www, args.nginx_workers))
        bases = {"nginx": f"http://127.0.0.1:{nginx_port}", "photonkick": pk_base}
        if fetch(bases["nginx"] + path) != kickstart:
            raise SystemExit("nginx served a different kickstart")
        size = (www / RELEASE_FILE).stat().st_size
        wrk: dict[str, list[WrkResult]] = {s: [] for s in SERVERS}
        big: dict[str, list[BigResult]] = {s: [] for s in SERVERS}
        for round_ in range(args.rounds):
            order = SERVERS if round_ % 2 == 0 else SERVERS[::-1]
            for server in order:
                wrk[server].append(run_wrk(bases[server] + path, args.duration))
            for server in order:
                big[server].append(run_big(bases[server] + "/" + RELEASE_FILE, args.clients, size))
    report(wrk, big, args, len(kickstart))


def report(
    wrk: dict[str, list[WrkResult]],
    big: dict[str, list[BigResult]],
    args: argparse.Namespace,
    kickstart_bytes: int,
) -> None:
    """The side-by-side table: medians over the rounds and the ratio photonkick / nginx."""
    total_mib = args.clients * args.big_mib

    rps = {s: statistics.median(r.rps for r in wrk[s]) for s in SERVERS}
    p99 = {s: statistics.median(r.p99_ms for r in wrk[s]) for s in SERVERS}
    wall = {s: statistics.median(r.wall for r in big[s]) for s in SERVERS}
    slowest = {s: statistics.median(r.slowest for r in big[s]) for s in SERVERS}
    mibs = {s: statistics.median(total_mib / r.wall for r in big[s]) for s in SERVERS}
    # Throughput ratio per round (same round, back to back), then the median of those.
    big_ratio = statistics.median(
        n.wall / p.wall for n, p in zip(big["nginx"], big["photonkick"], strict=True)
    )
    rows: list[tuple[str, str, dict[str, float], float, str]] = [
        (
            "(1) kickstart requests/s",
            "req/s",
            rps,
            rps["photonkick"] / rps["nginx"],
            goal(rps["photonkick"] >= RPS_GOAL, f">= {RPS_GOAL:.0f} req/s"),
        ),
        (
            "(1) kickstart p99 latency",
            "ms",
            p99,
            p99["photonkick"] / p99["nginx"],
            goal(p99["photonkick"] < P99_GOAL_MS, f"< {P99_GOAL_MS:.0f} ms"),
        ),
        ("(2) big file wall time", "s", wall, wall["photonkick"] / wall["nginx"], ""),
        ("(2) big file slowest client", "s", slowest, slowest["photonkick"] / slowest["nginx"], ""),
        (
            "(2) big file aggregate",
            "MiB/s",
            mibs,
            big_ratio,
            goal(big_ratio >= BIG_RATIO_GOAL, f"ratio >= {BIG_RATIO_GOAL}"),
        ),
    ]
    print(
        f"(1) {kickstart_bytes}-byte kickstart, wrk -t2 -c64 -d{args.duration}s --latency; "
        f"(2) {args.clients} curl clients x {args.big_mib} MiB initrd"
    )
    print(f"nginx worker_processes {args.nginx_workers}; medians of {args.rounds} rounds")
    print(f"{'scenario':28} {'nginx':>14} {'photonkick':>14} {'ratio':>6}  goal (photonkick)")
    for label, unit, values, ratio, verdict in rows:
        print(
            f"{label:28} {values['nginx']:8.1f} {unit:<6}{values['photonkick']:8.1f} {unit:<6}"
            f"{ratio:6.2f}  {verdict}"
        )
    print("each round, in order:")
    for server in SERVERS:
        runs = "  ".join(f"{r.rps:.0f} req/s p99 {r.p99_ms:.1f} ms" for r in wrk[server])
        print(f"  (1) {server:10}  {runs}")
    for server in SERVERS:
        runs = "  ".join(f"{total_mib / r.wall:.0f}" for r in big[server])
        print(f"  (2) {server:10}  {runs} MiB/s")
    failed = {s: sum(r.failed for r in wrk[s]) + sum(r.failed for r in big[s]) for s in SERVERS}
    print(f"failed requests or transfers: {failed}")


def goal(met: bool, text: str) -> str:
    """A goal and whether it was met."""
    return f"{text} {'met' if met else 'MISSED'}"


if __name__ == "__main__":
    main()

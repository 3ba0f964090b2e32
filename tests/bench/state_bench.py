"""Benchmark: two `photonkick serve` processes sharing PostgreSQL next to one on SQLite.

Run: .venv/bin/python tests/bench/state_bench.py [--hosts 1000] [--clients 16] [--probes 100]
Needs Debian's postgresql (a throwaway cluster is started here as `nobody`, fsync on, as a
production database would run; never the system service).

Each simulated host does what an install does over HTTP: its iPXE boot config, its
kickstart, then the callbacks installed -> firstboot -> ready. With PostgreSQL, a host
fetches from server A (127.0.0.2) and reports to server B (127.0.0.3); with SQLite, one server
(127.0.0.4) answers everything. Printed: requests/s and p99 latency of each setup, and the
time from an `installed` answered by B to A's changed boot config (A polled every 2 ms;
goal: p99 < 100 ms).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

from pg_fixture import PgCluster, find_bindir, free_port  # noqa: E402
from serve_process import ServeProcess  # noqa: E402

from photonkick.kickstarts.tokens import host_token  # noqa: E402

MAC = "00:50:56:00:30:{:02x}"
PROPAGATION_GOAL_MS = 100.0
POLL = 0.002
CALLBACKS = ("installed", "firstboot", "ready")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def mac(i: int) -> str:
    return f"00:50:56:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"


def write_spec(server: ServeProcess, hosts: int) -> None:
    """``hosts`` PXE hosts (MACs unique beyond 256, unlike the tests' small labs)."""
    lines = [f'server: {{url: "http://{server.address}:{server.port}"}}', "hosts:"]
    lines += [f'  - {{name: h{i:04d}, mac: "{mac(i)}"}}' for i in range(hosts)]
    server.spec.write_text("\n".join(lines) + "\n")


class Client:
    """Keep-alive HTTP connections of one worker thread, one per server."""

    def __init__(self) -> None:
        self._conns: dict[tuple[str, int], http.client.HTTPConnection] = {}

    def request(
        self, server: ServeProcess, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, float]:
        key = (server.address, server.port)
        for attempt in (0, 1):
            conn = self._conns.get(key)
            if conn is None:
                conn = http.client.HTTPConnection(server.address, server.port, timeout=30)
                self._conns[key] = conn
            start = time.monotonic()
            try:
                conn.request(method, path, headers=headers or {})
                resp = conn.getresponse()
                body = resp.read()
                return resp.status, body, time.monotonic() - start
            except (http.client.HTTPException, OSError):
                conn.close()
                del self._conns[key]
                if attempt:
                    raise
        raise AssertionError("unreachable")


def install(
    client: Client, fetch: ServeProcess, report: ServeProcess, name: str, i: int, token: str
) -> list[float]:
    """One host's install over HTTP; the latency of each request."""
    took: list[float] = []
    status, config, t = client.request(fetch, "GET", f"/ipxe/{mac(i).replace(':', '-')}.ipxe")
    assert status == 200, (status, config[:200])
    took.append(t)
    found = re.search(rb"ks=http://[\d.]+:\d+(/ks/\S+\.json)", config)
    assert found, config
    status, _, t = client.request(fetch, "GET", found.group(1).decode())
    assert status == 200, status
    took.append(t)
    for event in CALLBACKS:
        status, body, t = client.request(report, "POST", f"/cb/{name}/{token}/{event}", FORM)
        assert status == 200, (event, status, body)
        took.append(t)
    return took


def run_installs(
    hosts: range, clients: int, pick: Callable[[int], tuple[ServeProcess, ServeProcess]]
) -> tuple[float, list[float]]:
    """Every host installed by ``clients`` worker threads: wall time and request latencies."""
    local = threading.local()
    secret = pick(0)[0].secret()

    def one(i: int) -> list[float]:
        if not hasattr(local, "client"):
            local.client = Client()
        fetch, report = pick(i)
        name = f"h{i:04d}"
        return install(local.client, fetch, report, name, i, host_token(secret, name, 1))

    start = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [t for took in pool.map(one, hosts) for t in took]
    return time.monotonic() - start, latencies


def propagation(a: ServeProcess, b: ServeProcess, hosts: range) -> list[float]:
    """Seconds from B's answer to `installed` until A's boot config changes."""
    client = Client()
    secret = a.secret()
    seen: list[float] = []
    for i in hosts:
        name = f"h{i:04d}"
        path = f"/ipxe/{mac(i).replace(':', '-')}.ipxe"
        armed = client.request(a, "GET", path)[1]
        token = host_token(secret, name, 1)
        status, _, _ = client.request(b, "POST", f"/cb/{name}/{token}/installed", FORM)
        assert status == 200, status
        answered = time.monotonic()
        while client.request(a, "GET", path)[1] == armed:
            if time.monotonic() - answered > 10:
                raise AssertionError(f"A never saw {name} installed")
            time.sleep(POLL)
        seen.append(time.monotonic() - answered)
    return seen


def p99(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def report(label: str, wall: float, latencies: list[float], hosts: int) -> None:
    print(
        f"{label:<28} {hosts} hosts, {len(latencies)} requests in {wall:.1f} s: "
        f"{len(latencies) / wall:,.0f} req/s, p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {p99(latencies) * 1000:.1f} ms"
    )


def start_server(
    root: Path, address: str, hosts: int, state_url: str | None, data: Path
) -> ServeProcess:
    root.mkdir(parents=True)
    server = ServeProcess(root, hosts, root / "state", data, address, state_url)
    write_spec(server, hosts)
    server.start()
    server.secret()
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16, help="concurrent simulated hosts")
    parser.add_argument("--probes", type=int, default=100, help="hosts for the propagation")
    args = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        print("PostgreSQL not found (apt-get install postgresql)", file=sys.stderr)
        return 1
    total = args.hosts + args.probes
    folder = Path(tempfile.mkdtemp(prefix="photonkick-state-bench-"))
    os.chmod(folder, 0o755)
    data = folder / "releases"
    (data / "5.0" / "isolinux").mkdir(parents=True)
    cluster = PgCluster(bindir, folder / "cluster", free_port(), fsync=True)
    servers: list[ServeProcess] = []
    try:
        cluster.init()
        cluster.start()
        url = cluster.create_database()
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        a = start_server(folder / "a", "127.0.0.2", total, url, data)
        servers.append(a)
        b = start_server(folder / "b", "127.0.0.3", total, url, data)
        servers.append(b)
        wall, latencies = run_installs(range(args.hosts), args.clients, lambda i: (a, b))
        report("PostgreSQL, A fetch, B report", wall, latencies, args.hosts)
        seen = propagation(a, b, range(args.hosts, total))
        print(
            f"{'callback on B -> A changed':<28} {len(seen)} hosts: "
            f"p50 {statistics.median(seen) * 1000:.1f} ms, p99 {p99(seen) * 1000:.1f} ms, "
            f"max {max(seen) * 1000:.1f} ms (goal p99 < {PROPAGATION_GOAL_MS:.0f} ms)"
        )
        single = start_server(folder / "sqlite", "127.0.0.4", total, None, data)
        servers.append(single)
        wall, latencies = run_installs(range(args.hosts), args.clients, lambda i: (single, single))
        report("SQLite, one server", wall, latencies, args.hosts)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        return 0 if p99(seen) * 1000 < PROPAGATION_GOAL_MS else 1
    finally:
        for server in servers:
            server.stop()
        cluster.kill()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: `up` of 50 hosts against the vSphere simulator, the fake guest answering at once.

Run: .venv/bin/python tests/bench/up_bench.py [--hosts 50] [--parallel 4] [--model esx]
Prints the whole fleet's wall time and photonkick's own overhead per host: VM created ->
ready when the guest answers instantly is what photonkick (and the simulator) cost.
Goal: the whole fleet in under 10 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fake_guest import FakeGuest, spec_text  # noqa: E402
from vcsim_fixture import build_vcsim, run_vcsim  # noqa: E402

from photonkick.kickstarts.inventory import load_inventory  # noqa: E402
from photonkick.server.boot_server import BootServer, Listen  # noqa: E402
from photonkick.server.cli_fleet import connect_driver as _connect  # noqa: E402
from photonkick.server.fleet import Fleet, UpOptions  # noqa: E402
from photonkick.server.report import build_report, percentile  # noqa: E402
from photonkick.server.state_dir import StateDir  # noqa: E402


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--model", choices=("esx", "vcenter"), default="esx")
    args = parser.parse_args()
    hosts = [
        {"name": f"bench{i:03d}", "mac": f"00:50:56:01:{i >> 8:02x}:{i & 0xFF:02x}"}
        for i in range(args.hosts)
    ]
    with tempfile.TemporaryDirectory() as tmp, run_vcsim(build_vcsim(), args.model) as sim:
        root = Path(tmp)
        (root / "ca.pem").write_text(sim.cert_pem)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        spec = root / "fleet.yaml"
        spec.write_text(spec_text(sim, port, hosts, root / "ca.pem"))
        inventory = load_inventory(spec)
        state = StateDir(root / ".photonkick")
        server = BootServer(
            spec, inventory, state, root / "releases", Listen("127.0.0.1", port, "127.0.0.1", 0)
        )
        server.start()
        driver = _connect(inventory, state)
        fleet = Fleet(inventory, state, server.timeline, driver)
        with FakeGuest(inventory, state, server.timeline, sim, server.tftp.port) as guest:
            start = time.perf_counter()
            runs = fleet.up([], UpOptions(parallel=args.parallel, timeout=120))
            total = time.perf_counter() - start
        report = build_report(runs, server.timeline)
        driver.close()  # type: ignore[attr-defined]
        server.stop()
    ready = [h["time_to_ready"] for h in report["hosts"] if h["time_to_ready"] is not None]
    print(f"hosts                  {args.hosts} ({args.model} model, --parallel {args.parallel})")
    print(f"ready                  {len(ready)}   guest errors: {len(guest.errors)}")
    print(f"whole fleet            {total:7.2f} s   (goal: under 10 s)")
    print(f"fleet time per host    {total / args.hosts * 1000:7.1f} ms")
    print(
        f"created->ready p50     {1000 * (percentile(ready, 50) or 0):7.1f} ms   "
        "(one host's path: create, power on, PXE config over TFTP, kickstart, 3 callbacks,"
        " post-install reconfigure)"
    )
    print(f"created->ready p95     {1000 * (percentile(ready, 95) or 0):7.1f} ms")
    print(f"created->ready max     {1000 * max(ready, default=0):7.1f} ms")


if __name__ == "__main__":
    main()

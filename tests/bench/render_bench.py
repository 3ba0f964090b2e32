"""Benchmark: render a generated 1,000-host spec and print seconds and hosts/s.

Run: .venv/bin/python tests/bench/render_bench.py [--hosts N]
It times the library (load + build + JSON) and the whole `photonkick render` command.
Goal: under 2 s for 1,000 hosts on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from photonkick.kickstarts.artifacts import kickstart_tree
from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.kickstart import BuildInfo

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKksNuZqJe6Z/4Yvqo6HmHvmx80Tw+5mHEAKRbDx47Ey ops@x"


def generate_spec(hosts: int) -> str:
    """A spec with profiles, users, containers, secrets and one plain-text password."""
    lines = [
        "server: {url: https://pk.example:8443}",
        "defaults:",
        "  users:",
        f"    - {{name: ops, groups: [docker], sudo: true, ssh_keys: ['{KEY}']}}",
        "    - {name: admin, password: {env: BENCH_ADMIN_PASSWORD}, sudo: true}",
        "profiles:",
        "  web:",
        "    containers: [{name: web, image: nginx:1.27, ports: ['80:80'],",
        "                  volumes: ['/srv/www:/usr/share/nginx/html:ro']}]",
        "  db:",
        "    containers: [{name: db, image: mysql:8.4, ports: ['3306:3306'],",
        "                  env: {MYSQL_ROOT_PASSWORD: {env: BENCH_DB_PASSWORD}}}]",
        "hosts:",
    ]
    for i in range(hosts):
        profile = "web" if i % 2 else "db"
        lines.append(
            f"  - {{name: node{i:04d}, mac: '00:50:56:{i >> 16 & 0x3F:02x}:{i >> 8 & 0xFF:02x}:"
            f"{i & 0xFF:02x}', profile: {profile}}}"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=1000)
    args = parser.parse_args()
    env = {"BENCH_ADMIN_PASSWORD": "correct horse", "BENCH_DB_PASSWORD": "db-secret"}
    os.environ.update(env)
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "fleet.yaml"
        spec.write_text(generate_spec(args.hosts))
        build = BuildInfo(1, os.urandom(32))

        start = time.perf_counter()
        inventory = load_inventory(spec)
        loaded = time.perf_counter()
        tree = kickstart_tree(inventory, lambda name: build)
        built = time.perf_counter()

        exe = Path(sys.executable).parent / "photonkick"
        cli_start = time.perf_counter()
        subprocess.run(
            [str(exe), "render", str(spec), "--out", f"{tmp}/out"], check=True, capture_output=True
        )
        cli_end = time.perf_counter()

    total = built - start
    print(f"hosts                         {args.hosts}")
    print(f"load + check spec             {loaded - start:7.3f} s")
    print(f"build kickstarts              {built - loaded:7.3f} s  ({len(tree)} files)")
    print(f"library total                 {total:7.3f} s  {args.hosts / total:8.0f} hosts/s")
    print(
        f"`photonkick render` (process) {cli_end - cli_start:7.3f} s  "
        f"{args.hosts / (cli_end - cli_start):8.0f} hosts/s"
    )
    print("(one sha512_crypt at 656,000 rounds for the shared admin password, hashed once)")


if __name__ == "__main__":
    main()

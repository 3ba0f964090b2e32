"""`photonkick up` and `status` run from two machines (two state directories) against one
PostgreSQL state, with the vSphere simulator."""

from __future__ import annotations

import socket
from pathlib import Path

from fake_guest import FakeGuest, spec_text
from photon_iso import build_photon_iso
from test_up import HOSTS, free_port, run_cli
from vcsim_fixture import Vcsim

from photonkick.kickstarts.inventory import load_inventory
from photonkick.server.state_dir import StateDir
from photonkick.server.timeline import Timeline


def test_up_on_one_runner_and_status_on_another(tmp_path: Path, vcsim: Vcsim, pg_url: str) -> None:
    ca = tmp_path / "sim.pem"
    ca.write_text(vcsim.cert_pem)
    spec = tmp_path / "lab.yaml"
    port = free_port()
    spec.write_text(
        spec_text(vcsim, port, [HOSTS[2]], ca, None).replace(
            "  network: VM Network", "  network: VM Network\n  iso: photon.iso"
        )
    )
    build_photon_iso(tmp_path / "photon.iso")
    inventory = load_inventory(spec)
    state = StateDir(tmp_path / "guest", pg_url)
    timeline = Timeline(state.store("timeline"))
    shared = ("--state-url", pg_url)
    try:
        with FakeGuest(inventory, state, timeline, vcsim, tftp_port=0):
            up = run_cli(
                "up", str(spec), "--timeout", "60", "--state", "one", *shared, cwd=tmp_path
            )
        assert up.returncode == 0, up.stdout + up.stderr
        assert "1/1 ready;" in up.stdout
        status = run_cli("status", str(spec), "--state", "two", *shared, cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert "gi01" in status.stdout and "ready" in status.stdout
        # Recorded by the boot server `up` ran, under its own id.
        servers = {e.server for e in timeline.events("gi01") if e.kind == "vm_created"}
        assert servers == {f"{socket.gethostname()}/127.0.0.1:{port}"}
        assert not (tmp_path / "two" / "timeline.db").exists()  # nothing kept locally
    finally:
        timeline.close()
        state.close()

"""Two boot servers on two bridges of the lab namespace, sharing one PostgreSQL database.

The namespace gets a second bridge (``pkbr1``, 198.51.100.1/24) beside the lab's own
(``pkbr0``, 192.0.2.1/24), one tap on each. A ``photonkick serve`` listens on each bridge's
address (HTTP 8080, TFTP 69), both with ``--state-url`` naming one database of a throwaway
cluster (reached over its unix socket, which the namespace shares with the host). Each
bridge has its own dnsmasq handing its VM that bridge's server. Both specs list both hosts
and differ only in ``server.url``. A BIOS iPXE VM on each bridge installs to ``ready``;
then each server's API must show both hosts' whole timelines, every event naming the
server that answered it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pg_fixture import PgCluster

from lab.guest import Guest
from lab.netlab import (
    BRIDGE,
    SERVER_IP,
    BootFiles,
    Client,
    NetLab,
    dnsmasq_conf,
    netlab,
    wait_for,
)
from lab.qemu import Vm, VmSpec, run_vms
from lab.test_lab_photonkick import (
    EXPECTED,
    PHOTONKICK,
    PORT,
    RELEASE,
    SERVE_START_TIMEOUT,
    VM_TIMEOUT,
    _collapse,
    _import_iso,
    http,
)

pytestmark = pytest.mark.lab

SECOND_BRIDGE = "pkbr1"
SECOND_IP = "198.51.100.1"
SECOND_IP6 = "fd00:5e:1ac::1"


@dataclass(frozen=True)
class Site:
    """One bridge, its boot server and the one VM on it."""

    index: int
    bridge: str
    server_ip: str
    host: str
    mac: str
    vm_ip: str
    dhcp_range: str
    ra_prefix: str

    @property
    def url(self) -> str:
        return f"http://{self.server_ip}:{PORT}"

    @property
    def server_id_suffix(self) -> str:
        """How the server's id (``<machine>/<address>:<port>``) ends."""
        return f"/{self.server_ip}:{PORT}"


SITES = (
    Site(0, BRIDGE, SERVER_IP, "site-a", "52:54:00:5e:02:21", "192.0.2.21",
         "192.0.2.100,192.0.2.199", "fd00:5e:1ab::"),
    Site(1, SECOND_BRIDGE, SECOND_IP, "site-b", "52:54:00:5e:02:22", "198.51.100.21",
         "198.51.100.100,198.51.100.199", "fd00:5e:1ac::"),
)  # fmt: skip


def _spec_yaml(site: Site) -> str:
    lines = ["photon:", f'  release: "{RELEASE}"', "server:", f"  url: {site.url}", "hosts:"]
    for s in SITES:
        lines += [f"  - name: {s.host}", f'    mac: "{s.mac}"', "    firmware: bios"]
    return "\n".join(lines) + "\n"


def _add_second_bridge(lab: NetLab) -> None:
    """``pkbr1`` with the second server's addresses, and the last tap moved onto it."""

    def ip(*args: str) -> None:
        lab.run(["ip", *args])

    ip("link", "add", SECOND_BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    ip("addr", "add", f"{SECOND_IP}/24", "dev", SECOND_BRIDGE)
    ip("-6", "addr", "add", f"{SECOND_IP6}/64", "dev", SECOND_BRIDGE, "nodad")
    ip("link", "set", SECOND_BRIDGE, "up")
    ip("link", "set", lab.taps[1], "nomaster")
    ip("link", "set", lab.taps[1], "master", SECOND_BRIDGE)


def _start_dnsmasq(lab: NetLab, site: Site) -> None:
    """A dnsmasq bound to ``site``'s bridge only, handing its VM that bridge's server."""
    folder = lab.workdir / f"dhcp-{site.index}"
    folder.mkdir()
    files = BootFiles(
        ipxe=f"{site.url}/ipxe/boot.ipxe",
        uefi_http=f"{site.url}/no-uefi-http-boot.efi",
        next_server=site.server_ip,
    )
    conf = dnsmasq_conf([Client(site.host, site.mac, site.vm_ip)], files, folder)
    conf = (
        conf.replace(f"interface={BRIDGE}\n", f"interface={site.bridge}\n")
        .replace("192.0.2.100,192.0.2.199", site.dhcp_range)
        .replace("fd00:5e:1ab::,", f"{site.ra_prefix},")
    )
    log = folder / "dnsmasq.log"
    (folder / "dnsmasq.conf").write_text(conf + f"log-facility={log}\n")
    out = folder / "dnsmasq.out"
    proc = lab.spawn(["dnsmasq", f"--conf-file={folder / 'dnsmasq.conf'}", "-k"], out)

    def why() -> str:
        return f"dnsmasq on {site.bridge} did not start (exit {proc.poll()}): {out.read_text()}"

    wait_for(lambda: log.exists() and "DHCP, IP range" in log.read_text(), 10, why)


def start_serve(
    lab: NetLab, folder: Path, spec_text: str, address: str, data: Path, *extra: str
) -> Path:
    """``photonkick serve`` of ``spec_text`` on ``address`` (HTTP and TFTP), its state in
    ``folder``; ``extra`` arguments follow. Returns its log once it listens."""
    folder.mkdir()
    spec = folder / "spec.yaml"
    spec.write_text(spec_text)
    log = folder / "serve.log"
    serve = lab.spawn(
        [str(PHOTONKICK), "serve", str(spec), "--state", str(folder / "state"),
         "--data", str(data), "--http", f"{address}:{PORT}", "--tftp", f"{address}:69", *extra],
        log,
    )  # fmt: skip

    def started() -> bool:
        if serve.poll() is not None:
            raise RuntimeError(f"photonkick serve exited {serve.returncode}:\n{log.read_text()}")
        return "ISC dhcpd:" in log.read_text()

    wait_for(started, SERVE_START_TIMEOUT, lambda: f"photonkick serve:\n{log.read_text()}")
    lab.wait_listening(PORT, 10, proc=serve)
    return log


def _socket_url(cluster: PgCluster) -> str:
    """A fresh database of ``cluster``, reached over its unix socket (the namespace has its
    own loopback, the filesystem is shared)."""
    url = cluster.create_database()
    dbname = url.rsplit("/", 1)[1]
    return f"postgresql://postgres@/{dbname}?host={cluster.folder}&port={cluster.port}"


@dataclass
class Shared:
    """What each server's API said about each host, and the VMs."""

    views: dict[str, dict[str, dict[str, Any]]]
    vms: dict[str, Vm]
    wall: float


@pytest.fixture(scope="module")
def shared(
    lab_guest: Guest,
    lab_accel: str,
    lab_report: list[str],
    pg_cluster: PgCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Shared]:
    """Both VMs installed at once, each through the server on its own bridge."""
    workdir = tmp_path_factory.mktemp("lab-two-servers")
    data = _import_iso(lab_guest, workdir)
    state_url = _socket_url(pg_cluster)
    with netlab(len(SITES), workdir) as lab:
        _add_second_bridge(lab)
        for site in SITES:
            folder = workdir / f"server-{site.index}"
            start_serve(
                lab, folder, _spec_yaml(site), site.server_ip, data, "--state-url", state_url
            )
            _start_dnsmasq(lab, site)
        specs = [
            VmSpec(
                name=site.host,
                mac=site.mac,
                tap=lab.taps[site.index],
                firmware="bios",
                nic="vmxnet3",
                disk=lab_guest.new_disk(workdir / f"{site.host}.img"),
            )
            for site in SITES
        ]
        began = time.monotonic()
        vms = run_vms(lab, specs, lab_accel, VM_TIMEOUT, parallel=len(specs))
        wall = time.monotonic() - began
        views: dict[str, dict[str, dict[str, Any]]] = {}
        for server in SITES:
            views[server.host] = {}
            for site in SITES:
                code, body = http(lab, "GET", f"{server.url}/api/v1/hosts/{site.host}")
                assert code == 200, body
                views[server.host][site.host] = json.loads(body)
    result = Shared(views, vms, wall)
    lab_report.extend(_table(result, lab_accel))
    yield result


def _table(result: Shared, accel: str) -> list[str]:
    """Phase offsets per host as the first server's API reports them."""
    lines = [
        f"two servers on one PostgreSQL, accel={accel}: 2 VMs at once, "
        f"{result.wall:.1f}s wall; phases in seconds from the first config fetch",
        f"  {'VM':12}" + "".join(f"{c:>11}" for c in EXPECTED),
    ]
    for site in SITES:
        phases = result.views[SITES[0].host][site.host].get("phases", {})
        lines.append(
            f"  {site.host:12}"
            + "".join(f"{phases[c]:>11.1f}" if c in phases else f"{'-':>11}" for c in EXPECTED)
        )
    return lines


def _explain(result: Shared, site: Site) -> str:
    events = [
        (e["kind"], e["detail"][:40], e["client"], e.get("server"))
        for e in result.views[site.host][site.host].get("events", [])
    ]
    return f"events {events}\nconsole:\n{result.vms[site.host].console_tail(3000)}"


@pytest.mark.parametrize("site", SITES, ids=[s.host for s in SITES])
def test_each_vm_ready_through_its_own_server(shared: Shared, site: Site) -> None:
    """Each VM installs and boots its disk through the server on its own bridge only."""
    vm = shared.vms[site.host]
    assert not vm.timed_out, f"{site.host} did not power off\n{_explain(shared, site)}"
    status = shared.views[site.host][site.host]
    kinds = [e["kind"] for e in status["events"]]
    assert _collapse(kinds) == list(EXPECTED), _explain(shared, site)
    assert status["phase"] == "ready" and status["failed"] is None
    servers = {e["server"] for e in status["events"]}
    assert len(servers) == 1, servers
    assert next(iter(servers)).endswith(site.server_id_suffix), servers
    assert {e["client"] for e in status["events"]} == {site.vm_ip}


@pytest.mark.parametrize("host", [s.host for s in SITES])
def test_both_servers_show_the_same_timeline(shared: Shared, host: str) -> None:
    """Either server's API shows the host's whole timeline, the same events (with the
    answering server named) whichever server is asked."""
    a, b = (shared.views[server.host][host] for server in SITES)
    assert a["events"] == b["events"]
    assert a["phase"] == b["phase"] == "ready"
    assert a["time_to_ready"] == b["time_to_ready"] is not None

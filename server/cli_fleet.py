"""The vSphere commands: `up`, `rebuild`, `down` and `status`."""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from photonkick.kickstarts.errors import UsageError
from photonkick.kickstarts.spec import Inventory
from photonkick.server.boot_server import BootServer, listen_for, running_server
from photonkick.server.cli_common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    load_spec,
    state_for,
)
from photonkick.server.dhcp import attach_dhcp
from photonkick.server.dhcp_site import plan_dhcp
from photonkick.server.fleet import (
    Fleet,
    FleetError,
    FleetInputError,
    HostRun,
    UpOptions,
    creation_problem,
    select_hosts,
)
from photonkick.server.host_status import host_status
from photonkick.server.package_progress import stored_progress
from photonkick.server.progress import PROGRESS_REFRESH, Progress, Ticker, quiet_waitress_queue
from photonkick.server.report import build_report, format_report, report_json
from photonkick.server.state_dir import StateDir
from photonkick.server.timeline import Timeline
from photonkick.server.vsphere import Placement, VmDriver

CLOSE_GRACE = 0.5
"""Seconds logging out of vSphere may take after a stop before `up` leaves without it."""


def interrupt_exits_130(command: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """Turn Ctrl-C anywhere (even while starting) into one line and exit code 130 without a
    traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except KeyboardInterrupt:
            print("photonkick: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

    run.__doc__ = command.__doc__
    return run


@contextmanager
def fleet_session(
    args: argparse.Namespace,
) -> Iterator[tuple[Path, Inventory, StateDir, Timeline]]:
    """The spec (which must have a vsphere section), its state and timeline; the timeline is
    closed, and so written out, at the end. The named hosts are checked before anything
    else happens."""
    spec, inventory = load_spec(args)
    if inventory.vsphere is None:
        raise FleetInputError(
            f"{spec}: vsphere: the spec has no vsphere section: say which ESXi host or "
            "vCenter to use"
        )
    select_hosts(inventory, getattr(args, "names", None) or [])
    state = state_for(args, spec, inventory)
    timeline = Timeline(state.store("timeline"), server_id=f"{socket.gethostname()}/up")
    try:
        yield spec, inventory, state, timeline
    finally:
        timeline.close()


def connect_driver(inventory: Inventory, state: StateDir) -> VmDriver:
    from photonkick.server.vsphere._pyvmomi import PyVmomiDriver

    vs = inventory.vsphere
    assert vs is not None
    placement = Placement(
        vs.datacenter, vs.cluster, vs.resource_pool, vs.folder, vs.datastore, vs.network
    )
    return PyVmomiDriver.connect(
        vs.host,
        vs.user,
        vs.password.reveal(),
        port=vs.port,
        placement=placement,
        ca_file=vs.ca_file,
        # insecure: no certificate is checked, so none is pinned either.
        pin_dir=None if vs.insecure else state.path / "pins",
        insecure=vs.insecure,
    )


def run_up(args: argparse.Namespace, *, rebuild: bool) -> int:
    """Shared body of `up` and `rebuild`."""
    with fleet_session(args) as (spec, inventory, state, timeline):
        return _up(args, rebuild, spec, inventory, state, timeline)


def _up(
    args: argparse.Namespace,
    rebuild: bool,
    spec: Path,
    inventory: Inventory,
    state: StateDir,
    timeline: Timeline,
) -> int:
    names = args.names
    wanted = select_hosts(inventory, names)
    problems = [p for p in (creation_problem(inventory, h) for h in wanted) if p]
    if problems:
        raise FleetInputError("; ".join(problems))
    # Every boot method reports back over HTTP, so a boot server must be there.
    own_server = not running_server(inventory)
    # Managed DHCP is checked before anything is created or started.
    dhcp_plan = plan_dhcp(inventory, state.path) if own_server else None
    driver = connect_driver(inventory, state)
    server = None
    if own_server:
        if inventory.server.url.startswith("https://"):
            raise FleetError(
                f"no boot server answers at {inventory.server.url}; photonkick serves plain "
                "http, so start `photonkick serve` behind your TLS proxy first"
            )
        data = Path(args.data) if args.data else state.path / "releases"
        listen = listen_for(inventory)
        try:
            server = BootServer(spec, inventory, state, data, listen)
        except OSError as exc:
            raise FleetError(
                f"cannot serve {inventory.server.url} here ({exc.strerror}): something else "
                "holds the port; stop it, or run `photonkick serve` for this spec first"
            ) from exc
        if dhcp_plan is not None:
            try:
                attach_dhcp(server, dhcp_plan, inventory)  # stops the server if it fails
            except BaseException:
                close_driver(driver)
                raise
        quiet_waitress_queue()
        server.start()
        timeline = server.timeline  # the same process: events wake the fleet at once
        print(
            f"started a boot server for {inventory.server.url} (TFTP port {server.tftp.port})",
            file=sys.stderr,
        )

    def packages(run: HostRun) -> str | None:
        counted = stored_progress(state, run.name, run.build)
        return counted.text() if counted else None

    progress = Progress([h.name for h in wanted], extra=packages)
    fleet = Fleet(inventory, state, timeline, driver, on_change=progress.update)
    options = UpOptions(parallel=args.parallel, timeout=args.timeout, rebuild=rebuild)
    ticker = Ticker(PROGRESS_REFRESH, progress.refresh)
    try:
        runs = fleet.up(names, options)
        report = build_report(runs, timeline)
    finally:
        ticker.stop()
        if server is not None:
            server.stop()
        close_driver(driver, wait=CLOSE_GRACE if fleet.stop.is_set() else None)
    print()
    print(format_report(report))
    out = (
        Path(args.report)
        if args.report
        else (state.path / "reports" / time.strftime("up-%Y%m%d-%H%M%S.json"))
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report_json(report))
    print(f"report: {out}")
    if fleet.stop.is_set():
        return EXIT_INTERRUPTED
    ok = all(r.outcome == "ready" or (r.outcome == "exists" and r.phase == "ready") for r in runs)
    return EXIT_OK if ok else EXIT_FAILED


def close_driver(driver: VmDriver, wait: float | None = None) -> None:
    """Log out; with ``wait``, give up waiting after that many seconds (a server that hangs
    must not hold a stopped `up`)."""
    if wait is None:
        driver.close()
        return
    closing = threading.Thread(target=driver.close, name="vsphere-logout", daemon=True)
    closing.start()
    closing.join(wait)


@interrupt_exits_130
def cmd_up(args: argparse.Namespace) -> int:
    """Create the spec's VMs on ESXi or vCenter, boot them and follow them to ready."""
    return run_up(args, rebuild=args.rebuild)


@interrupt_exits_130
def cmd_rebuild(args: argparse.Namespace) -> int:
    """Destroy and recreate hosts (same name and MAC, new tokens) and follow them to ready."""
    if not args.names:
        raise UsageError("rebuild needs host names")
    return run_up(args, rebuild=True)


@interrupt_exits_130
def cmd_down(args: argparse.Namespace) -> int:
    """Power off and delete hosts' VMs (all hosts with --all)."""
    if not args.names and not args.all:
        raise UsageError("down needs host names, or --all")
    with fleet_session(args) as (_, inventory, state, timeline):
        driver = connect_driver(inventory, state)
        try:
            runs = Fleet(inventory, state, timeline, driver).down(args.names)
        finally:
            close_driver(driver)
    for run in runs:
        print(f"{run.name}: {run.outcome}" + (f": {run.detail}" if run.detail else ""))
    return EXIT_FAILED if any(r.outcome == "error" for r in runs) else EXIT_OK


@interrupt_exits_130
def cmd_status(args: argparse.Namespace) -> int:
    """Show each host's VM (power, IP) and its last timeline."""
    with fleet_session(args) as (_, inventory, state, timeline):
        _print_status(args, inventory, state, timeline)
    return EXIT_OK


def _print_status(
    args: argparse.Namespace, inventory: Inventory, state: StateDir, timeline: Timeline
) -> None:
    driver = connect_driver(inventory, state) if not args.offline else None
    try:
        for host in inventory.hosts:
            build = state.build(host.name).build
            status = host_status(timeline, host, build, stored_progress(state, host.name, build))
            vm = "-"
            if driver is not None:
                handle = driver.find(host.name)
                if handle is None:
                    vm = "no VM"
                else:
                    vm_state = driver.state(handle)
                    vm = f"{vm_state.power}" + (f" {vm_state.ip}" if vm_state.ip else "")
            ttr = f"{status.time_to_ready:.1f}s" if status.time_to_ready is not None else "-"
            phase = f"failed: {status.failed}" if status.failed else status.phase
            counted = f" {status.packages.text()}" if status.packages else ""
            print(f"{host.name:<20} build {build:<3} {vm:<24} {phase:<12} ready {ttr}{counted}")
            for alarm in status.alarms:
                print(f"{host.name:<20} ALARM: {alarm}")
    finally:
        if driver is not None:
            close_driver(driver)

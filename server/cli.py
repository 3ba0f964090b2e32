"""The ``photonkick`` command: argument parsing, and errors turned into exit codes."""

from __future__ import annotations

import argparse
import base64
import logging
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata, resources
from pathlib import Path

from photonkick.kickstarts.artifacts import Artifact
from photonkick.kickstarts.errors import PhotonkickError, SpecError
from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.kickstart import build_kickstart, dumps
from photonkick.kickstarts.spec import Inventory
from photonkick.kickstarts.warnings import inventory_warnings
from photonkick.pxe.dhcp import dhcp_instructions
from photonkick.pxe.isoboot import seed_boot_param
from photonkick.pxe.names import TFTP
from photonkick.pxe.tree import build_boot_tree
from photonkick.server.fleet import Fleet, FleetError, UpOptions
from photonkick.server.iso_build import remaster_iso, write_seed_iso
from photonkick.server.iso_import import import_iso
from photonkick.server.loaders import loader_files, loader_report
from photonkick.server.output import write_tree
from photonkick.server.progress import Progress
from photonkick.server.report import build_report, format_report, report_json
from photonkick.server.serve import BootServer, Listen, listen_for, running_server, serve_forever
from photonkick.server.state import StateDir
from photonkick.server.status import host_status
from photonkick.server.timeline import Timeline
from photonkick.server.vsphere import Placement, VmDriver

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def example_spec() -> Path:
    """The bundled example spec (a small lab of four hosts)."""
    return Path(str(resources.files("photonkick.kickstarts") / "examples" / "lab.yaml"))


def _spec_path(args: argparse.Namespace) -> Path:
    if args.example:
        return example_spec()
    if args.spec is None:
        raise SystemExit("photonkick: give a SPEC file, or --example for the bundled one")
    return Path(args.spec)


def _state(args: argparse.Namespace, spec: Path) -> StateDir:
    if args.state:
        return StateDir(Path(args.state))
    base = Path.cwd() if args.example else spec.parent
    return StateDir(base / ".photonkick")


def _load(args: argparse.Namespace) -> tuple[Path, Inventory]:
    spec = _spec_path(args)
    inventory = load_inventory(spec)
    for warning in inventory_warnings(inventory):
        print(f"warning: {warning}", file=sys.stderr)
    return spec, inventory


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a spec and print every problem at once."""
    spec, inventory = _load(args)
    name = "bundled example" if args.example else str(spec)
    print(
        f"{name}: {len(inventory.hosts)} hosts, Photon {inventory.photon.release}, "
        f"installer {inventory.photon.installer}: OK\n"
    )
    print(dhcp_instructions(inventory))
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    """Write kickstarts, per-MAC boot configs and the loaders under OUT."""
    spec, inventory = _load(args)
    state = _state(args, spec)
    tree = build_boot_tree(inventory, state.build)
    loaders = loader_files(state.path / "cache")
    for name, path in loaders.items():
        tree[TFTP / name] = Artifact(path.read_bytes())
    write_tree(tree, Path(args.out))
    print(f"wrote {len(tree)} files for {len(inventory.hosts)} hosts to {args.out}")
    missing = [s for s in loader_report(state.path / "cache") if s.path is None]
    for status in missing:
        print(
            f"warning: loader {status.name} not found ({status.hint}); see photonkick doctor",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """Print one host's kickstart (secrets redacted unless --reveal or --guestinfo)."""
    spec, inventory = _load(args)
    try:
        host = inventory.host(args.name)
    except KeyError:
        names = ", ".join(h.name for h in inventory.hosts)
        print(f"photonkick: no host {args.name!r} in {spec} (hosts: {names})", file=sys.stderr)
        return EXIT_BAD_INPUT
    reveal = args.reveal or args.guestinfo
    build = _state(args, spec).build(host.name)
    text = dumps(build_kickstart(host, inventory, build, redact=not reveal))
    if args.guestinfo:
        print(base64.b64encode(text.encode()).decode())
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _address(text: str, default_port: int) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        return text, default_port
    return host.strip("[]"), int(port)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve kickstarts, boot configs and files over HTTP and TFTP; record host timelines."""
    spec, inventory = _load(args)
    state = _state(args, spec)
    data = Path(args.data) if args.data else state.path / "releases"
    http_host, http_port = _address(args.http, 8080)
    tftp_host, tftp_port = _address(args.tftp, 69)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    server = BootServer(
        spec, inventory, state, data, Listen(http_host, http_port, tftp_host, tftp_port)
    )

    def ready() -> None:
        shown = "localhost" if http_host in ("0.0.0.0", "::") else http_host
        print(
            f"photonkick serving {len(inventory.hosts)} hosts from {spec}\n"
            f"  dashboard  http://{shown}:{server.http_port}/\n"
            f"  API        http://{shown}:{server.http_port}/api/v1/hosts\n"
            f"  metrics    http://{shown}:{server.http_port}/metrics\n"
            f"  TFTP       {tftp_host} port {server.tftp.port}\n"
            f"  releases   {data}\n"
            f"  admin token in {state.path / 'admin-token'} (for POST .../rearm)\n"
            f"  hosts reach it as {inventory.server.url}\n",
            flush=True,
        )
        print(dhcp_instructions(inventory), flush=True)

    serve_forever(server, ready)
    return EXIT_OK


def _progress(label: str) -> Callable[[int, int], None]:
    """A progress printer for long copies: a live line on a terminal, else every 10%."""
    last = [-1]

    def show(done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if sys.stderr.isatty():
            print(
                f"\r{label}: {done >> 20}/{total >> 20} MiB ({percent}%)",
                end="",
                file=sys.stderr,
                flush=True,
            )
        elif percent // 10 != last[0]:
            last[0] = percent // 10
            print(f"{label}: {done >> 20}/{total >> 20} MiB ({percent}%)", file=sys.stderr)

    return show


def cmd_import_iso(args: argparse.Namespace) -> int:
    """Copy kernel, initrd and RPM repo from a Photon ISO into the data folder for serving."""
    data = Path(args.data) if args.data else Path(args.state or ".photonkick") / "releases"
    result = import_iso(
        Path(args.iso), data, _progress("importing"), release=args.release, verify=args.verify
    )
    if sys.stderr.isatty():
        print(file=sys.stderr)
    action = f"copied {len(result.copied)} files" if result.changed else "already imported"
    print(
        f"Photon {result.release} from {args.iso} (volume {result.volume_id}): {action}; "
        f"{result.files} files, {result.total_bytes >> 20} MiB in {result.root}"
    )
    for link in result.skipped_symlinks:
        print(f"note: skipped symbolic link {link}", file=sys.stderr)
    return EXIT_OK


def cmd_iso(args: argparse.Namespace) -> int:
    """Write an unattended ISO for one host: a remastered full ISO, or a small seed ISO."""
    spec, inventory = _load(args)
    try:
        host = inventory.host(args.name)
    except KeyError:
        print(f"photonkick: no host {args.name!r} in {spec}", file=sys.stderr)
        return EXIT_BAD_INPUT
    build = _state(args, spec).build(host.name)
    kickstart = dumps(build_kickstart(host, inventory, build)).encode()
    out = Path(args.output)
    if args.seed_only:
        write_seed_iso(kickstart, out)
        print(
            f"wrote {out}: attach it as a second CD-ROM and boot the Photon ISO with "
            f"{seed_boot_param()}"
        )
        return EXIT_OK
    if not args.base:
        print("photonkick: iso needs --base PHOTON.iso, or --seed-only", file=sys.stderr)
        return EXIT_BAD_INPUT
    result = remaster_iso(Path(args.base), kickstart, out, progress=_progress("writing"))
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(
        f"wrote {result.path}: boots unattended ({', '.join(result.menus)}) with {result.ks_path}"
    )
    if result.hybrid_dropped:
        print(
            "note: the copy boots from a CD/DVD drive only (the base's USB hybrid boot "
            "record was not kept)",
            file=sys.stderr,
        )
    return EXIT_OK


def _fleet_parts(args: argparse.Namespace) -> tuple[Path, Inventory, StateDir, Timeline]:
    spec, inventory = _load(args)
    if inventory.vsphere is None:
        raise FleetError(f"{spec} has no vsphere section: say which ESXi host or vCenter to use")
    state = _state(args, spec)
    return spec, inventory, state, Timeline(state.path / "timeline.db")


def _connect(inventory: Inventory, state: StateDir) -> VmDriver:
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
        pin_dir=state.path / "pins",
        insecure=vs.insecure,
    )


def run_up(args: argparse.Namespace, *, rebuild: bool) -> int:
    """Shared body of `up` and `rebuild`."""
    spec, inventory, state, timeline = _fleet_parts(args)
    names = args.names
    driver = _connect(inventory, state)
    server = None
    wanted = [h for h in inventory.hosts if not names or h.name in names]
    # Every boot method reports back over HTTP, so a boot server must be there.
    if not running_server(inventory):
        data = Path(args.data) if args.data else state.path / "releases"
        server = BootServer(spec, inventory, state, data, listen_for(inventory))
        server.start()
        print(
            f"started a boot server for {inventory.server.url} (TFTP port {server.tftp.port})",
            file=sys.stderr,
        )
    progress = Progress([h.name for h in wanted])
    fleet = Fleet(inventory, state, timeline, driver, on_change=progress.update)
    options = UpOptions(parallel=args.parallel, timeout=args.timeout, rebuild=rebuild)
    try:
        runs = fleet.up(names, options)
    finally:
        if server is not None:
            server.stop()
        _close(driver)
    report = build_report(runs, timeline)
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
    ok = all(r.outcome in ("ready", "exists") for r in runs)
    return EXIT_OK if ok else EXIT_FAILED


def _close(driver: VmDriver) -> None:
    close = getattr(driver, "close", None)
    if close is not None:
        close()


def cmd_up(args: argparse.Namespace) -> int:
    """Create the spec's VMs on ESXi or vCenter, boot them and follow them to ready."""
    return run_up(args, rebuild=args.rebuild)


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Destroy and recreate hosts (same name and MAC, new tokens) and follow them to ready."""
    if not args.names:
        print("photonkick: rebuild needs host names", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run_up(args, rebuild=True)


def cmd_down(args: argparse.Namespace) -> int:
    """Power off and delete hosts' VMs (all hosts with --all)."""
    if not args.names and not args.all:
        print("photonkick: down needs host names, or --all", file=sys.stderr)
        return EXIT_BAD_INPUT
    _, inventory, state, timeline = _fleet_parts(args)
    driver = _connect(inventory, state)
    try:
        runs = Fleet(inventory, state, timeline, driver).down(args.names)
    finally:
        _close(driver)
    for run in runs:
        print(f"{run.name}: {run.outcome}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Show each host's VM (power, IP) and its last timeline."""
    _, inventory, state, timeline = _fleet_parts(args)
    driver = _connect(inventory, state) if not args.offline else None
    try:
        for host in inventory.hosts:
            build = state.build(host.name).build
            status = host_status(timeline, host, build)
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
            print(f"{host.name:<20} build {build:<3} {vm:<24} {phase:<12} ready {ttr}")
    finally:
        if driver is not None:
            _close(driver)
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """List each boot loader: where it was found, or how to install it."""
    cache = Path(args.state or ".photonkick") / "cache"
    report = loader_report(cache)
    width = max(len(s.name) for s in report)
    for status in report:
        where = str(status.path) if status.path else f"MISSING: {status.hint}"
        print(f"{status.name:<{width}}  {where}\n{'':<{width}}  {status.purpose}")
    return EXIT_OK if all(s.path for s in report) else EXIT_FAILED


def cmd_example(args: argparse.Namespace) -> int:
    """Print the bundled example spec, to start a spec of your own."""
    sys.stdout.write(example_spec().read_text())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every verb."""
    parser = argparse.ArgumentParser(
        prog="photonkick", description="Unattended VMware Photon OS installs from a host spec."
    )
    parser.add_argument(
        "--version", action="version", version=f"photonkick {metadata.version('photonkick')}"
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(
        name: str, func: Callable[[argparse.Namespace], int], spec: bool = True
    ) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=(func.__doc__ or "").strip().splitlines()[0])
        sub.set_defaults(func=func)
        if spec:
            sub.add_argument("spec", nargs="?", metavar="SPEC", help="the host spec (YAML)")
            sub.add_argument("--example", action="store_true", help="use the bundled example")
            sub.add_argument(
                "--state", metavar="DIR", help="state directory (default: .photonkick/ beside SPEC)"
            )
        return sub

    verb("check", cmd_check)
    verb("render", cmd_render).add_argument("--out", required=True, metavar="DIR")
    show = verb("show", cmd_show)
    show.add_argument("name", metavar="NAME")
    show.add_argument("--reveal", action="store_true", help="print secrets too")
    show.add_argument(
        "--guestinfo", action="store_true", help="print the base64 guestinfo.kickstart.data value"
    )
    serve = verb("serve", cmd_serve)
    serve.add_argument("--http", default="0.0.0.0:8080", metavar="ADDR:PORT")
    serve.add_argument(
        "--tftp",
        default="0.0.0.0:69",
        metavar="ADDR:PORT",
        help="falls back to a free high port when 69 cannot be bound",
    )
    serve.add_argument("--data", metavar="DIR", help="imported releases (default: STATE/releases)")
    imp = verb("import-iso", cmd_import_iso, spec=False)
    imp.add_argument("iso", metavar="PHOTON.iso")
    imp.add_argument("--data", metavar="DIR", help="default: .photonkick/releases")
    imp.add_argument("--state", metavar="DIR", help=argparse.SUPPRESS)
    imp.add_argument("--release", help="force the release (when the ISO does not tell)")
    imp.add_argument("--verify", action="store_true", help="re-hash every file and repair")
    iso = verb("iso", cmd_iso)
    iso.add_argument("name", metavar="NAME")
    iso.add_argument("-o", "--output", required=True, metavar="FILE.iso")
    kind = iso.add_mutually_exclusive_group(required=True)
    kind.add_argument("--base", metavar="PHOTON.iso", help="remaster this Photon ISO")
    kind.add_argument(
        "--seed-only",
        action="store_true",
        help="a small ISO with only /ks.json (for ks=/dev/sr1:/ks.json)",
    )
    for name, func in (("up", cmd_up), ("rebuild", cmd_rebuild)):
        sub = verb(name, func)
        sub.add_argument("names", nargs="*", metavar="NAME", help="hosts (default: all)")
        sub.add_argument("--parallel", type=int, default=4, metavar="N")
        sub.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS")
        sub.add_argument("--report", metavar="FILE.json")
        sub.add_argument("--data", metavar="DIR", help="imported releases for the boot server")
        if name == "up":
            sub.add_argument("--rebuild", action="store_true", help="replace existing VMs")
    down = verb("down", cmd_down)
    down.add_argument("names", nargs="*", metavar="NAME")
    down.add_argument("--all", action="store_true", help="every host of the spec")
    status = verb("status", cmd_status)
    status.add_argument("--offline", action="store_true", help="timelines only, no vSphere")
    verb("doctor", cmd_doctor, spec=False).add_argument("--state", metavar="DIR")
    verb("example", cmd_example, spec=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``photonkick`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb == "show" and args.spec and not args.example and args.name is None:
        parser.error("show needs SPEC and NAME")
    try:
        code: int = args.func(args)
        return code
    except SpecError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"photonkick: {len(exc.problems)} problem(s); nothing was changed", file=sys.stderr)
        return EXIT_BAD_INPUT
    except PhotonkickError as exc:
        print(f"photonkick: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED

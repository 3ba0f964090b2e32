"""The ``photonkick`` command: argument parsing, and errors turned into exit codes."""

from __future__ import annotations

import argparse
import base64
import ipaddress
import logging
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import NoReturn

from photonkick.kickstarts.artifacts import Artifact
from photonkick.kickstarts.errors import PhotonkickError, SpecError, UsageError
from photonkick.kickstarts.kickstart import build_kickstart, dumps
from photonkick.kickstarts.spec import DHCP_MODES
from photonkick.pxe.dhcp import dhcp_instructions
from photonkick.pxe.names import TFTP
from photonkick.pxe.tree import build_boot_tree
from photonkick.server.boot_server import BootServer, Listen, ListenError, serve_forever
from photonkick.server.cli_common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    find_host,
    load_spec,
    state_for,
)
from photonkick.server.cli_fleet import cmd_down, cmd_rebuild, cmd_status, cmd_up
from photonkick.server.cli_inventory import add_inventory_arguments, cmd_inventory
from photonkick.server.cli_iso import cmd_import_iso, cmd_iso, import_command
from photonkick.server.dhcp import attach_dhcp
from photonkick.server.dhcp_site import plan_dhcp, with_mode
from photonkick.server.example import (
    SECRET_NAME,
    SPEC_NAME,
    ExampleError,
    new_password,
    printed_example,
    write_example,
)
from photonkick.server.loaders import loader_files, loader_report
from photonkick.server.output import write_tree

INSTALLER_FROM = {"spec": "", "iso": " (from the imported ISO)", "assumed": " (assumed)"}


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a spec and print every problem at once."""
    spec, inventory = load_spec(args)
    name = "bundled example" if args.example else str(spec)
    print(
        f"{name}: {len(inventory.hosts)} hosts, Photon {inventory.photon.release}, "
        f"installer {inventory.photon.installer}{INSTALLER_FROM[inventory.photon.installer_from]}"
        ": OK\n"
    )
    print(dhcp_instructions(inventory))
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    """Write kickstarts, per-MAC boot configs and the loaders under OUT."""
    spec, inventory = load_spec(args)
    state = state_for(args, spec, inventory)
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
    """Print one host's kickstart (tokens redacted; --reveal: tokens and secrets embedded)."""
    spec, inventory = load_spec(args)
    host = find_host(inventory, args.name, spec)
    reveal = args.reveal or args.guestinfo
    build = state_for(args, spec, inventory).build(host.name)
    text = dumps(
        build_kickstart(host, inventory, build, redact=not reveal, embed_secrets=args.reveal)
    )
    if args.guestinfo:
        print(base64.b64encode(text.encode()).decode())
    else:
        sys.stdout.write(text)
    return EXIT_OK


_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


def listen_address(default_port: int) -> Callable[[str], tuple[str, int]]:
    """An argparse type for ``ADDR:PORT``, ``ADDR``, ``:PORT`` or ``[IPv6]:PORT``."""

    def parse(text: str) -> tuple[str, int]:
        host, port = text, str(default_port)
        if text.startswith("["):
            host, bracket, rest = text[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise argparse.ArgumentTypeError(f"{text!r}: write an IPv6 address as [ADDR]:PORT")
            port = rest[1:] if rest else port
        elif text.count(":") == 1:
            host, _, port = text.partition(":")
        if not port.isascii() or not port.isdigit() or int(port) > 65535:
            raise argparse.ArgumentTypeError(f"{text!r}: the port must be a number 0-65535")
        host = host or "0.0.0.0"
        if not _is_ip(host) and not _HOST_NAME.fullmatch(host):
            raise argparse.ArgumentTypeError(
                f"{text!r}: not an address (ADDR:PORT, [IPv6]:PORT or a host name)"
            )
        return host, int(port)

    return parse


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve kickstarts, boot configs and files over HTTP and TFTP; record host timelines."""
    spec, inventory = load_spec(args)
    inventory = with_mode(inventory, args.dhcp)
    state = state_for(args, spec, inventory, wait=False)  # booting never waits for a database
    if state.start_error is None:
        state.check_writable()  # before anything is served: callbacks must be storable
    dhcp_plan = plan_dhcp(inventory, state.path)  # before anything starts
    data = Path(args.data) if args.data else state.path / "releases"
    http_host, http_port = args.http
    tftp_host, tftp_port = args.tftp
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        server = BootServer(
            spec, inventory, state, data, Listen(http_host, http_port, tftp_host, tftp_port)
        )
    except ListenError as exc:
        raise exc.user_error() from None
    degraded = server.service.degraded_at_start()
    if degraded:
        logging.getLogger("photonkick.server").warning("%s", degraded)
    dhcp = attach_dhcp(server, dhcp_plan, inventory) if dhcp_plan else None

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
        if dhcp is not None:
            print(f"  DHCP       {dhcp.summary}\n", flush=True)
        else:
            print(dhcp_instructions(inventory), flush=True)
        kernel = data / inventory.photon.release / "isolinux" / "vmlinuz"
        if not kernel.is_file():
            print(
                f"warning: no imported Photon {inventory.photon.release} in {data} "
                f"(missing {kernel}): PXE hosts cannot load the installer; run "
                + import_command(args),
                file=sys.stderr,
                flush=True,
            )

    try:
        serve_forever(server, ready)
    finally:
        state.close()
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


def cmd_state(args: argparse.Namespace) -> int:
    """Manage the state store: migrate a state directory into a shared PostgreSQL database."""
    from photonkick.server.state_migrate import migrate_state

    moved = migrate_state(Path(args.source), args.target)
    print(f"migrated {args.source} into the database: {moved.summary()}")
    print("next: point every server at it with server.state in the spec or --state-url")
    return EXIT_OK


def cmd_example(args: argparse.Namespace) -> int:
    """Print the bundled example spec, or write it with its secret file (--out DIR)."""
    password = new_password()
    if args.out is None:
        sys.stdout.write(printed_example(password))
        return EXIT_OK
    try:
        spec, secret = write_example(Path(args.out), password)
    except ExampleError as exc:
        raise UsageError(f"{exc}; nothing was changed") from None
    print(
        f"wrote {spec} and {secret} (a random database password, mode 0600)\n"
        f"next: photonkick check {shlex.quote(str(spec))}"
    )
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit 2 (argparse would print the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every verb."""
    parser = _Parser(
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
            sub.add_argument(
                "--state-url",
                metavar="URL",
                help="shared state store postgresql://... (default: the spec's server.state)",
            )
        return sub

    verb("check", cmd_check)
    verb("render", cmd_render).add_argument("--out", required=True, metavar="DIR")
    show = verb("show", cmd_show)
    show.add_argument("name", metavar="NAME")
    show.add_argument(
        "--reveal", action="store_true", help="print tokens, and the secrets embedded"
    )
    show.add_argument(
        "--guestinfo", action="store_true", help="print the base64 guestinfo.kickstart.data value"
    )
    serve = verb("serve", cmd_serve)
    serve.add_argument(
        "--http", type=listen_address(8080), default=("0.0.0.0", 8080), metavar="ADDR:PORT"
    )
    serve.add_argument(
        "--tftp",
        type=listen_address(69),
        default=("0.0.0.0", 69),
        metavar="ADDR:PORT",
        help="falls back to a free high port when 69 cannot be bound",
    )
    serve.add_argument("--data", metavar="DIR", help="imported releases (default: STATE/releases)")
    serve.add_argument(
        "--dhcp",
        choices=DHCP_MODES,
        help="run dnsmasq: proxy (beside your DHCP server) or full (isolated lab); "
        "default: server.dhcp.mode, else off",
    )
    imp = verb("import-iso", cmd_import_iso)
    imp.add_argument("iso", metavar="PHOTON.iso")
    imp.add_argument(
        "--data",
        metavar="DIR",
        help="default: STATE/releases, where serve looks (STATE: .photonkick/ beside SPEC, "
        "or in the current folder without SPEC)",
    )
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
    iso.add_argument(
        "--embed-secrets",
        action="store_true",
        help="put the secrets in the kickstart, for installs where photonkick is unreachable",
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
    add_inventory_arguments(verb("inventory", cmd_inventory))
    verb("doctor", cmd_doctor, spec=False).add_argument("--state", metavar="DIR")
    state = verb("state", cmd_state, spec=False)
    state_verbs = state.add_subparsers(dest="state_verb", required=True, metavar="ACTION")
    migrate = state_verbs.add_parser(
        "migrate", help="copy a state directory's SQLite state into an empty PostgreSQL database"
    )
    migrate.add_argument("--from", dest="source", required=True, metavar="DIR")
    migrate.add_argument("--to", dest="target", required=True, metavar="URL")
    verb("example", cmd_example, spec=False).add_argument(
        "--out",
        metavar="DIR",
        help=f"write {SPEC_NAME} and its secret file {SECRET_NAME} into DIR instead of printing",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``photonkick`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except SpecError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"photonkick: {len(exc.problems)} problem(s); nothing was changed", file=sys.stderr)
        return EXIT_BAD_INPUT
    except UsageError as exc:
        print(f"photonkick: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except PhotonkickError as exc:
        print(f"photonkick: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED

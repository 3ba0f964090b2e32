"""The ``photonkick`` command: argument parsing, and errors turned into exit codes."""

from __future__ import annotations

import argparse
import base64
import sys
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
from photonkick.pxe.names import TFTP
from photonkick.pxe.tree import build_boot_tree
from photonkick.server.loaders import loader_files, loader_report
from photonkick.server.output import write_tree
from photonkick.server.state import StateDir

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


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
        return 130

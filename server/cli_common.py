"""Helpers shared by the command modules: exit codes, loading the spec, the state dir.

Also the console entry point, ``run()``: this module imports little at load time, so that
Ctrl-C while the rest of photonkick loads ends the command quietly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from photonkick.kickstarts.errors import UsageError

if TYPE_CHECKING:
    import argparse

    from photonkick.kickstarts.spec import Host, Inventory
    from photonkick.server.state_dir import StateDir

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class HostNotFound(UsageError):
    """The command line names a host the spec does not have."""


def run(argv: Sequence[str] | None = None) -> int:
    """The ``photonkick`` command: loads the CLI and runs it; Ctrl-C at any moment, even
    while the modules load, exits with 130 and one line instead of a traceback."""
    try:
        from photonkick.server.cli import main

        return main(argv)
    except KeyboardInterrupt:
        print("photonkick: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def example_spec() -> Path:
    """The bundled example spec (a small lab of four hosts)."""
    from importlib import resources

    return Path(str(resources.files("photonkick.kickstarts") / "examples" / "lab.yaml"))


def spec_path(args: argparse.Namespace) -> Path:
    """The spec the command line names (``--example``: the bundled one); UsageError if none."""
    if args.example:
        return example_spec()
    if args.spec is None:
        raise UsageError("give a SPEC file, or --example for the bundled one")
    return Path(args.spec)


def releases_dir(args: argparse.Namespace, spec: Path) -> Path:
    """Where imported releases are: ``--data``, else ``releases/`` in the state directory."""
    if getattr(args, "data", None):
        return Path(args.data)
    return state_path(args, spec) / "releases"


def state_path(args: argparse.Namespace, spec: Path) -> Path:
    """The state directory's path (``--state``, else ``.photonkick/`` beside the spec)."""
    if args.state:
        return Path(args.state)
    return (Path.cwd() if args.example else spec.parent) / ".photonkick"


def state_url(args: argparse.Namespace, inventory: Inventory | None) -> str | None:
    """The shared state store: ``--state-url``, else the spec's ``server.state``, else None."""
    url: str | None = getattr(args, "state_url", None)
    if url:
        return url
    if inventory is not None and inventory.server.state is not None:
        return inventory.server.state.reveal()
    return None


def state_for(
    args: argparse.Namespace, spec: Path, inventory: Inventory | None = None, *, wait: bool = True
) -> StateDir:
    """The state: the state directory, and the shared store when one is configured
    (``wait``: see StateDir)."""
    from photonkick.server.state_dir import StateDir

    return StateDir(state_path(args, spec), state_url(args, inventory), wait=wait)


def load_spec(args: argparse.Namespace) -> tuple[Path, Inventory]:
    from photonkick.kickstarts.inventory import load_inventory
    from photonkick.kickstarts.warnings import inventory_warnings
    from photonkick.server.release_installer import imported_installers

    spec = spec_path(args)
    inventory = load_inventory(spec, imported=imported_installers(releases_dir(args, spec)))
    for warning in inventory_warnings(inventory):
        print(f"warning: {warning}", file=sys.stderr)
    return spec, inventory


def progress_printer(label: str) -> Callable[[int, int], None]:
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


def find_host(inventory: Inventory, name: str, spec: Path) -> Host:
    """The named host; HostNotFound, naming the hosts there are, if the spec has none such."""
    try:
        return inventory.host(name)
    except KeyError:
        names = ", ".join(h.name for h in inventory.hosts)
        raise HostNotFound(f"no host {name!r} in {spec} (hosts: {names})") from None

"""The ISO commands: `import-iso` and `iso`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from photonkick.kickstarts.errors import UsageError
from photonkick.kickstarts.host_secrets import secret_items
from photonkick.kickstarts.kickstart import build_kickstart, dumps
from photonkick.pxe.isoboot import seed_boot_param
from photonkick.server.cli_common import (
    EXIT_OK,
    find_host,
    load_spec,
    progress_printer,
    spec_path,
    state_for,
)
from photonkick.server.iso_build import remaster_iso, write_seed_iso
from photonkick.server.iso_import import import_iso
from photonkick.server.release_installer import record_installer


def releases_dir(args: argparse.Namespace) -> Path:
    """Where imported releases live: ``--data``, else ``STATE/releases``.

    STATE is found as for every command that reads a spec (``--state``, else
    ``.photonkick/`` beside SPEC); without a spec, in the current folder.
    """
    if args.data:
        return Path(args.data)
    if args.spec is None and not args.example:
        return Path(args.state or ".photonkick") / "releases"
    state = state_for(args, spec_path(args))
    state.close()
    return state.path / "releases"


def import_command(args: argparse.Namespace) -> str:
    """The ``import-iso`` command that fills the releases folder this command line uses."""
    if args.data:
        where = ["--data", args.data]
    elif args.state:
        where = ["--state", args.state]
    elif args.example:
        where = ["--example"]
    else:
        where = [args.spec]
    return shlex.join(["photonkick", "import-iso", *where, "PHOTON.iso"])


def cmd_import_iso(args: argparse.Namespace) -> int:
    """Copy kernel, initrd and RPM repo from a Photon ISO into the data folder for serving."""
    if args.spec is not None and not args.example:
        problem = _not_a_spec(Path(args.spec))
        if problem:
            raise UsageError(f"{problem} (photonkick import-iso [SPEC] PHOTON.iso)")
    data = releases_dir(args)
    result = import_iso(
        Path(args.iso),
        data,
        progress_printer("importing"),
        release=args.release,
        verify=args.verify,
    )
    if sys.stderr.isatty():
        print(file=sys.stderr)
    action = f"copied {len(result.copied)} files" if result.changed else "already imported"
    print(
        f"Photon {result.release} from {args.iso} (volume {result.volume_id}): {action}; "
        f"{result.files} files, {result.total_bytes >> 20} MiB in {result.root}"
    )
    installer = record_installer(result.root)
    if installer.found is not None:
        print(f"photon-os-installer {installer.found} (read from its initrd)")
    else:
        print(f"warning: installer version unknown: {installer.where}", file=sys.stderr)
    for link in result.skipped_symlinks:
        print(f"note: skipped symbolic link {link}", file=sys.stderr)
    return EXIT_OK


def _not_a_spec(spec: Path) -> str | None:
    if spec.suffix.lower() == ".iso":
        return f"{spec} is an ISO, not a spec: give SPEC first"
    if not spec.is_file():
        return f"{spec}: no such spec file"
    return None


def cmd_iso(args: argparse.Namespace) -> int:
    """Write an unattended ISO for one host: a remastered full ISO, or a small seed ISO."""
    spec, inventory = load_spec(args)
    host = find_host(inventory, args.name, spec)
    build = state_for(args, spec, inventory).build(host.name)
    embed = args.embed_secrets
    kickstart = dumps(build_kickstart(host, inventory, build, embed_secrets=embed)).encode()
    if embed and secret_items(host, build.secret):
        print(
            f"warning: {host.name}'s secrets are embedded in the kickstart; the installer "
            "keeps a world-readable copy of it on the installed disk "
            "(/var/log/poi/manifest.json.gz) until the host's first boot deletes it",
            file=sys.stderr,
        )
    out = Path(args.output)
    if args.seed_only:
        write_seed_iso(kickstart, out)
        print(
            f"wrote {out}: attach it as a second CD-ROM and boot the Photon ISO with "
            f"{seed_boot_param()}"
        )
        return EXIT_OK
    result = remaster_iso(Path(args.base), kickstart, out, progress=progress_printer("writing"))
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

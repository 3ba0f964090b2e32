"""The ISO commands: `import-iso` and `iso`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from photonkick.kickstarts.host_secrets import secret_items
from photonkick.kickstarts.kickstart import build_kickstart, dumps
from photonkick.pxe.isoboot import seed_boot_param
from photonkick.server.cli_common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    find_host,
    load_spec,
    progress_printer,
    state_for,
)
from photonkick.server.iso_build import remaster_iso, write_seed_iso
from photonkick.server.iso_import import import_iso
from photonkick.server.release_installer import record_installer


def cmd_import_iso(args: argparse.Namespace) -> int:
    """Copy kernel, initrd and RPM repo from a Photon ISO into the data folder for serving."""
    data = Path(args.data) if args.data else Path(args.state or ".photonkick") / "releases"
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


def cmd_iso(args: argparse.Namespace) -> int:
    """Write an unattended ISO for one host: a remastered full ISO, or a small seed ISO."""
    spec, inventory = load_spec(args)
    host = find_host(inventory, args.name, spec)
    if host is None:
        return EXIT_BAD_INPUT
    build = state_for(args, spec).build(host.name)
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
    if not args.base:
        print("photonkick: iso needs --base PHOTON.iso, or --seed-only", file=sys.stderr)
        return EXIT_BAD_INPUT
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

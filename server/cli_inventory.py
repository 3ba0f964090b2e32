"""`photonkick inventory`: the spec's hosts for Ansible, static or as a dynamic inventory."""

from __future__ import annotations

import argparse
import json
import os
import sys

import yaml

from photonkick.server.ansible_inventory import (
    host_vars,
    last_seen_ips,
    script_list,
    static_inventory,
)
from photonkick.server.cli_common import (
    EXIT_OK,
    find_host,
    load_spec,
    state_path,
    state_url,
)
from photonkick.server.state_dir import StateDir

SPEC_VARIABLE = "PHOTONKICK_SPEC"
"""Where the spec is when Ansible runs the command as an inventory script (no SPEC argument)."""


def cmd_inventory(args: argparse.Namespace) -> int:
    """Print an Ansible inventory of the spec's hosts (also a dynamic inventory script)."""
    if args.spec is None and not args.example and os.environ.get(SPEC_VARIABLE):
        args.spec = os.environ[SPEC_VARIABLE]
    spec, inventory = load_spec(args)
    names = [h.name for h in inventory.hosts]
    url = state_url(args, inventory)
    if url:
        state = StateDir(state_path(args, spec), url)
        try:
            seen = last_seen_ips(state.store("timeline"), names)
        finally:
            state.close()
    else:
        seen = last_seen_ips(state_path(args, spec) / "timeline.db", names)
    if args.host is not None:
        host = find_host(inventory, args.host, spec)
        print(json.dumps(host_vars(host, seen.get(host.name)), indent=2, sort_keys=True))
    elif args.list:
        print(json.dumps(script_list(inventory, seen), indent=2, sort_keys=True))
    elif args.json:
        print(json.dumps(static_inventory(inventory, seen), indent=2))
    else:
        sys.stdout.write(yaml.safe_dump(static_inventory(inventory, seen), sort_keys=False))
    return EXIT_OK


def add_inventory_arguments(parser: argparse.ArgumentParser) -> None:
    """The inventory verb's options (SPEC may come from $PHOTONKICK_SPEC)."""
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="JSON instead of YAML")
    shape.add_argument("--list", action="store_true", help="dynamic inventory script: all hosts")
    shape.add_argument("--host", metavar="NAME", help="dynamic inventory script: one host's vars")

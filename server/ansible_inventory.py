"""The spec's hosts as an Ansible inventory: groups from profiles, addresses from the spec or
from what photonkick last saw of each host.

Two shapes: the static inventory Ansible's ``yaml`` plugin reads (``all: {hosts, children}``,
printed as YAML or JSON), and the JSON of a dynamic inventory script (``--list``: groups and
``_meta.hostvars``; ``--host NAME``: that host's variables).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from photonkick.kickstarts.spec import Host, Inventory
from photonkick.server.store import Store
from photonkick.server.timeline import Timeline

__all__ = ["group_name", "host_vars", "last_seen_ips", "script_list", "static_inventory"]

HostVars = dict[str, Any]
_INVALID_GROUP_CHARS = re.compile(r"[^A-Za-z0-9_]")


def group_name(profile: str) -> str:
    """An Ansible group name for a profile: letters, digits and ``_`` (``web-eu`` -> ``web_eu``).

    Ansible warns about any other character in group names and may refuse them later.
    """
    name = _INVALID_GROUP_CHARS.sub("_", profile)
    if name in ("all", "ungrouped"):  # Ansible's own groups
        return f"{name}_profile"
    return f"_{name}" if name[:1].isdigit() else name


def last_seen_ips(timeline_db: Path | Store, hosts: list[str]) -> dict[str, str]:
    """Each host's most recent address in its timeline (a SQLite file, or the shared store):
    a request it made, or VMware Tools' report of the guest IP; hosts never seen are left
    out."""
    if isinstance(timeline_db, Path) and not timeline_db.is_file():
        return {}
    timeline = Timeline(timeline_db)
    try:
        seen: dict[str, str] = {}
        for name in hosts:
            for event in timeline.events(name):
                if event.kind == "guest_ip" and event.detail:
                    seen[name] = event.detail
                elif event.client:
                    seen[name] = event.client
        return seen
    finally:
        timeline.close()


def host_vars(host: Host, seen_ip: str | None) -> HostVars:
    """Variables for one host: where to reach it, as whom, and what photonkick knows of it."""
    out: HostVars = {}
    if host.network is not None:
        out["ansible_host"] = str(host.network.address.ip)
    elif seen_ip:
        out["ansible_host"] = seen_ip
    user = next((u for u in host.users if u.sudo and u.ssh_keys), None)
    user = user or next((u for u in host.users if u.ssh_keys), None)
    if user is not None:
        out["ansible_user"] = user.name
        if user.sudo:
            out["ansible_become"] = True
    out["photonkick_mac"] = host.mac
    out["photonkick_boot"] = host.boot
    out["photonkick_profiles"] = list(host.profiles)
    return out


def _groups(inventory: Inventory) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for host in inventory.hosts:
        for profile in host.profiles:
            members = groups.setdefault(group_name(profile), [])
            if host.name not in members:
                members.append(host.name)
    return groups


def static_inventory(inventory: Inventory, seen: dict[str, str]) -> dict[str, Any]:
    """The YAML-plugin form: every host with its variables under ``all``, groups as children."""
    all_group: dict[str, Any] = {
        "hosts": {h.name: host_vars(h, seen.get(h.name)) for h in inventory.hosts}
    }
    groups = _groups(inventory)
    if groups:
        all_group["children"] = {
            group: {"hosts": {name: None for name in members}}
            for group, members in sorted(groups.items())
        }
    return {"all": all_group}


def script_list(inventory: Inventory, seen: dict[str, str]) -> dict[str, Any]:
    """What a dynamic inventory script prints for ``--list``."""
    groups = _groups(inventory)
    grouped = {name for members in groups.values() for name in members}
    out: dict[str, Any] = {
        "_meta": {"hostvars": {h.name: host_vars(h, seen.get(h.name)) for h in inventory.hosts}},
        "all": {"children": ["ungrouped", *sorted(groups)]},
        "ungrouped": {"hosts": [h.name for h in inventory.hosts if h.name not in grouped]},
    }
    for group, members in sorted(groups.items()):
        out[group] = {"hosts": members}
    return out

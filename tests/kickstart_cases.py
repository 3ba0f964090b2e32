"""Kickstarts that cover what a spec can ask for: every partition form, static network, each
kernel flavor, raw installer keys, users, registries, containers and updates."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from conftest import EXAMPLE, FIXED_SECRET, REPO

from photonkick.kickstarts.installer import LINUX_FLAVORS
from photonkick.kickstarts.inventory import inventory_from_text, load_inventory
from photonkick.kickstarts.kickstart import BuildInfo, build_kickstart
from photonkick.kickstarts.spec import Host, Inventory, Photon

BUILD = BuildInfo(1, FIXED_SECRET)
ENVIRON = {"OPS_PW": "correct horse", "REG_PW": "reg-secret", "APP_TOKEN": "app-secret"}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKksNuZqJe6Z/4Yvqo6HmHvmx80Tw+5mHEAKRbDx47Ey ops@x"
HASH = "$6$salt$yD33ldVxo/B9HaT4VRMBT5e6hN/0V2KTzXNm1j4rbjOH3FtYw3GGWMhcHBrFdV/xOBJ5avjjM3W2Wco3"

PARTITION_FORMS: dict[str, list[dict[str, Any]]] = {
    "part-root": [{"mountpoint": "/", "size": 0}],
    "part-boot-swap": [
        {"mountpoint": "/", "size": 0, "filesystem": "ext4"},
        {"mountpoint": "/boot", "size": 512, "filesystem": "ext4"},
        {"size": 2048, "filesystem": "swap"},
    ],
    "part-percent": [
        {"mountpoint": "/", "sizepercent": 60, "filesystem": "xfs"},
        {"mountpoint": "/var", "sizepercent": 30, "filesystem": "btrfs"},
    ],
    "part-lvm": [
        {"mountpoint": "/boot", "size": 512},
        {"mountpoint": "/", "size": 0, "lvm": {"vg_name": "vg0", "lv_name": "root"}},
        {
            "mountpoint": "/var/lib/docker",
            "size": 8192,
            "filesystem": "xfs",
            "lvm": {"vg_name": "vg0", "lv_name": "docker"},
            "fs_options": "noatime",
        },
    ],
    "part-efi-first": [
        {"mountpoint": "/boot/efi", "size": 128, "filesystem": "vfat"},
        {"mountpoint": "/", "size": 0},
    ],
}


@dataclass(frozen=True)
class Case:
    """One kickstart and the host it was built for."""

    name: str
    kickstart: dict[str, Any]
    host: Host


def _hosts(installer: str) -> list[dict[str, Any]]:
    hosts: list[dict[str, Any]] = [{"name": "part-default"}]
    hosts += [{"name": name, "partitions": parts} for name, parts in PARTITION_FORMS.items()]
    hosts += [
        {"name": "bios", "firmware": "bios", "partitions": PARTITION_FORMS["part-boot-swap"]},
        {
            "name": "net-static",
            "network": {
                "address": "192.0.2.30/24",
                "gateway": "192.0.2.1",
                "dns": ["192.0.2.1", "192.0.2.2"],
                "search": ["lab.example"],
            },
        },
        {"name": "net-static-iso", "boot": "iso", "network": {"address": "192.0.2.31/24"}},
        {"name": "no-docker", "docker": False, "packages": ["minimal", "openssh-server"]},
        {
            "name": "full",
            "update": True,
            "users": [
                {"name": "ops", "sudo": True, "ssh_keys": [KEY], "groups": ["docker"]},
                {"name": "dev", "sudo": True, "password": {"env": "OPS_PW"}},
                {"name": "audit", "password_hash": HASH},
            ],
            "root": {"allow_login": True, "password_hash": HASH},
            "registries": [
                {"server": "reg.example:5000", "username": "bot", "password": {"env": "REG_PW"}}
            ],
            "containers": [
                {
                    "name": "app",
                    "image": "reg.example:5000/app:1",
                    "ports": ["8080:80", "127.0.0.1:9000:9000/udp"],
                    "volumes": ["/srv/app:/data:ro", "cache:/cache"],
                    "env": {"MODE": "prod", "TOKEN": {"env": "APP_TOKEN"}},
                    "command": "serve --port 80",
                }
            ],
            "postinstall": ["echo extra >> /etc/motd"],
        },
    ]
    hosts += [{"name": f"flavor-{f}", "linux_flavor": f} for f in LINUX_FLAVORS]
    raw: dict[str, Any] = {"additional_packages": ["vim"], "log_level": "debug"}
    if installer != "2.3":
        raw["disks"] = {"data": {"device": "/dev/sdb"}}
        raw["partitions"] = [
            {"mountpoint": "/", "size": 0},
            {"mountpoint": "/data", "size": 0, "disk_id": "data"},
        ]
        raw["packages_x86_64"] = ["htop"]
        hosts.append({"name": "guestinfo", "boot": "guestinfo"})
    hosts.append({"name": "raw-keys", "kickstart": raw})
    for i, host in enumerate(hosts):
        host.setdefault("mac", f"00:50:56:00:40:{i:02x}")
    return hosts


def generated_inventory(installer: str) -> Inventory:
    """A spec with every form above, checked by photonkick for that installer version."""
    spec = {
        "photon": {"release": "5.0", "installer": installer},
        "server": {"url": "https://pk.example", "boot_url": "http://192.0.2.1:8080"},
        "hosts": _hosts(installer),
    }
    # JSON is YAML: the spec goes through photonkick's own loader and checks.
    return inventory_from_text(json.dumps(spec), REPO / "tests" / "generated.yaml", ENVIRON)


def example_inventory(installer: str) -> Inventory:
    """The bundled example spec, for the given installer version."""
    inv = load_inventory(EXAMPLE, {})
    photon = Photon(inv.photon.release, installer)
    return Inventory(inv.source, photon, inv.server, inv.hosts, inv.templates, inv.vsphere)


def cases(installer: str) -> list[Case]:
    """Every kickstart to run through that installer version."""
    out = []
    for prefix, inv in (
        ("example", example_inventory(installer)),
        ("generated", generated_inventory(installer)),
    ):
        for host in inv.hosts:
            out.append(Case(f"{prefix}/{host.name}", build_kickstart(host, inv, BUILD), host))
    example = load_inventory(EXAMPLE, {})
    if installer == example.photon.installer:
        for path in sorted((REPO / "tests" / "golden" / "example").glob("*.json")):
            host = example.host(path.stem)
            out.append(Case(f"golden/{path.stem}", json.loads(path.read_text()), host))
    return out

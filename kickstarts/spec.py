"""The checked, normalized host spec: frozen dataclasses, built only by ``inventory.load``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from photonkick.kickstarts.errors import Location
from photonkick.kickstarts.hooks import Webhook
from photonkick.kickstarts.secrets import Secret

DEFAULT_PACKAGES = ("minimal", "linux-esx", "initramfs", "docker", "sudo", "curl")
"""A minimal Photon host with docker, sudo for users and curl for the callbacks."""

Firmware = Literal["efi", "bios"]
FIRMWARES: tuple[Firmware, ...] = get_args(Firmware)
BootMode = Literal["pxe", "http", "iso", "guestinfo"]
"""How the installer starts: network boot (PXE, or the VM's own UEFI HTTP boot), the ISO alone,
or the ISO plus a guestinfo kickstart."""
BOOT_MODES: tuple[BootMode, ...] = get_args(BootMode)
NETWORK_BOOTS: tuple[BootMode, ...] = ("pxe", "http")
"""Boot modes that load the installer over the network, from the host's per-MAC config."""
BootLoader = Literal["auto", "ipxe", "grub", "pxelinux"]
"""The loader DHCP hands a PXE host: ``auto`` chooses by client type (iPXE, UEFI x64, BIOS)."""
BOOT_LOADERS: tuple[BootLoader, ...] = get_args(BootLoader)


@dataclass(frozen=True)
class StaticNetwork:
    """A fixed IPv4 address on the host's first NIC."""

    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None
    dns: tuple[ipaddress.IPv4Address, ...] = ()
    search: tuple[str, ...] = ()


@dataclass(frozen=True)
class Partition:
    """One partition in the installer's own form (sizes in MiB; 0 = fill the disk)."""

    mountpoint: str | None
    filesystem: str
    size: int | None = None
    sizepercent: int | None = None
    lvm: tuple[str, str] | None = None
    fs_options: str | None = None


@dataclass(frozen=True)
class User:
    """A login user created by the postinstall script."""

    name: str
    groups: tuple[str, ...] = ()
    ssh_keys: tuple[str, ...] = ()
    password_hash: Secret | None = None
    password: Secret | None = None
    sudo: bool = False
    shell: str = "/bin/bash"


@dataclass(frozen=True)
class Root:
    """Root's login policy: locked unless allow_login is set together with a password hash."""

    allow_login: bool = False
    password_hash: Secret | None = None


@dataclass(frozen=True)
class Registry:
    """A container registry to log in to before pulling."""

    server: str
    username: str
    password: Secret | str


@dataclass(frozen=True)
class Container:
    """A container pulled and started at first boot, kept running by systemd."""

    name: str
    image: str
    ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    env: tuple[tuple[str, str | Secret], ...] = ()
    restart: str = "unless-stopped"
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class VmSize:
    """The ESXi VM that holds the host."""

    cpus: int = 2
    memory_mb: int = 2048
    disk_gb: int = 40
    network: str | None = None
    datastore: str | None = None


@dataclass(frozen=True)
class Host:
    """One machine, after defaults and profiles were merged into it."""

    name: str
    mac: str | None
    profiles: tuple[str, ...] = ()
    firmware: Firmware = "efi"
    boot: BootMode = "pxe"
    loader: BootLoader = "auto"
    disk: str = "/dev/sda"
    partitions: tuple[Partition, ...] = ()
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    linux_flavor: str = "linux-esx"
    network: StaticNetwork | None = None
    users: tuple[User, ...] = ()
    root: Root = field(default_factory=Root)
    containers: tuple[Container, ...] = ()
    registries: tuple[Registry, ...] = ()
    docker: bool = False
    update: bool = False
    vm: VmSize = field(default_factory=VmSize)
    postinstall: tuple[str, ...] = ()
    kickstart: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Photon:
    """The Photon release and the installer version inside the user's ISO."""

    release: str = "5.0"
    installer: str = "2.7"
    installer_from: str = "spec"
    """Where ``installer`` came from: ``spec``, ``iso`` (auto, from the imported initrd) or
    ``assumed`` (auto with no ISO of the release imported yet)."""


DHCP_MODES = ("off", "proxy", "full")
"""Managed DHCP: none, proxy-DHCP (boot answers only) or a full DHCP server on a lab network."""


@dataclass(frozen=True)
class ManagedDhcp:
    """``server.dhcp``: whether `photonkick serve` runs dnsmasq, and how.

    ``at`` and ``range_at`` locate the settings in the spec, for problems that only the
    serving machine can find (an interface that is not there, a range outside its subnet).
    """

    mode: str = "off"
    interface: str | None = None
    range: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None = None
    at: Location | None = field(default=None, compare=False)
    range_at: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ServerUrls:
    """How installers and installed hosts reach photonkick."""

    url: str
    repo_url: str | None = None
    boot_url: str | None = None
    kickstart_after_install: bool = False
    bind_kickstart_to_boot_ip: bool = False
    install_log_timeout: int = 300
    """Seconds a shipped installer log may stay silent before its build is failed."""
    webhooks: tuple[Webhook, ...] = ()
    state: Secret | None = None
    """The shared state store (``postgresql://...``); None keeps state in the state directory."""
    dhcp: ManagedDhcp = field(default_factory=ManagedDhcp)

    @property
    def boot_base(self) -> str:
        """Where loaders fetch kernel, initrd and iPXE scripts (always plain http)."""
        return self.boot_url or self.url


@dataclass(frozen=True)
class Vsphere:
    """The ESXi host or vCenter that holds the VMs, and how to trust it."""

    host: str
    user: str
    password: Secret
    port: int = 443
    datacenter: str | None = None
    cluster: str | None = None
    resource_pool: str | None = None
    folder: str | None = None
    datastore: str | None = None
    network: str | None = None
    ca_file: Path | None = None
    insecure: bool = False
    iso: Path | None = None
    iso_folder: str = "photonkick"


@dataclass(frozen=True)
class Inventory:
    """A whole spec file: target release, server address and the hosts."""

    source: Path
    photon: Photon
    server: ServerUrls
    hosts: tuple[Host, ...]
    templates: Path | None = None
    vsphere: Vsphere | None = None

    def host(self, name: str) -> Host:
        """The host called ``name``; KeyError when there is none."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

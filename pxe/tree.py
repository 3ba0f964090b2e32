"""The boot tree: every file the loaders and installers fetch, built in memory.

``render`` writes it, the HTTP server serves its ``http/`` part and the TFTP server its
``tftp/`` part, so what is tested is exactly what is served.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import PurePosixPath

from photonkick.kickstarts.artifacts import Artifact, kickstart_tree
from photonkick.kickstarts.kickstart import BuildInfo
from photonkick.kickstarts.spec import NETWORK_BOOTS, Host, Inventory
from photonkick.pxe.bootspec import BootSpec, install_bootspec
from photonkick.pxe.names import (
    HTTP,
    IPXE_CHAIN,
    TFTP,
    grub_config,
    grub_http_path,
    ipxe_script,
    pxelinux_config,
)
from photonkick.templates import render

UNKNOWN = "no install is planned for this machine"
INSTALLED = "this install has ended (netboot-once; rearm to install again)"
UNREADABLE = "the state database cannot be read: whether this install has ended is unknown"


class BootFormat(StrEnum):
    """The three loader families photonkick writes a per-MAC config for."""

    PXELINUX = "pxelinux"
    GRUB = "grub"
    IPXE = "ipxe"

    def path(self, mac: str) -> PurePosixPath:
        """Where this loader looks for the host's config in the tree."""
        if self is BootFormat.PXELINUX:
            return TFTP / pxelinux_config(mac)
        if self is BootFormat.GRUB:
            return TFTP / grub_config(mac)
        return HTTP / ipxe_script(mac)

    def render_install(self, host: Host, inventory: Inventory, build: int, boot: BootSpec) -> str:
        """The config that starts the installer."""
        return render(
            f"pxe/{self.value}-install.{self._suffix}.j2",
            inventory.templates,
            host=host,
            release=inventory.photon.release,
            build=build,
            boot=boot,
            kernel=grub_http_path(boot.kernel),
            initrd=grub_http_path(boot.initrd),
        )

    def render_local(self, reason: str, inventory: Inventory) -> str:
        """The config that boots the local disk."""
        return render(
            f"pxe/{self.value}-local.{self._suffix}.j2", inventory.templates, reason=reason
        )

    @property
    def _suffix(self) -> str:
        return "ipxe" if self is BootFormat.IPXE else "cfg"


def host_boot_files(
    host: Host, inventory: Inventory, build: BuildInfo, armed: bool
) -> dict[PurePosixPath, Artifact]:
    """The host's pxelinux, GRUB and iPXE configs: an install when armed, else local boot."""
    if host.mac is None or host.boot not in NETWORK_BOOTS:
        return {}
    files = {}
    if armed:
        boot = install_bootspec(host, inventory, build.token(host.name))
        for fmt in BootFormat:
            text = fmt.render_install(host, inventory, build.build, boot)
            files[fmt.path(host.mac)] = Artifact(text.encode())
    else:
        for fmt in BootFormat:
            files[fmt.path(host.mac)] = Artifact(fmt.render_local(INSTALLED, inventory).encode())
    return files


def fallback_files(inventory: Inventory) -> dict[PurePosixPath, Artifact]:
    """What a machine with no config of its own gets: local boot, and the iPXE chain."""
    return {
        TFTP / "pxelinux.cfg" / "default": Artifact(
            BootFormat.PXELINUX.render_local(UNKNOWN, inventory).encode()
        ),
        TFTP / "grub" / "grub.cfg": Artifact(
            BootFormat.GRUB.render_local(UNKNOWN, inventory).encode()
        ),
        HTTP / IPXE_CHAIN: Artifact(
            render(
                "pxe/ipxe-chain.ipxe.j2", inventory.templates, base_url=inventory.server.boot_base
            ).encode()
        ),
    }


def build_boot_tree(
    inventory: Inventory,
    build_for: Callable[[str], BuildInfo],
    armed: Callable[[str], bool] = lambda name: True,
) -> dict[PurePosixPath, Artifact]:
    """Kickstarts, per-MAC configs for every PXE host, and the fallbacks."""
    tree = kickstart_tree(inventory, build_for)
    tree.update(fallback_files(inventory))
    for host in inventory.hosts:
        tree.update(host_boot_files(host, inventory, build_for(host.name), armed(host.name)))
    return tree

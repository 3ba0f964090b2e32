"""Every name a loader asks for and every URL photonkick serves: one function each."""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlsplit

from photonkick.kickstarts.spec import Inventory

TFTP = PurePosixPath("tftp")
HTTP = PurePosixPath("http")
GRUB_PREFIX = "grub"
"""The folder (TFTP root relative) the network GRUB image has as its prefix."""


def mac_dashes(mac: str) -> str:
    """aa:bb:cc:dd:ee:ff -> aa-bb-cc-dd-ee-ff (lower case, as the loaders request)."""
    return mac.lower().replace(":", "-")


def pxelinux_config(mac: str) -> PurePosixPath:
    """pxelinux asks for ``pxelinux.cfg/01-<mac>`` (01 = Ethernet), then ``default``."""
    return PurePosixPath("pxelinux.cfg") / f"01-{mac_dashes(mac)}"


def grub_config(mac: str) -> PurePosixPath:
    """Network GRUB asks for ``<prefix>/grub.cfg-01-<mac>`` before ``<prefix>/grub.cfg``."""
    return PurePosixPath(GRUB_PREFIX) / f"grub.cfg-01-{mac_dashes(mac)}"


def ipxe_script(mac: str) -> PurePosixPath:
    """The per-host iPXE script, chained from ``boot.ipxe`` with ``${mac:hexhyp}``."""
    return PurePosixPath("ipxe") / f"{mac_dashes(mac)}.ipxe"


IPXE_CHAIN = PurePosixPath("ipxe") / "boot.ipxe"
HTTP_LOADERS = ("snponly.efi", "ipxe.efi")
"""UEFI iPXE loaders also served over HTTP (``ipxe/<name>``), for UEFI HTTP boot."""
UEFI_HTTP_LOADER = PurePosixPath("ipxe") / "snponly.efi"
"""What UEFI HTTP boot loads: iPXE on the firmware's NIC driver, which chains IPXE_CHAIN."""


def release_base(inventory: Inventory) -> str:
    """Base URL of the imported release: ``<url>/releases/<release>``."""
    return f"{inventory.server.boot_base}/releases/{inventory.photon.release}"


def kernel_url(inventory: Inventory) -> str:
    """The installer kernel over HTTP."""
    return f"{release_base(inventory)}/isolinux/vmlinuz"


def initrd_url(inventory: Inventory) -> str:
    """The installer initrd over HTTP."""
    return f"{release_base(inventory)}/isolinux/initrd.img"


def repo_url(inventory: Inventory) -> str:
    """The RPM repository for ``repos=``: server.repo_url, or the imported ISO's RPMS/."""
    return inventory.server.repo_url or f"{release_base(inventory)}/RPMS"


def grub_http_path(url: str) -> str:
    """A URL in GRUB's device syntax: ``(http,host:port)/path``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port and parts.port != 80:
        host += f":{parts.port}"
    return f"(http,{host}){parts.path}"

"""Boot loader binaries from Debian packages: find them, and build a network GRUB."""

from __future__ import annotations

import hashlib
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from photonkick.kickstarts.errors import PhotonkickError
from photonkick.pxe.names import GRUB_PREFIX

GRUB_EFI_MODULES = Path("/usr/lib/grub/x86_64-efi")
GRUB_MODULES = (
    "efinet tftp http net normal linux configfile echo test efi_gop efi_uga all_video "
    "regexp part_gpt part_msdos fat ext2 chain sleep search search_fs_file".split()
)


@dataclass(frozen=True)
class Loader:
    """A loader file served from the TFTP root."""

    name: str
    purpose: str
    candidates: tuple[Path, ...]
    package: str

    def find(self) -> Path | None:
        """The first candidate that exists."""
        return next((p for p in self.candidates if p.is_file()), None)


LOADERS = (
    Loader(
        "lpxelinux.0",
        "BIOS PXE boot file: config over TFTP, kernel and initrd over HTTP",
        (Path("/usr/lib/PXELINUX/lpxelinux.0"),),
        "pxelinux",
    ),
    Loader(
        "pxelinux.0",
        "BIOS PXE over TFTP only; cannot fetch photonkick's HTTP kernel URLs",
        (Path("/usr/lib/PXELINUX/pxelinux.0"),),
        "pxelinux",
    ),
    Loader(
        "ldlinux.c32",
        "loaded by lpxelinux.0 and pxelinux.0",
        (Path("/usr/lib/syslinux/modules/bios/ldlinux.c32"),),
        "syslinux-common",
    ),
    Loader(
        "undionly.kpxe",
        "BIOS iPXE (chains to the iPXE script)",
        (Path("/usr/lib/ipxe/undionly.kpxe"),),
        "ipxe",
    ),
    Loader(
        "ipxe.efi", "UEFI iPXE with its own NIC drivers", (Path("/usr/lib/ipxe/ipxe.efi"),), "ipxe"
    ),
    Loader(
        "snponly.efi",
        "UEFI iPXE on the firmware's NIC driver",
        (Path("/usr/lib/ipxe/snponly.efi"),),
        "ipxe",
    ),
)


class LoaderError(PhotonkickError):
    """A loader could not be built."""


@dataclass(frozen=True)
class LoaderStatus:
    """What `photonkick doctor` prints for one loader."""

    name: str
    purpose: str
    path: Path | None
    hint: str


def grub_available() -> bool:
    """Whether a network GRUB can be built here."""
    return shutil.which("grub-mkimage") is not None and (GRUB_EFI_MODULES / "efinet.mod").exists()


def grub_prefix(tftp_server: str | None) -> str:
    """Where the network GRUB loads its configs from: photonkick's TFTP address when it is
    known, else whatever server the DHCP answer the firmware kept names.

    GRUB reads its server from the firmware's cached DHCP acknowledgement, never from a
    proxy-DHCP offer: beside a proxy, that names the network's own DHCP server."""
    try:
        address = ipaddress.IPv4Address(tftp_server or "")
    except ValueError:
        return f"(tftp)/{GRUB_PREFIX}"
    return f"(tftp,{address})/{GRUB_PREFIX}"


def build_network_grub(cache_dir: Path, tftp_server: str | None = None) -> Path:
    """Build (once per GRUB version and prefix) a UEFI GRUB with network modules that loads
    its configs over TFTP from ``tftp_server`` (see :func:`grub_prefix`)."""
    if not grub_available():
        raise LoaderError(
            "grub-mkimage or the x86_64-efi modules are missing: "
            "apt-get install grub-efi-amd64-bin grub-common"
        )
    prefix = grub_prefix(tftp_server)
    stamp = hashlib.sha256(prefix.encode())
    for module in GRUB_MODULES:
        stamp.update((GRUB_EFI_MODULES / f"{module}.mod").read_bytes())
    out = cache_dir / f"grubx64-{stamp.hexdigest()[:16]}.efi"
    if out.is_file():
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    result = subprocess.run(
        [
            "grub-mkimage",
            "-O",
            "x86_64-efi",
            "-d",
            str(GRUB_EFI_MODULES),
            "-p",
            prefix,
            "-o",
            str(partial),
            *GRUB_MODULES,
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise LoaderError(f"grub-mkimage failed: {result.stderr.strip()}")
    partial.rename(out)
    return out


def loader_files(cache_dir: Path, tftp_server: str | None = None) -> dict[str, Path]:
    """Every loader found here (and the network GRUB when it can be built), by TFTP name.

    ``tftp_server``: the address the served GRUB fetches its configs from; None for a tree
    that another TFTP server serves (GRUB then asks the server its DHCP answer names)."""
    found = {loader.name: path for loader in LOADERS if (path := loader.find())}
    if grub_available():
        found["grubx64.efi"] = build_network_grub(cache_dir, tftp_server)
    return found


def loader_report(cache_dir: Path) -> list[LoaderStatus]:
    """Each loader: where it was found, or how to install it."""
    report = [
        LoaderStatus(
            loader.name, loader.purpose, path, "" if path else f"apt-get install {loader.package}"
        )
        for loader in LOADERS
        for path in [loader.find()]
    ]
    grub_path = None
    hint = "apt-get install grub-efi-amd64-bin grub-common"
    if grub_available():
        try:
            grub_path, hint = build_network_grub(cache_dir), ""
        except LoaderError as exc:
            hint = str(exc)
    report.insert(
        3,
        LoaderStatus(
            "grubx64.efi",
            "UEFI boot file: GRUB with efinet, tftp and http, built with grub-mkimage",
            grub_path,
            hint,
        ),
    )
    return report

"""Kickstart ISOs: a small seed ISO, or a Photon ISO remastered to install unattended.

* ``write_seed_iso``: ``/ks.json`` alone on an ISO9660 + Joliet + Rock Ridge image, meant
  as a second CD-ROM next to the stock Photon ISO, read with
  ``photonkick.pxe.isoboot.seed_boot_param()`` (``ks=/dev/sr1:/ks.json``).
* ``remaster_iso``: a copy of a Photon ISO with the kickstart at ``/isolinux/ks.json``
  and boot menus (syslinux and GRUB) whose default entry boots it after a short timeout.
  The El Torito entries (BIOS and UEFI) and the volume id are kept; file data is streamed
  from the base ISO, so a multi-GB ISO is not held in memory. A hybrid MBR/GPT that lets
  some ISOs boot from a USB stick is not carried over (``RemasteredIso.hybrid_dropped``).

Both write through a temporary file and a rename: on any error nothing appears at ``out``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from photonkick.pxe import isoboot
from photonkick.server._isofs import BootEntry, IsoError, IsoImage, new_iso

__all__ = [
    "SEED_VOLUME_ID",
    "BootEntry",
    "IsoError",
    "RemasteredIso",
    "remaster_iso",
    "write_seed_iso",
]

SEED_VOLUME_ID = "PKSEED"
KERNEL = "isolinux/vmlinuz"
INITRD = "isolinux/initrd.img"
_VOLUME_ID = re.compile(r"[A-Z0-9_]{1,32}")


@dataclass(frozen=True)
class RemasteredIso:
    """The result of ``remaster_iso``: where it went and what it boots.

    ``hybrid_dropped``: the base had a hybrid MBR/GPT (for booting from a USB stick) that
    the copy does not keep; the copy boots from a CD/DVD drive (virtual or real) only.
    """

    path: Path
    volume_id: str
    boot: tuple[BootEntry, ...]
    menus: tuple[str, ...]
    ks_path: str
    hybrid_dropped: bool


def write_seed_iso(kickstart_json: bytes, out: Path, *, volume_id: str = SEED_VOLUME_ID) -> None:
    """Write a seed ISO holding ``kickstart_json`` as ``/ks.json``, atomically, to ``out``."""
    _check_kickstart(kickstart_json)
    if not _VOLUME_ID.fullmatch(volume_id):
        raise IsoError(f"volume id {volume_id!r}: use 1-32 of A-Z, 0-9 and _")
    new_iso({isoboot.SEED_KS_PATH.lstrip("/"): kickstart_json}, volume_id, out)


def remaster_iso(
    base: Path,
    kickstart_json: bytes,
    out: Path,
    *,
    timeout_s: int = isoboot.DEFAULT_TIMEOUT_S,
    extra_args: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> RemasteredIso:
    """Write to ``out`` a copy of the Photon ISO ``base`` that installs with the kickstart.

    ``extra_args`` are added to the unattended kernel line (for example
    ``insecure_installation=1``); ``progress(done, total)`` gets bytes written.
    """
    _check_kickstart(kickstart_json)
    base = base.absolute()
    ks_rel = isoboot.REMASTER_KS_PATH.lstrip("/")
    with IsoImage(base) as image:
        missing = [f"/{p}" for p in (KERNEL, INITRD) if not image.is_file(p)]
        if missing:
            raise IsoError(f"{base}: not a Photon OS ISO: it has no {' and no '.join(missing)}")
        boot = tuple(image.boot_entries())
        if not boot:
            raise IsoError(f"{base}: has no El Torito boot entry; it cannot boot")
        originals = {
            name: image.read(name).decode("utf-8", "replace")
            for name in isoboot.MENU_FILES
            if image.is_file(name)
        }
        _check_menus(base, boot, originals)
        menus = isoboot.unattended_menus(originals, timeout_s=timeout_s, extra_args=extra_args)
        for name, text in sorted(menus.items()):
            image.replace(name, text.encode())
        if image.is_file(ks_rel):
            image.replace(ks_rel, kickstart_json)
        else:
            image.add(ks_rel, kickstart_json)
        volume_id = image.volume_id
        hybrid_dropped = image.loses_system_area

        def verify(written: Path) -> None:
            with IsoImage(written) as copy:
                if copy.volume_id != volume_id or tuple(copy.boot_entries()) != boot:
                    raise IsoError(f"{out}: the boot entries did not survive remastering")
                if copy.read(ks_rel) != kickstart_json:
                    raise IsoError(f"{out}: the kickstart did not survive remastering")

        image.write_atomically(out, progress=progress, verify=verify)
    return RemasteredIso(
        out.absolute(), volume_id, boot, tuple(sorted(menus)), "/" + ks_rel, hybrid_dropped
    )


def _check_kickstart(kickstart_json: bytes) -> None:
    if not isinstance(kickstart_json, bytes):
        raise IsoError("the kickstart must be given as bytes")
    try:
        data = json.loads(kickstart_json.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise IsoError(f"the kickstart is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise IsoError("the kickstart must be a JSON object")


def _check_menus(base: Path, boot: tuple[BootEntry, ...], originals: dict[str, str]) -> None:
    """Every boot entry must have a menu to rewrite, or it would boot interactively."""
    for entry in boot:
        syslinux = entry.platform == "bios" and (entry.path or "").endswith("isolinux.bin")
        needed = isoboot.ISOLINUX_CFG if syslinux else isoboot.GRUB_CFG
        if needed not in originals:
            raise IsoError(
                f"{base}: the {entry.platform} boot entry ({entry.path}) needs /{needed}, "
                "which the ISO does not have"
            )

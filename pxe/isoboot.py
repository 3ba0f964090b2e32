"""Boot menus of a Photon ISO rewritten so that an unattended install is the default.

Text in, text out: the caller reads the menus from an ISO and writes the results back.
Photon ISOs carry two boot paths:

* BIOS through syslinux: ``isolinux/isolinux.cfg``, which includes ``isolinux/menu.cfg``
  where the ``install`` label lives (``kernel vmlinuz`` /
  ``append initrd=initrd.img root=/dev/ram0 loglevel=3 photon.media=cdrom``); its
  ``timeout 0`` waits for a key forever.
* UEFI through GRUB: ``boot/grub2/grub.cfg`` with ``probe -s photondisk -u ($root)`` and a
  ``menuentry "Install"`` booting ``/isolinux/vmlinuz`` with
  ``photon.media=UUID=$photondisk``. Installer 2.9+ ISOs boot BIOS through GRUB as well
  (``isolinux/eltorito.img``) and have no syslinux menus; then grub.cfg serves both.

Each rewrite adds one entry labelled ``photonkick`` whose kernel line is copied from the
ISO's own install entry with ``ks=cdrom:<ks_path>`` added, makes it the default and boots
it after a short timeout. Rewriting an already rewritten menu gives the same text again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from photonkick.kickstarts.errors import PhotonkickError

ENTRY_ID = "photonkick"
ENTRY_TITLE = "Unattended install (photonkick)"
DEFAULT_TIMEOUT_S = 5
REMASTER_KS_PATH = "/isolinux/ks.json"
SEED_KS_PATH = "/ks.json"
SEED_DEVICE = "/dev/sr1"

ISOLINUX_CFG = "isolinux/isolinux.cfg"
MENU_CFG = "isolinux/menu.cfg"
GRUB_CFG = "boot/grub2/grub.cfg"
MENU_FILES = (ISOLINUX_CFG, MENU_CFG, GRUB_CFG)

_COMMENT = f"# {ENTRY_ID}: the unattended install boots by itself after the timeout"
_SYSLINUX_KERNEL = "vmlinuz"
_SYSLINUX_APPEND = "initrd=initrd.img root=/dev/ram0 loglevel=3 photon.media=cdrom"
_GRUB_LINUX = "linux /isolinux/vmlinuz root=/dev/ram0 loglevel=3 photon.media=UUID=$photondisk"
_GRUB_INITRD = "initrd /isolinux/initrd.img"
_GRUB_PROBE = "probe -s photondisk -u ($root)"
_SAFE_ARG = re.compile(r"[^\s\"'`;{}\\]+")
_SYSLINUX_TIMERS = {"timeout", "totaltimeout", "ontimeout", "prompt"}


class IsoBootError(PhotonkickError):
    """The boot menus of an ISO cannot be turned into an unattended boot."""


def seed_boot_param(device: str = SEED_DEVICE) -> str:
    """The kernel parameter that reads the kickstart from a seed ISO.

    A seed ISO (``ks.json`` at its root, see ``photonkick.server.iso_build.write_seed_iso``)
    is attached as a second CD-ROM next to the unmodified Photon ISO; the installer mounts
    ``device``, reads ``/ks.json`` and unmounts it. The parameter still has to reach the
    kernel: typed at the boot prompt, or through a remastered menu. Where the VM is on
    VMware, ``guestinfo.kickstart.data`` needs no boot-line edit at all.
    """
    _check_token(device, "device")
    return f"ks={device}:{SEED_KS_PATH}"


def kickstart_param(ks_path: str = REMASTER_KS_PATH) -> str:
    """``ks=cdrom:<ks_path>``: the kickstart read from the boot medium itself."""
    if not ks_path.startswith("/"):
        raise IsoBootError(f"kickstart path {ks_path!r} must be absolute on the ISO")
    _check_token(ks_path, "kickstart path")
    return f"ks=cdrom:{ks_path}"


def unattended_menus(
    originals: Mapping[str, str],
    *,
    ks_path: str = REMASTER_KS_PATH,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    extra_args: Sequence[str] = (),
) -> dict[str, str]:
    """Rewrite every menu of an ISO; keys are ISO paths from ``MENU_FILES``.

    ``originals`` holds the menus the ISO has (GRUB-only ISOs have no syslinux files). The
    result has the same keys with the new texts.
    """
    unknown = sorted(set(originals) - set(MENU_FILES))
    if unknown:
        raise IsoBootError(f"not a boot menu photonkick knows: {', '.join(unknown)}")
    if MENU_CFG in originals and ISOLINUX_CFG not in originals:
        raise IsoBootError(f"{MENU_CFG} without {ISOLINUX_CFG}")
    if not any(name in originals for name in (ISOLINUX_CFG, GRUB_CFG)):
        raise IsoBootError(f"the ISO has neither {ISOLINUX_CFG} nor {GRUB_CFG}")
    result: dict[str, str] = {}
    if ISOLINUX_CFG in originals:
        top, menu = unattended_isolinux(
            originals[ISOLINUX_CFG],
            originals.get(MENU_CFG),
            ks_path=ks_path,
            timeout_s=timeout_s,
            extra_args=extra_args,
        )
        result[ISOLINUX_CFG] = top
        if menu is not None:
            result[MENU_CFG] = menu
    if GRUB_CFG in originals:
        result[GRUB_CFG] = unattended_grub(
            originals[GRUB_CFG], ks_path=ks_path, timeout_s=timeout_s, extra_args=extra_args
        )
    return result


def unattended_isolinux(
    isolinux_cfg: str,
    menu_cfg: str | None,
    *,
    ks_path: str = REMASTER_KS_PATH,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    extra_args: Sequence[str] = (),
) -> tuple[str, str | None]:
    """Rewrite syslinux's ``isolinux.cfg`` and the ``menu.cfg`` it includes (if any).

    The ``photonkick`` label goes before the first label, takes ``menu default`` from the
    others, becomes the ``default``/``ontimeout`` target, and ``timeout`` (tenths of a
    second) replaces Photon's ``timeout 0``.
    """
    ticks = _check_timeout(timeout_s) * 10
    extra = _check_extra(extra_args)
    top = _strip_syslinux(_lines(isolinux_cfg))
    menu = None if menu_cfg is None else _strip_syslinux(_lines(menu_cfg))
    kernel, initrd, append = _syslinux_template([*top, *(menu or [])])
    args = _with_ks(append, kickstart_param(ks_path), extra, "photon.media=cdrom")
    block = [f"label {ENTRY_ID}", f"\tmenu label ^{ENTRY_TITLE}", "\tmenu default"]
    block += [f"\tkernel {kernel}"] + ([f"\tinitrd {initrd}"] if initrd else [])
    block += [f"\tappend {' '.join(args)}", ""]
    labelled = menu if menu is not None and _first_label(menu) is not None else top
    at = _first_label(labelled)
    if at is None:
        if labelled and labelled[-1].strip():
            labelled.append("")
        labelled.extend(block)
    else:
        labelled[at:at] = block
    timers = [_COMMENT, "prompt 0", f"timeout {ticks}", f"ontimeout {ENTRY_ID}"]
    head = 0
    while head < len(top) and top[head].lstrip().startswith("#"):
        head += 1
    top[head:head] = timers
    return _text(top), None if menu is None else _text(menu)


def unattended_grub(
    grub_cfg: str,
    *,
    ks_path: str = REMASTER_KS_PATH,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    extra_args: Sequence[str] = (),
) -> str:
    """Rewrite GRUB's ``grub.cfg``: the ``photonkick`` entry first, ``default=0``, a timeout.

    The ``probe -s photondisk -u ($root)`` line stays (and is added if the entry needs
    ``$photondisk`` and the menu had no probe), so ``photon.media=UUID=$photondisk`` finds
    the ISO under both firmware types.
    """
    seconds = _check_timeout(timeout_s)
    extra = _check_extra(extra_args)
    lines = _strip_grub(_lines(grub_cfg))
    linux, initrd = _grub_template(lines)
    command, *rest = linux.split()
    args = _with_ks(
        " ".join(rest), kickstart_param(ks_path), extra, "photon.media=UUID=$photondisk"
    )
    entry = [
        f'menuentry "{ENTRY_TITLE}" --id {ENTRY_ID} {{',
        f"    {command} {' '.join(args)}",
        f"    {initrd}",
        "}",
        "",
    ]
    found_default = found_timeout = False
    for i, line in enumerate(lines):
        if re.match(r"\s*set\s+default=", line):
            lines[i] = _indent(line) + "set default=0"
            found_default = True
        elif re.match(r"\s*set\s+timeout=", line):
            lines[i] = _indent(line) + f"set timeout={seconds}"
            found_timeout = True
    head = [_COMMENT]
    if not found_default:
        head.append("set default=0")
    if not found_timeout:
        head.append(f"set timeout={seconds}")
    lines[0:0] = head
    at = next((i for i, line in enumerate(lines) if _is_grub_entry(line)), len(lines))
    probed = any("photondisk" in line and line.split()[:1] == ["probe"] for line in lines[:at])
    if "$photondisk" in " ".join(args) and not probed:
        entry.insert(0, _GRUB_PROBE)
    if at == len(lines) and lines and lines[-1].strip():
        entry.insert(0, "")
    lines[at:at] = entry
    return _text(lines)


def _check_timeout(timeout_s: int) -> int:
    # syslinux reads "timeout 0" as "wait forever", so zero cannot mean "at once" here.
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int) or not 1 <= timeout_s <= 3600:
        raise IsoBootError(f"boot menu timeout must be 1..3600 seconds, not {timeout_s!r}")
    return timeout_s


def _check_token(value: str, what: str) -> None:
    if not _SAFE_ARG.fullmatch(value):
        raise IsoBootError(f"{what} {value!r} cannot go on a kernel command line")


def _check_extra(extra_args: Sequence[str]) -> list[str]:
    if isinstance(extra_args, str):
        raise IsoBootError("extra kernel arguments must be a list of words, not one string")
    for arg in extra_args:
        _check_token(arg, "kernel argument")
        if arg.startswith("ks="):
            raise IsoBootError(f"{arg!r}: photonkick sets ks= itself")
    return list(extra_args)


def _with_ks(append: str, ks: str, extra: list[str], media: str) -> list[str]:
    """Kernel arguments of the template with ``ks=`` (and ``extra``) put in."""
    keys = {arg.split("=", 1)[0] + "=" for arg in extra if "=" in arg}
    args = [
        a for a in append.split() if not a.startswith("ks=") and not any(map(a.startswith, keys))
    ]
    if not any(a.startswith("photon.media=") for a in args):
        args.append(media)
    at = next(i for i, a in enumerate(args) if a.startswith("photon.media="))
    args.insert(at, ks)
    return args + extra


def _lines(text: str) -> list[str]:
    text = text.replace("\r\n", "\n")
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


def _text(lines: list[str]) -> str:
    while len(lines) > 1 and not lines[-1].strip() and not lines[-2].strip():
        lines.pop()
    return "\n".join(lines).rstrip("\n") + "\n"


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _words(line: str) -> list[str]:
    return line.strip().lower().split()


def _first_label(lines: list[str]) -> int | None:
    return next((i for i, line in enumerate(lines) if _words(line)[:1] == ["label"]), None)


def _strip_syslinux(lines: list[str]) -> list[str]:
    """Drop timers, ``menu default`` markers and an earlier ``photonkick`` label."""
    labels = {w[1] for w in map(_words, lines) if len(w) == 2 and w[0] == "label"}
    out: list[str] = []
    in_ours = False
    for line in lines:
        words = _words(line)
        if words[:1] == ["label"]:
            in_ours = words[1:] == [ENTRY_ID]
        if in_ours:
            if not words:
                in_ours = False
            continue
        if line.strip() == _COMMENT or (words[:1] and words[0] in _SYSLINUX_TIMERS):
            continue
        if words == ["menu", "default"]:
            continue
        if len(words) == 2 and words[0] == "default" and words[1] in labels | {ENTRY_ID}:
            out.append(_indent(line) + f"default {ENTRY_ID}")
            continue
        out.append(line)
    return out


def _syslinux_template(lines: list[str]) -> tuple[str, str | None, str]:
    """Kernel, initrd and append line of the ISO's own install label."""
    labels: list[dict[str, str]] = []
    for line in lines:
        words = line.split(None, 1)
        key = words[0].lower() if words else ""
        if key == "label":
            labels.append({})
        elif labels and key in ("kernel", "linux", "initrd", "append") and len(words) == 2:
            labels[-1].setdefault("kernel" if key == "linux" else key, words[1].strip())
    for label in labels:
        if "kernel" in label and "photon.media=" in label.get("append", ""):
            return label["kernel"], label.get("initrd"), label["append"]
    for label in labels:
        if label.get("kernel") == _SYSLINUX_KERNEL:
            return label["kernel"], label.get("initrd"), label.get("append", _SYSLINUX_APPEND)
    return _SYSLINUX_KERNEL, None, _SYSLINUX_APPEND


def _is_grub_entry(line: str) -> bool:
    return _words(line)[:1] in (["menuentry"], ["submenu"])


def _grub_blocks(lines: list[str]) -> list[tuple[int, int]]:
    """(first, last) line of every top-level menuentry/submenu, braces counted."""
    blocks: list[tuple[int, int]] = []
    i = 0
    while i < len(lines):
        if _is_grub_entry(lines[i]):
            depth, j = 0, i
            while j < len(lines):
                depth += lines[j].count("{") - lines[j].count("}")
                if depth <= 0 and "{" in "".join(lines[i : j + 1]):
                    break
                j += 1
            blocks.append((i, min(j, len(lines) - 1)))
            i = j + 1
        else:
            i += 1
    return blocks


def _strip_grub(lines: list[str]) -> list[str]:
    """Drop an earlier ``photonkick`` entry and our comment."""
    ours = re.compile(rf"--id[ =]['\"]?{ENTRY_ID}['\"]?(\s|{{|$)")
    drop: set[int] = {i for i, line in enumerate(lines) if line.strip() == _COMMENT}
    for first, last in _grub_blocks(lines):
        if ours.search(lines[first]):
            drop.update(range(first, last + 1))
            if last + 1 < len(lines) and not lines[last + 1].strip():
                drop.add(last + 1)
    return [line for i, line in enumerate(lines) if i not in drop]


def _grub_template(lines: list[str]) -> tuple[str, str]:
    """``linux`` and ``initrd`` lines of the ISO's own install entry."""
    entries: list[tuple[str | None, str | None]] = []
    for first, last in _grub_blocks(lines):
        linux = initrd = None
        for line in lines[first + 1 : last + 1]:
            words = line.split()
            if words and words[0] in ("linux", "linuxefi", "linux16") and linux is None:
                linux = " ".join(words)
            elif words and words[0] in ("initrd", "initrdefi", "initrd16") and initrd is None:
                initrd = " ".join(words)
        entries.append((linux, initrd))
    for linux, initrd in entries:
        if linux and "photon.media=" in linux:
            return linux, initrd or _GRUB_INITRD
    for linux, initrd in entries:
        if linux and "/isolinux/vmlinuz" in linux:
            return linux, initrd or _GRUB_INITRD
    return _GRUB_LINUX, _GRUB_INITRD

"""The stand-in guest: a Debian kernel and a busybox initramfs that act like an installer.

Everything is built from Debian packages fetched with ``apt-get download`` and unpacked
with ``dpkg -x`` (nothing is installed system-wide), once per machine, and cached under
the system temp dir in a folder named after a hash of every input.

The guest's ``/init`` does what a Photon OS install reports to photonkick:

* **install boot** (``ks=`` on the kernel command line): DHCP on the first NIC, fetch the
  kickstart JSON, check its ``hostname`` against ``pk_host=`` (or the DHCP host name),
  fetch ``<repos>/repodata/repomd.xml``, take the callback base from the kickstart's
  ``pk_report() { curl ... "<base>/$1" ...`` line, write an install marker holding that base
  to the disk, POST ``<base>/installed`` and reboot;
  with an initrd overlay holding ``/etc/pk-installer.sh`` (:mod:`lab.installer_standin`),
  it sources that script before writing the marker (the installer's own steps and log);
* **disk boot** (``pk_phase=firstboot``, set by the disk's own boot loaders): read the
  marker back, POST ``<base>/firstboot`` and ``<base>/ready``, power off;
* ``pk_phase=probe``: print :data:`PROBE_OK` and power off (used to test an accelerator).

Every step prints a ``PK: <uptime> <what>`` line on the serial console; failures print
``PK: <uptime> FAIL <why>`` and power off.

The disk template (:attr:`Guest.disk`) is an MBR disk with one FAT partition that boots
the same kernel and initramfs with ``pk_phase=firstboot`` under SeaBIOS (syslinux) and
under UEFI (GRUB as ``\\EFI\\BOOT\\BOOTX64.EFI``). It is built with mtools, no loop mounts.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Bumped whenever the build recipe changes in a way the hashed inputs do not show.
RECIPE = "3"
#: Kernel modules the initramfs loads (their dependencies are added automatically).
MODULES = ("virtio_pci", "virtio_net", "vmxnet3", "virtio_blk")
#: Command line shared by every boot of the guest: serial console, quiet, fast.
BASE_CMDLINE = "console=ttyS0,115200 quiet loglevel=3 mitigations=off tsc=reliable"
#: Sector (512 bytes) of the disk that holds the install marker; inside the gap that the
#: partition layout leaves between the MBR and the first partition.
MARKER_LBA = 1024
#: Printed by ``pk_phase=probe``.
PROBE_OK = "PK-PROBE-OK"
#: Size of the disk template and offset of its FAT partition.
DISK_BYTES = 64 << 20
PART_OFFSET = 1 << 20
PART_BYTES = 48 << 20
KERNEL_META = "linux-image-amd64"
BUSYBOX = "busybox-static"
CACHE_ROOT = Path(tempfile.gettempdir()) / "photonkick-lab"

INIT = r"""#!/bin/sh
# Stand-in installer: reports to the boot server the way a real install does.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Report on the first serial port even when the loader's command line has no console=.
out=/dev/console
case " $(cat /proc/cmdline) " in
    *" console=ttyS0"*) ;;
    *) [ -c /dev/ttyS0 ] && out=/dev/ttyS0 ;;
esac
exec </dev/null >"$out" 2>&1

log() { echo "PK: $(cut -d' ' -f1 /proc/uptime) $*"; }
stop() { sync; poweroff -f; sleep 5; }
fail() { log "FAIL $*"; stop; }
arg() {
    for w in $(cat /proc/cmdline); do
        case "$w" in "$1="*) echo "${w#*=}"; return 0 ;; esac
    done
}
# (busybox 1.35's wget -T crashes: bound the time with timeout instead)
fetch() { timeout 30 wget -q -O "$1" "$2"; }
post() { timeout 30 wget -q -O /dev/null --post-data "${2:-}" "$1"; }

log "init $(uname -r)"
phase=$(arg pk_phase)
if [ "$phase" = probe ]; then
    log "@PROBE_OK@"
    stop
fi
for m in $(cat /etc/pk-modules); do
    insmod "/lib/modules/$m.ko" || log "insmod $m failed"
done

nic=""
n=0
while [ -z "$nic" ] && [ $n -lt 50 ]; do
    for d in /sys/class/net/*; do
        d=${d##*/}
        [ "$d" = lo ] || { nic=$d; break; }
    done
    [ -n "$nic" ] || { usleep 100000; n=$((n + 1)); }
done
[ -n "$nic" ] || fail "no network interface"
ip link set lo up
ip link set "$nic" up
driver=$(readlink "/sys/class/net/$nic/device/driver")
log "nic $nic $(cat "/sys/class/net/$nic/address") driver ${driver##*/}"
udhcpc -f -q -n -t 10 -T 2 -i "$nic" -s /etc/pk-dhcp.sh -x hostname:pk-guest >/dev/null 2>&1 \
    || fail "no DHCP lease on $nic"
. /tmp/dhcp.env
log "dhcp ip=$PK_IP host=$PK_DHCP_HOST"

disk=""
for d in vda sda nvme0n1 xvda; do
    [ -b "/dev/$d" ] && { disk=/dev/$d; break; }
done

ks=$(arg ks)
if [ -n "$ks" ]; then
    log "kickstart $ks"
    fetch /tmp/ks.json "$ks" || fail "kickstart fetch $ks"
    name=$(grep -o '"hostname"[[:space:]]*:[[:space:]]*"[^"]*"' /tmp/ks.json | head -n 1 \
        | sed 's/.*"\([^"]*\)"$/\1/')
    [ -n "$name" ] || fail "kickstart has no hostname"
    want=$(arg pk_host)
    [ -n "$want" ] || want=$PK_DHCP_HOST
    if [ -n "$want" ] && [ "$name" != "$want" ]; then
        fail "kickstart hostname $name, expected $want"
    fi
    log "kickstart hostname $name"
    repos=$(arg repos)
    [ -n "$repos" ] || repos=$(arg repo)
    [ -n "$repos" ] || fail "no repos= on the command line"
    repo=${repos%%,*}
    repo=${repo%/}
    fetch /tmp/repomd.xml "$repo/repodata/repomd.xml" || fail "repo fetch $repo"
    log "repo $repo ok"
    base=$(grep -o 'http://[^" \\]*/\$1' /tmp/ks.json | head -n 1)
    base=${base%/\$1}
    [ -n "$base" ] || fail "kickstart has no pk_report callback"
    # An initrd overlay may add an installer's own steps (see lab/installer_standin.py).
    [ -f /etc/pk-installer.sh ] && . /etc/pk-installer.sh
    [ -n "$disk" ] || fail "no disk"
    printf 'PKSTATE1 %s \n' "$base" | dd of="$disk" bs=512 seek=@MARKER_LBA@ count=1 \
        conv=notrunc,sync 2>/dev/null || fail "writing $disk"
    sync
    log "marker written to $disk"
    post "$base/installed" || fail "installed callback"
    log "installed reported, rebooting"
    sync
    reboot -f
    sleep 5
fi

if [ "$phase" = firstboot ]; then
    [ -n "$disk" ] || fail "no disk"
    state=$(dd if="$disk" bs=512 skip=@MARKER_LBA@ count=1 2>/dev/null | tr -d '\000')
    set -- $state
    [ "$1" = PKSTATE1 ] && [ -n "$2" ] || fail "disk has no install marker"
    base=$2
    post "$base/firstboot" || fail "firstboot callback"
    log "firstboot reported"
    post "$base/ready" || fail "ready callback"
    log "ready reported, powering off"
    stop
fi
fail "nothing to do: no ks= and no pk_phase="
"""

DHCP_SCRIPT = r"""#!/bin/sh
case "$1" in
bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
    echo "PK_IP=$ip" >/tmp/dhcp.env
    echo "PK_DHCP_HOST=$hostname" >>/tmp/dhcp.env
    ;;
esac
exit 0
"""

SYSLINUX_CFG = """SERIAL 0 115200
DEFAULT disk
PROMPT 0
TIMEOUT 0
LABEL disk
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND {cmdline}
"""

GRUB_EARLY_CFG = """set timeout=0
echo "photonkick stand-in disk"
linux /vmlinuz {cmdline}
initrd /initrd.img
boot
"""
REPOMD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>0</revision></repomd>\n'
)
GRUB_DISK_MODULES = ("fat", "part_msdos", "linux", "echo", "normal", "configfile")


@dataclass(frozen=True)
class Guest:
    """A built stand-in guest; every path lives in the shared cache, treat it as read-only."""

    root: Path
    kernel: Path
    initrd: Path
    disk: Path
    kernel_version: str
    modules: tuple[str, ...]

    def cmdline(self, *extra: str) -> str:
        """The base kernel command line followed by ``extra`` words."""
        return " ".join((BASE_CMDLINE, *extra))

    def new_disk(self, dest: Path) -> Path:
        """Copy the disk template (sparse) to ``dest`` for one VM and return ``dest``."""
        subprocess.run(["cp", "--sparse=always", str(self.disk), str(dest)], check=True)
        return dest


def photon_tree(guest: Guest, dest: Path, release: str = "5.0") -> Path:
    """Lay out ``dest`` like a Photon OS ISO, with the stand-in as its installer.

    ``isolinux/vmlinuz`` and ``isolinux/initrd.img`` are the guest's, ``RPMS/`` holds
    ``repodata/repomd.xml`` and an empty ``photon-release-<release>-1.ph<major>.noarch.rpm``
    placeholder, and the root holds the ``PHOTON_VMWARE_CD`` marker file. Pack it with e.g.
    ``xorriso -as mkisofs -V PHOTON -o photon.iso DEST`` for code that imports an ISO.
    """
    (dest / "isolinux").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(guest.kernel, dest / "isolinux" / "vmlinuz")
    shutil.copyfile(guest.initrd, dest / "isolinux" / "initrd.img")
    (dest / "RPMS" / "repodata").mkdir(parents=True, exist_ok=True)
    (dest / "RPMS" / "noarch").mkdir(exist_ok=True)
    (dest / "RPMS" / "repodata" / "repomd.xml").write_text(REPOMD)
    major = release.split(".")[0]
    (dest / "RPMS" / "noarch" / f"photon-release-{release}-1.ph{major}.noarch.rpm").write_bytes(b"")
    (dest / "PHOTON_VMWARE_CD").write_text("")
    return dest


def read_marker(disk: Path) -> str | None:
    """The callback base the guest wrote to ``disk`` during its install boot, if any."""
    with disk.open("rb") as f:
        f.seek(MARKER_LBA * 512)
        words = f.read(512).rstrip(b"\0").decode(errors="replace").split()
    return words[1] if len(words) >= 2 and words[0] == "PKSTATE1" else None


def _run(args: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


def _candidate(package: str) -> str:
    out = _run(["apt-cache", "policy", package])
    match = re.search(r"Candidate:\s*(\S+)", out)
    if not match or match.group(1) == "(none)":
        raise RuntimeError(f"apt knows no candidate for {package}: run apt-get update")
    return match.group(1)


def _kernel_package() -> str:
    out = _run(["apt-cache", "depends", KERNEL_META])
    match = re.search(r"Depends:\s*(linux-image-\S+-amd64)\b", out)
    if not match:
        raise RuntimeError(f"cannot resolve {KERNEL_META} to a kernel package:\n{out}")
    return match.group(1)


def _download(package: str, version: str, debs: Path) -> Path:
    """The cached .deb of ``package`` at ``version``, fetched with apt-get download if new."""
    debs.mkdir(parents=True, exist_ok=True)
    pattern = f"{package}_*{version.split(':')[-1]}_*.deb"
    found = sorted(debs.glob(pattern))
    if not found:
        argv = [
            "apt-get",
            "download",
            "-q",
            "-o",
            "APT::Sandbox::User=root",
            f"{package}={version}",
        ]
        try:
            _run(argv, cwd=debs)
        except RuntimeError as exc:
            raise _DownloadError(str(exc)) from None
        found = sorted(debs.glob(pattern))
    if not found:
        raise RuntimeError(f"apt-get download {package}={version} left no {pattern} in {debs}")
    return found[0]


class _DownloadError(RuntimeError):
    """apt-get download failed (often: package lists older than the mirror)."""


def _modinfo_depends(ko: bytes) -> list[str]:
    match = re.search(rb"(?:^|\0)depends=([^\0]*)\0", ko)
    if not match or not match.group(1):
        return []
    return match.group(1).decode().split(",")


def _module_closure(moddir: Path, wanted: tuple[str, ...]) -> list[tuple[str, bytes]]:
    """``wanted`` and their dependencies, dependencies first, as (name, uncompressed .ko)."""
    index: dict[str, Path] = {}
    for path in (moddir / "kernel").rglob("*.ko*"):
        name = path.name.split(".ko")[0].replace("-", "_")
        index[name] = path
    builtin = (
        (moddir / "modules.builtin").read_text() if (moddir / "modules.builtin").exists() else ""
    )
    builtin_names = {Path(line).name.split(".ko")[0].replace("-", "_") for line in builtin.split()}
    ordered: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin_names:
            return
        seen.add(name)
        if name not in index:
            raise RuntimeError(f"kernel module {name} is neither built in nor in {moddir}")
        data = _read_module(index[name])
        for dep in _modinfo_depends(data):
            visit(dep)
        ordered.append((name, data))

    for name in wanted:
        visit(name)
    return ordered


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return data


class _Cpio:
    """A minimal writer of the ``newc`` cpio format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        fields = [self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % v for v in fields)
        blob = header + name.encode() + b"\0"
        blob += b"\0" * (-len(blob) % 4)
        blob += data + b"\0" * (-len(data) % 4)
        self._parts.append(blob)

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        data = b"".join(self._parts)
        return data + b"\0" * (-len(data) % 512)


STAND_IN_INSTALLER = "2.7"
"""The photon-os-installer version the stand-in initrd's package metadata names."""


def _initramfs(busybox: bytes, applets: list[str], modules: list[tuple[str, bytes]]) -> bytes:
    init = INIT.replace("@PROBE_OK@", PROBE_OK).replace("@MARKER_LBA@", str(MARKER_LBA))
    cpio = _Cpio()
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp"):
        cpio.directory(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3)
    cpio.file("bin/busybox", busybox, 0o755)
    for applet in applets:
        if applet != "busybox":
            cpio.symlink(f"bin/{applet}", "busybox")
    cpio.file("init", init.encode(), 0o755)
    # Like a real installer initrd, it carries photon-os-installer's package metadata, which
    # `import-iso` reads for `photon.installer: auto`.
    egg = f"usr/lib/python3.11/site-packages/photon_installer-{STAND_IN_INSTALLER}-py3.11.egg-info"
    for d in ("usr", "usr/lib", "usr/lib/python3.11", "usr/lib/python3.11/site-packages", egg):
        cpio.directory(d)
    metadata = f"Metadata-Version: 2.1\nName: photon-installer\nVersion: {STAND_IN_INSTALLER}\n"
    cpio.file(f"{egg}/PKG-INFO", metadata.encode())
    cpio.file("etc/pk-dhcp.sh", DHCP_SCRIPT.encode(), 0o755)
    cpio.file("etc/pk-modules", "".join(f"{name}\n" for name, _ in modules).encode())
    for name, data in modules:
        cpio.file(f"lib/modules/{name}.ko", data)
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


def initrd_overlay(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A gzip'd cpio of ``files`` (path: data, mode) to append to the guest's initrd: the
    kernel unpacks concatenated archives in order, so these files are added or replace."""
    cpio = _Cpio()
    for name, (data, mode) in sorted(files.items()):
        cpio.file(name, data, mode)
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


def _disk(dest: Path, kernel: Path, initrd: Path, cmdline: str, work: Path) -> None:
    """An MBR disk whose FAT partition boots ``kernel`` under SeaBIOS and UEFI."""
    with dest.open("wb") as f:
        f.truncate(DISK_BYTES)
    start, size = PART_OFFSET // 512, PART_BYTES // 512
    sfdisk = f"label: dos\nstart={start}, size={size}, type=e, bootable\n"
    subprocess.run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(dest)],
        input=sfdisk,
        text=True,
        check=True,
        capture_output=True,
    )
    image = f"{dest}@@{PART_OFFSET}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}

    def mtools(*args: str) -> None:
        result = subprocess.run(list(args), capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {result.stderr}")

    geometry = ["-T", str(size), "-h", "64", "-s", "32", "-H", str(start)]
    mtools("mformat", "-i", image, *geometry, "-v", "PKDISK", "::")
    (work / "syslinux.cfg").write_text(SYSLINUX_CFG.format(cmdline=cmdline))
    (work / "early.cfg").write_text(GRUB_EARLY_CFG.format(cmdline=cmdline))
    efi = work / "BOOTX64.EFI"
    early = ["-c", str(work / "early.cfg")]
    mkimage = ["grub-mkimage", "-O", "x86_64-efi", "-p", "/EFI/BOOT", *early, "-o", str(efi)]
    _run([*mkimage, *GRUB_DISK_MODULES])
    mtools("mmd", "-i", image, "::/EFI", "::/EFI/BOOT")
    mtools("mcopy", "-i", image, str(efi), "::/EFI/BOOT/BOOTX64.EFI")
    mtools("mcopy", "-i", image, str(kernel), "::/vmlinuz")
    mtools("mcopy", "-i", image, str(initrd), "::/initrd.img")
    mtools("mcopy", "-i", image, str(work / "syslinux.cfg"), "::/syslinux.cfg")
    _run(["syslinux", "--install", "--offset", str(PART_OFFSET), str(dest)])
    mbr = Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()[:440]
    with dest.open("r+b") as image_file:
        image_file.write(mbr)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_guest(cache: Path = CACHE_ROOT) -> Guest:
    """Build the stand-in guest, or return the cached one built from the same inputs.

    The cache key hashes the Debian package versions apt would fetch, this module's
    source, and the tools' versions that shape the disk; a change of any of them builds
    a new guest next to the old one (guests unused for a day are deleted). When a
    download fails, the package lists are refreshed (``apt-get update``) and the build
    tried once more.
    """
    try:
        return _build_guest(cache)
    except _DownloadError:
        _run(["apt-get", "update", "-qq"])
        return _build_guest(cache)


def _build_guest(cache: Path) -> Guest:
    kernel_pkg = _kernel_package()
    versions = {p: _candidate(p) for p in (kernel_pkg, BUSYBOX, "grub-efi-amd64-bin", "syslinux")}
    key_src = json.dumps(
        {"recipe": RECIPE, "versions": versions, "source": Path(__file__).read_text()},
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    root = cache / f"guest-{key}"
    manifest = root / "manifest.json"
    with _locked(cache / "guest.lock"):
        if not manifest.exists():
            _build(root, kernel_pkg, versions, cache / "debs")
        os.utime(manifest)
        _prune(cache, keep=root)
    info = json.loads(manifest.read_text())
    return Guest(
        root=root,
        kernel=root / "vmlinuz",
        initrd=root / "initrd.img",
        disk=root / "disk.img",
        kernel_version=info["kernel_version"],
        modules=tuple(info["modules"]),
    )


def _prune(cache: Path, keep: Path, max_age: float = 86400.0) -> None:
    """Delete other guests not used for ``max_age`` seconds (builds of older recipes)."""
    now = time.time()
    for other in cache.glob("guest-*"):
        if other == keep or not other.is_dir():
            continue
        manifest = other / "manifest.json"
        used = manifest.stat().st_mtime if manifest.exists() else other.stat().st_mtime
        if now - used > max_age:
            shutil.rmtree(other, ignore_errors=True)


def _build(root: Path, kernel_pkg: str, versions: dict[str, str], debs: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    staging = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    try:
        unpacked = staging / "unpacked"
        for package in (kernel_pkg, BUSYBOX):
            deb = _download(package, versions[package], debs)
            _run(["dpkg", "-x", str(deb), str(unpacked)])
        vmlinuz = sorted((unpacked / "boot").glob("vmlinuz-*"))
        if not vmlinuz:
            raise RuntimeError(f"{kernel_pkg} has no /boot/vmlinuz-*")
        kernel_version = vmlinuz[0].name.removeprefix("vmlinuz-")
        moddir = next(
            d / kernel_version
            for d in (unpacked / "lib" / "modules", unpacked / "usr" / "lib" / "modules")
            if (d / kernel_version).is_dir()
        )
        modules = _module_closure(moddir, MODULES)
        busybox = next(
            p
            for p in (unpacked / "bin" / "busybox", unpacked / "usr" / "bin" / "busybox")
            if p.exists()
        )
        out = staging / "out"
        out.mkdir()
        shutil.copy(vmlinuz[0], out / "vmlinuz")
        applets = _run([str(busybox), "--list"]).split()
        (out / "initrd.img").write_bytes(_initramfs(busybox.read_bytes(), applets, modules))
        cmdline = " ".join((BASE_CMDLINE, "pk_phase=firstboot"))
        _disk(out / "disk.img", out / "vmlinuz", out / "initrd.img", cmdline, staging)
        (out / "manifest.json").write_text(
            json.dumps(
                {
                    "kernel_version": kernel_version,
                    "modules": [name for name, _ in modules],
                    "versions": versions,
                },
                indent=2,
            )
        )
        out.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

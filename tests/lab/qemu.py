"""QEMU VMs on a lab tap: SeaBIOS or OVMF, the NIC's iPXE ROM, network first then disk.

The accelerator is chosen by :func:`accelerator`: KVM only when ``/dev/kvm`` opens *and* a
64-bit kernel actually boots under it (some nested backends expose a /dev/kvm under which
it hangs), TCG otherwise. The answer is cached per host boot; ``PHOTONKICK_LAB_ACCEL=tcg``
or ``=kvm`` skips the probe.

Boot order is given with ``bootindex`` (NIC 1, disk 2), which SeaBIOS and OVMF both honour.
A network loader that gives up must return to the firmware with an error to fall
through to the disk: SeaBIOS tries the next device after pxelinux ``LOCALBOOT 0`` or iPXE
``exit``, but OVMF (EDK2) opens its setup menu when a boot option returns *success*, which
is what GRUB 2.06's ``exit`` does; on UEFI a "boot the disk" answer has to chainload the
disk's EFI loader (or use ``exit 1`` from iPXE).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lab.guest import CACHE_ROOT, PROBE_OK, Guest
from lab.netlab import NetLab

QEMU = "qemu-system-x86_64"
ROM_DIR = Path("/usr/lib/ipxe/qemu")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
Firmware = Literal["bios", "uefi"]
Nic = Literal["virtio", "vmxnet3"]
NIC_DEVICES: dict[str, tuple[str, str]] = {
    # model: (QEMU device, Debian iPXE ROM holding both the BIOS and the UEFI driver).
    # QEMU patches the PCI ids of its *default* ROM only; the virtio ROM names the modern
    # id 1af4:1041, so with an explicit romfile the NIC must be modern-only to match.
    "virtio": ("virtio-net-pci,disable-legacy=on", "efi-virtio.rom"),
    "vmxnet3": ("vmxnet3", "efi-vmxnet3.rom"),
}
KVM_PROBE_SECONDS = 10.0


@dataclass(frozen=True)
class VmSpec:
    """What to boot.

    ``ipxe_rom=False`` leaves the NIC without option ROM: under OVMF its own PXE client
    (virtio only; OVMF has no vmxnet3 driver) then asks DHCP as plain UEFI PXE (arch 7,
    no iPXE user class); under SeaBIOS there is no network boot at all.

    ``ovmf_pxe=False`` turns OVMF's own IPv4 PXE boot options off, so that an iPXE
    ``exit 1`` falls through to the disk instead of into a second network boot of the
    same NIC. OVMF's IPv6 stack is always off (its PXE and HTTP boot timeouts only slow
    a fall-through).
    """

    name: str
    mac: str
    tap: str
    firmware: Firmware = "bios"
    nic: Nic = "virtio"
    ipxe_rom: bool = True
    ovmf_pxe: bool = True
    disk: Path | None = None
    memory_mib: int = 512
    cpus: int = 1


@dataclass
class Vm:
    """A running VM: console log, monotonic start/end times, console lines as they came."""

    spec: VmSpec
    proc: subprocess.Popen[bytes]
    serial: Path
    log: Path
    started: float
    argv: list[str] = field(default_factory=list)
    #: Console lines with the monotonic time they were first seen (polled every 50 ms).
    lines: list[tuple[float, str]] = field(default_factory=list)
    #: Monotonic time QEMU was seen to exit, None while it runs.
    ended: float | None = None
    #: Set by :func:`run_vms` when it killed the VM for running too long.
    timed_out: bool = False
    _follower: threading.Thread | None = None

    def serial_text(self) -> str:
        """The console output so far (undecodable bytes replaced)."""
        return self.serial.read_bytes().decode(errors="replace") if self.serial.exists() else ""

    def console_tail(self, chars: int = 3000) -> str:
        """The end of the console with terminal escape sequences removed."""
        text = re.sub(r"\x1b\[[0-9;=?]*[A-Za-z]", "", self.serial_text()).replace("\r", "\n")
        return "\n".join(line for line in text.splitlines() if line.strip())[-chars:]

    def wait(self, timeout: float) -> int:
        """Wait until QEMU exits (the guest powered off); its exit code.

        Raises :class:`TimeoutError` with the console tail when ``timeout`` passes first.
        """
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"{self.spec.name} still running after {timeout:.0f}s; console:\n"
                + self.console_tail()
            ) from None
        if self._follower is not None:
            self._follower.join()
        return code

    def wait_for_console(self, pattern: str, timeout: float) -> float:
        """Wait until a console line matches ``pattern`` (a regex); seconds after start."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.first_line(pattern)
            if seen is not None:
                return seen
            if self.ended is not None or time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.spec.name}: no {pattern!r} on the console (exit {self.proc.poll()}):\n"
                    + self.console_tail()
                )
            time.sleep(0.05)

    def first_line(self, pattern: str) -> float | None:
        """Seconds after start at which a console line matching ``pattern`` first showed."""
        for t, line in list(self.lines):
            if re.search(pattern, line):
                return t - self.started
        return None

    def _follow(self) -> None:
        offset, partial = 0, b""
        while True:
            alive = self.proc.poll() is None
            if not alive and self.ended is None:
                self.ended = time.monotonic()
            if self.serial.exists():
                with self.serial.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                offset += len(chunk)
                now = time.monotonic()
                *complete, partial = (partial + chunk).split(b"\n")
                for raw in complete:
                    self.lines.append((now, raw.decode(errors="replace").rstrip("\r")))
            if not alive:
                if partial:
                    self.lines.append((time.monotonic(), partial.decode(errors="replace")))
                return
            time.sleep(0.05)


def kvm_usable() -> bool:
    """Whether /dev/kvm exists and opens read-write."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def _probe_kvm(guest: Guest, workdir: Path) -> bool:
    workdir.mkdir(parents=True, exist_ok=True)
    serial = workdir / "kvm-probe.serial"
    serial.unlink(missing_ok=True)
    argv = [
        QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-display", "none",
        "-no-reboot", "-serial", f"file:{serial}", "-kernel", str(guest.kernel),
        "-initrd", str(guest.initrd), "-append", guest.cmdline("pk_phase=probe"),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + KVM_PROBE_SECONDS
    ok = False
    while proc.poll() is None and time.monotonic() < deadline and not ok:
        ok = serial.exists() and PROBE_OK in serial.read_text(errors="replace")
        time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    return ok or (serial.exists() and PROBE_OK in serial.read_text(errors="replace"))


def accelerator(guest: Guest, cache: Path = CACHE_ROOT) -> str:
    """``kvm`` when a 64-bit kernel boots under KVM within a few seconds, else ``tcg``.

    The probe's answer is cached under ``cache`` for this host boot and QEMU binary.
    """
    forced = os.environ.get("PHOTONKICK_LAB_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if not kvm_usable():
        return "tcg"
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    qemu = shutil.which(QEMU) or QEMU
    key = hashlib.sha256(
        f"{boot_id}|{qemu}|{os.stat(qemu).st_mtime_ns}|{guest.root.name}".encode()
    ).hexdigest()[:16]
    answer = cache / f"accel-{key}"
    if answer.exists():
        return answer.read_text().strip()
    accel = "kvm" if _probe_kvm(guest, cache / f"accel-probe-{os.getpid()}") else "tcg"
    shutil.rmtree(cache / f"accel-probe-{os.getpid()}", ignore_errors=True)
    answer.write_text(accel + "\n")
    return accel


def qemu_argv(spec: VmSpec, accel: str, serial: Path, vars_copy: Path | None) -> list[str]:
    """The QEMU command line for ``spec`` (network boot first, then the disk)."""
    device, rom = NIC_DEVICES[spec.nic]
    romfile = str(ROM_DIR / rom) if spec.ipxe_rom else ""
    argv = [
        QEMU, "-name", spec.name, "-machine", "q35", "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-smp", str(spec.cpus), "-m", str(spec.memory_mib),
        "-nodefaults", "-display", "none", "-vga", "none", "-monitor", "none",
        "-chardev", f"file,id=ser0,path={serial}", "-serial", "chardev:ser0",
        "-netdev", f"tap,id=net0,ifname={spec.tap},script=no,downscript=no",
        "-device", f"{device},netdev=net0,mac={spec.mac},bootindex=1,romfile={romfile}",
    ]  # fmt: skip
    if spec.firmware == "uefi":
        if vars_copy is None:
            raise ValueError("UEFI needs a writable copy of OVMF_VARS")
        argv += [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
            # No IPv6 stack at all: its HTTP boot option otherwise waits up to a minute for
            # a DHCPv6 answer before a fall-through reaches the disk.
            "-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=n",
        ]  # fmt: skip
        if not spec.ovmf_pxe:
            argv += ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n"]
    if spec.disk is not None:
        argv += [
            "-drive", f"file={spec.disk},format=raw,if=none,id=disk0,cache=unsafe",
            "-device", "virtio-blk-pci,drive=disk0,bootindex=2",
        ]  # fmt: skip
    return argv


def start_vm(lab: NetLab, spec: VmSpec, accel: str) -> Vm:
    """Start ``spec`` inside ``lab``; the lab kills it at teardown if it is still running."""
    if shutil.which(QEMU) is None:
        raise RuntimeError(f"{QEMU} is not installed (Debian package qemu-system-x86)")
    rom = ROM_DIR / NIC_DEVICES[spec.nic][1]
    if spec.ipxe_rom and not rom.exists():
        raise RuntimeError(f"no iPXE ROM {rom} (Debian package ipxe-qemu)")
    vmdir = lab.workdir / spec.name
    vmdir.mkdir(parents=True, exist_ok=True)
    serial = vmdir / "serial.log"
    serial.unlink(missing_ok=True)
    vars_copy = None
    if spec.firmware == "uefi":
        if not OVMF_CODE.exists():
            raise RuntimeError(f"no {OVMF_CODE} (Debian package ovmf)")
        vars_copy = vmdir / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
    argv = qemu_argv(spec, accel, serial, vars_copy)
    log = vmdir / "qemu.log"
    started = time.monotonic()
    proc = lab.spawn(argv, log)
    vm = Vm(spec=spec, proc=proc, serial=serial, log=log, started=started, argv=argv)
    vm._follower = threading.Thread(target=vm._follow, daemon=True, name=f"console-{spec.name}")
    vm._follower.start()
    return vm


def run_vms(
    lab: NetLab, specs: list[VmSpec], accel: str, timeout: float, parallel: int
) -> dict[str, Vm]:
    """Boot ``specs`` with at most ``parallel`` running at once; wait for all to power off.

    Each VM gets ``timeout`` seconds from its own start; one still running then is
    killed and marked :attr:`Vm.timed_out`. Returns the VMs by name.
    """
    pending = list(specs)
    running: list[Vm] = []
    done: dict[str, Vm] = {}
    while pending or running:
        while pending and len(running) < max(1, parallel):
            vm = start_vm(lab, pending.pop(0), accel)
            running.append(vm)
        time.sleep(0.1)
        for vm in list(running):
            if vm.proc.poll() is not None:
                vm.wait(5)
            elif time.monotonic() - vm.started > timeout:
                vm.timed_out = True
                lab.stop(vm.proc)
            else:
                continue
            running.remove(vm)
            done[vm.spec.name] = vm
    return done

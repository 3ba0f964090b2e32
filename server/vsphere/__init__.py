"""The seam between photonkick and vSphere: what a VM driver does, in photonkick's own types.

``PyVmomiDriver`` (in ``photonkick.server.vsphere._pyvmomi``) is the real implementation and
the only code that touches pyVmomi; tests use in-repo fakes of ``VmDriver``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from photonkick.kickstarts.errors import PhotonkickError
from photonkick.kickstarts.spec import BOOT_MODES, FIRMWARES, NETWORK_BOOTS, BootMode, Firmware

BootDevice = Literal["ethernet", "cdrom", "disk"]
PowerState = Literal["on", "off", "suspended"]

Stop = Callable[[], bool]
"""Asked between short waits: True ends the wait (with DriverError) at once."""

PHOTON_GUEST_ID = "vmwarePhoton64Guest"
GUESTINFO_PREFIX = "guestinfo."

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_DATASTORE_PATH = re.compile(r"\[[^\]]+\] \S.*")


def is_datastore_path(path: str) -> bool:
    """True for a datastore path like ``[datastore1] iso/photon.iso``."""
    return _DATASTORE_PATH.fullmatch(path) is not None


class DriverError(PhotonkickError):
    """vSphere refused or failed an operation.

    ``fault`` is the vSphere fault's type name (``InvalidLogin``, ``DuplicateName``...) and
    ``fault_message`` its own text, when the error came from the server.
    """

    def __init__(
        self, message: str, *, fault: str | None = None, fault_message: str | None = None
    ) -> None:
        super().__init__(message)
        self.fault = fault
        self.fault_message = fault_message


class DriverTimeout(DriverError):
    """A wait ran out of time before the awaited state was reached."""


@dataclass(frozen=True)
class Placement:
    """Where new VMs go. Every field may be left out when the inventory has only one choice.

    ``cluster`` names a cluster or a standalone host's compute resource; ``resource_pool``
    and ``folder`` are ``/``-separated paths below the compute resource's root pool and the
    datacenter's VM folder; ``datacenter`` is a name or an inventory path. On a standalone
    ESXi host only ``datastore`` and ``network`` ever matter.
    """

    datacenter: str | None = None
    cluster: str | None = None
    resource_pool: str | None = None
    folder: str | None = None
    datastore: str | None = None
    network: str | None = None


@dataclass(frozen=True)
class VmRequest:
    """One VM to create for a Photon OS install.

    ``network`` and ``datastore`` override the driver's ``Placement``. ``iso`` is a
    datastore path (``[datastore] iso/photon.iso``) attached to the CD-ROM at creation;
    ``boot`` "iso" and "guestinfo" need it. ``extra_config`` goes into the VM's
    ExtraConfig verbatim (``guestinfo.*`` keys are readable by the guest).
    """

    name: str
    mac: str
    firmware: Firmware = "efi"
    cpus: int = 2
    memory_mb: int = 2048
    disk_gb: int = 40
    network: str | None = None
    datastore: str | None = None
    guest_id: str = PHOTON_GUEST_ID
    boot: BootMode = "pxe"
    iso: str | None = None
    extra_config: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.name or len(self.name) > 80 or any(c in self.name for c in "/\\%"):
            problems.append(f"name {self.name!r} must be 1-80 characters without / \\ or %")
        # A MAC outside VMware's manual range is allowed (photonkick warns about it).
        if not _MAC.fullmatch(self.mac):
            problems.append(f"mac {self.mac!r} must look like 00:50:56:00:10:01 (lower case)")
        if self.firmware not in FIRMWARES:
            problems.append(f"firmware {self.firmware!r} must be efi or bios")
        if self.boot not in BOOT_MODES:
            problems.append(f"boot {self.boot!r} must be pxe, http, iso or guestinfo")
        if self.boot not in NETWORK_BOOTS and self.iso is None:
            problems.append(f"boot {self.boot} needs an iso")
        if self.iso is not None and not is_datastore_path(self.iso):
            problems.append(f"iso {self.iso!r} must be a datastore path like [ds] iso/photon.iso")
        for field_name, count, low in (
            ("cpus", self.cpus, 1),
            ("memory_mb", self.memory_mb, 4),
            ("disk_gb", self.disk_gb, 1),
        ):
            if count < low:
                problems.append(f"{field_name} must be at least {low}, not {count}")
        if "" in self.extra_config:
            problems.append("extra_config has an empty key")
        if problems:
            raise DriverError(f"VM request {self.name!r}: " + "; ".join(problems))

    @property
    def boot_order(self) -> tuple[BootDevice, ...]:
        """The install-time boot order: the NIC or the CD-ROM first, the disk second."""
        return ("ethernet", "disk") if self.boot in NETWORK_BOOTS else ("cdrom", "disk")


@dataclass(frozen=True)
class VmHandle:
    """A VM the driver knows: its name and the server's managed object id."""

    name: str
    ref: str


@dataclass(frozen=True)
class VmState:
    """What the server reports about a VM; ``question`` is a pending question's text."""

    power: PowerState
    tools_running: bool = False
    ip: str | None = None
    question: str | None = None


class VmDriver(Protocol):
    """What photonkick needs from vSphere. Every method raises ``DriverError`` on failure.

    A method that waits for a vSphere task takes ``stop``: it is asked between waits of at
    most a second, and True ends the wait with ``DriverError`` (the task itself runs on).
    """

    def find(self, name: str) -> VmHandle | None:
        """The VM called ``name``, or None; a name used twice is an error."""
        ...

    def create(self, request: VmRequest, *, stop: Stop | None = None) -> VmHandle:
        """Create a powered-off VM with the install boot order; refuses an existing name.

        A failure leaves no VM behind.
        """
        ...

    def destroy(self, vm: VmHandle, *, stop: Stop | None = None) -> None:
        """Power the VM off if needed and delete it with its files."""
        ...

    def power_on(self, vm: VmHandle, *, stop: Stop | None = None) -> None:
        """Power the VM on; a VM that is already on stays on."""
        ...

    def power_off(self, vm: VmHandle, *, stop: Stop | None = None) -> None:
        """Power the VM off (hard); a VM that is already off stays off."""
        ...

    def set_boot_order(
        self, vm: VmHandle, devices: Sequence[BootDevice], *, stop: Stop | None = None
    ) -> None:
        """Replace the boot order, keeping the other boot options (retry, firmware flags)."""
        ...

    def upload(self, local: Path, remote_path: str, *, datastore: str | None = None) -> str:
        """Copy a local file to a datastore, replacing any file there; returns its
        datastore path (``[datastore] remote/path``)."""
        ...

    def datastore_path(self, remote_path: str, *, datastore: str | None = None) -> str:
        """``[datastore] remote_path`` for a file on the named (or the only) datastore."""
        ...

    def write_file(self, data: bytes, remote_path: str, *, datastore: str | None = None) -> str:
        """Write a small file on a datastore, replacing any file there; returns its path."""
        ...

    def read_file(
        self, remote_path: str, *, datastore: str | None = None, limit: int = 65536
    ) -> bytes | None:
        """The first ``limit`` bytes of a datastore file, or None when there is no such file."""
        ...

    def list_files(
        self, folder: str, pattern: str, *, datastore: str | None = None
    ) -> dict[str, int]:
        """The files in a datastore folder whose names match the glob ``pattern``, with
        their sizes; an absent folder has none."""
        ...

    def delete_file(
        self, remote_path: str, *, datastore: str | None = None, stop: Stop | None = None
    ) -> None:
        """Delete a datastore file; one that is already gone counts as deleted."""
        ...

    def attach_iso(self, vm: VmHandle, iso: str, *, stop: Stop | None = None) -> None:
        """Insert the ISO at datastore path ``iso`` into the VM's CD-ROM."""
        ...

    def detach_iso(self, vm: VmHandle, *, stop: Stop | None = None) -> None:
        """Empty the VM's CD-ROM."""
        ...

    def set_guestinfo(
        self, vm: VmHandle, values: Mapping[str, str], *, stop: Stop | None = None
    ) -> None:
        """Set ``guestinfo.*`` ExtraConfig keys; other keys stay as they are."""
        ...

    def clear_guestinfo(
        self, vm: VmHandle, keys: Iterable[str], *, stop: Stop | None = None
    ) -> None:
        """Remove ``guestinfo.*`` keys (vSphere removes a key set to the empty string)."""
        ...

    def guestinfo(self, vm: VmHandle) -> dict[str, str]:
        """The VM's non-empty ``guestinfo.*`` keys."""
        ...

    def watch_guestinfo(
        self,
        vm: VmHandle,
        on_change: Callable[[Mapping[str, str]], bool],
        *,
        timeout: float,
        stop: Stop | None = None,
    ) -> None:
        """Call ``on_change`` with the VM's non-empty ``guestinfo.*`` keys now and after each
        change the server reports (keys the guest sets through VMware Tools included), until
        it returns True.

        Raises ``DriverTimeout`` after ``timeout`` seconds, and ``DriverError`` when ``stop``
        says so (it is asked between waits of at most a second).
        """
        ...

    def state(self, vm: VmHandle) -> VmState:
        """Power state, VMware Tools, IP address and any pending question, read now."""
        ...

    def wait_for(
        self,
        vm: VmHandle,
        condition: Callable[[VmState], bool],
        *,
        timeout: float,
        stop: Stop | None = None,
    ) -> VmState:
        """Block until ``condition(state)`` holds and return that state.

        Raises ``DriverTimeout`` after ``timeout`` seconds, and ``DriverError`` when ``stop()``
        is True or the VM asks a question the condition does not accept.
        """
        ...

    def close(self) -> None:
        """Log out; the driver is unusable afterwards."""
        ...

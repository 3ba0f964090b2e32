"""Named fakes for fast unit tests of photonkick's own state machines.

``FakeClock`` stands in for the injectable ``Clock`` of ``photonkick.server.timeline``.
``FakeDriver`` is an in-memory ``VmDriver`` whose calls all succeed; ``FailingDriver``
fails one chosen call; ``HangingDriver`` hangs in one chosen call. They stand in for
vSphere in tests of the fleet; the pyVmomi driver itself is tested against the simulator.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, cast

from photonkick.server.timeline import Clock
from photonkick.server.vsphere import (
    BootDevice,
    DriverError,
    DriverTimeout,
    PowerState,
    Stop,
    VmDriver,
    VmHandle,
    VmRequest,
    VmState,
)


class FakeClock:
    """Wall and monotonic time that move only when a test says so (thread-safe)."""

    def __init__(self, wall: float = 1_800_000_000.0, mono: float = 1_000.0) -> None:
        self._wall = wall
        self._mono = mono
        self._lock = threading.Lock()

    def wall(self) -> float:
        """The fake ``time.time()``."""
        with self._lock:
            return self._wall

    def mono(self) -> float:
        """The fake ``time.monotonic()``."""
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        with self._lock:
            self._wall += seconds
            self._mono += seconds

    @property
    def clock(self) -> Clock:
        """This fake as the ``Clock`` that ``Timeline`` takes."""
        return Clock(wall=self.wall, mono=self.mono)


@dataclass
class FakeVm:
    """What ``FakeDriver`` keeps about one VM."""

    handle: VmHandle
    request: VmRequest
    power: PowerState = "off"
    boot_order: tuple[BootDevice, ...] = ()
    iso: str | None = None
    extra_config: dict[str, str] = field(default_factory=dict)


class FakeDriver:
    """A ``VmDriver`` over an in-memory vSphere where every call succeeds at once.

    ``calls`` lists each call as ``(method, VM or file name)``. ``on_power_on(vm)`` plays the
    guest (for example, records its callbacks in a timeline); once a VM is on, VMware Tools
    report ``guest_ip`` (None: never).
    """

    DATASTORE = "fake-ds"

    def __init__(
        self,
        on_power_on: Callable[[VmHandle], None] | None = None,
        guest_ip: str | None = "192.0.2.10",
    ) -> None:
        self.on_power_on = on_power_on
        self.guest_ip = guest_ip
        self.vms: dict[str, FakeVm] = {}
        self.files: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []
        self.closed = False
        self.before_call: Callable[[str, str], None] | None = None
        """Runs at the start of every call with its method and subject (e.g. to stop)."""
        self._lock = threading.Lock()
        self._refs = itertools.count(1)

    def _call(self, method: str, subject: str) -> None:
        with self._lock:
            self.calls.append((method, subject))
        if self.before_call is not None:
            self.before_call(method, subject)

    def _vm(self, vm: VmHandle) -> FakeVm:
        with self._lock:
            found = self.vms.get(vm.name)
        if found is None or found.handle != vm:
            raise DriverError(f"VM {vm.name!r} ({vm.ref}) does not exist")
        return found

    def called(self, subject: str) -> list[str]:
        """The methods called for one VM or file, in order."""
        with self._lock:
            return [method for method, name in self.calls if name == subject]

    def find(self, name: str) -> VmHandle | None:
        self._call("find", name)
        with self._lock:
            found = self.vms.get(name)
        return None if found is None else found.handle

    def create(self, request: VmRequest, *, stop: Stop | None = None) -> VmHandle:
        self._call("create", request.name)
        with self._lock:
            if request.name in self.vms:
                raise DriverError(
                    f"creating {request.name!r}: DuplicateName", fault="DuplicateName"
                )
            handle = VmHandle(request.name, f"vm-{next(self._refs)}")
            self.vms[request.name] = FakeVm(
                handle, request, "off", request.boot_order, request.iso, dict(request.extra_config)
            )
        return handle

    def destroy(self, vm: VmHandle, *, stop: Stop | None = None) -> None:
        self._call("destroy", vm.name)
        self._vm(vm)
        with self._lock:
            del self.vms[vm.name]

    def power_on(self, vm: VmHandle, *, stop: Stop | None = None) -> None:
        self._call("power_on", vm.name)
        self._vm(vm).power = "on"
        if self.on_power_on is not None:
            self.on_power_on(vm)

    def power_off(self, vm: VmHandle, *, stop: Stop | None = None) -> None:
        self._call("power_off", vm.name)
        self._vm(vm).power = "off"

    def set_boot_order(
        self, vm: VmHandle, devices: Sequence[BootDevice], *, stop: Stop | None = None
    ) -> None:
        self._call("set_boot_order", vm.name)
        self._vm(vm).boot_order = tuple(devices)

    def datastore_path(self, remote_path: str, *, datastore: str | None = None) -> str:
        return f"[{datastore or self.DATASTORE}] {remote_path}"

    def upload(self, local: Path, remote_path: str, *, datastore: str | None = None) -> str:
        return self._store("upload", local.read_bytes(), remote_path, datastore)

    def write_file(self, data: bytes, remote_path: str, *, datastore: str | None = None) -> str:
        return self._store("write_file", data, remote_path, datastore)

    def _store(self, method: str, data: bytes, remote_path: str, datastore: str | None) -> str:
        target = self.datastore_path(remote_path, datastore=datastore)
        self._call(method, target)
        with self._lock:
            self.files[target] = data
        return target

    def read_file(
        self, remote_path: str, *, datastore: str | None = None, limit: int = 65536
    ) -> bytes | None:
        target = self.datastore_path(remote_path, datastore=datastore)
        self._call("read_file", target)
        with self._lock:
            data = self.files.get(target)
        return None if data is None else data[:limit]

    def list_files(
        self, folder: str, pattern: str, *, datastore: str | None = None
    ) -> dict[str, int]:
        prefix = self.datastore_path(folder.rstrip("/") + "/", datastore=datastore)
        self._call("list_files", prefix + pattern)
        with self._lock:
            names = {
                p[len(prefix) :]: len(d) for p, d in self.files.items() if p.startswith(prefix)
            }
        return {n: size for n, size in names.items() if "/" not in n and fnmatch(n, pattern)}

    def delete_file(
        self, remote_path: str, *, datastore: str | None = None, stop: Stop | None = None
    ) -> None:
        target = self.datastore_path(remote_path, datastore=datastore)
        self._call("delete_file", target)
        with self._lock:
            self.files.pop(target, None)

    def attach_iso(self, vm: VmHandle, iso: str, *, stop: Stop | None = None) -> None:
        self._call("attach_iso", vm.name)
        self._vm(vm).iso = iso

    def detach_iso(self, vm: VmHandle, *, stop: Stop | None = None) -> None:
        self._call("detach_iso", vm.name)
        self._vm(vm).iso = None

    def set_guestinfo(
        self, vm: VmHandle, values: Mapping[str, str], *, stop: Stop | None = None
    ) -> None:
        self._call("set_guestinfo", vm.name)
        extra = self._vm(vm).extra_config
        for key, value in values.items():
            if value:
                extra[key] = value
            else:
                extra.pop(key, None)

    def clear_guestinfo(
        self, vm: VmHandle, keys: Iterable[str], *, stop: Stop | None = None
    ) -> None:
        self._call("clear_guestinfo", vm.name)
        extra = self._vm(vm).extra_config
        for key in keys:
            extra.pop(key, None)

    def guestinfo(self, vm: VmHandle) -> dict[str, str]:
        self._call("guestinfo", vm.name)
        extra = self._vm(vm).extra_config
        return {k: v for k, v in extra.items() if k.startswith("guestinfo.") and v}

    def state(self, vm: VmHandle) -> VmState:
        self._call("state", vm.name)
        return self._state(self._vm(vm))

    def _state(self, fake: FakeVm) -> VmState:
        running = fake.power == "on" and self.guest_ip is not None
        return VmState(fake.power, running, self.guest_ip if running else None)

    def wait_for(
        self,
        vm: VmHandle,
        condition: Callable[[VmState], bool],
        *,
        timeout: float,
        stop: Stop | None = None,
    ) -> VmState:
        self._call("wait_for", vm.name)
        fake = self._vm(vm)
        end = time.monotonic() + timeout
        while not condition(state := self._state(fake)):
            if stop is not None and stop():
                raise DriverError(f"waiting for {vm.name!r}: stopped")
            if time.monotonic() >= end:
                raise DriverTimeout(f"waiting for {vm.name!r}: no change in {timeout:.0f} s")
            time.sleep(0.01)
        return state

    def watch_guestinfo(
        self,
        vm: VmHandle,
        on_change: Callable[[Mapping[str, str]], bool],
        *,
        timeout: float,
        stop: Stop | None = None,
    ) -> None:
        self._call("watch_guestinfo", vm.name)
        end = time.monotonic() + timeout
        seen: dict[str, str] | None = None
        while True:
            now = self.guestinfo(vm)
            if now != seen and on_change(now):
                return
            seen = now
            if stop is not None and stop():
                raise DriverError(f"watching {vm.name!r}: stopped")
            if time.monotonic() >= end:
                raise DriverTimeout(f"watching {vm.name!r}: no change in {timeout:.0f} s")
            time.sleep(0.01)

    def close(self) -> None:
        self._call("close", "")
        self.closed = True


class FailingDriver:
    """A driver whose call ``method`` raises ``DriverError(message)``, the way vSphere
    refuses it; every other call goes to ``inner`` (a new ``FakeDriver`` unless given, e.g.
    the simulator's real driver for a failure the simulator cannot be made to produce)."""

    def __init__(
        self, method: str, message: str = "TaskInProgress (the VM is busy)", inner: Any = None
    ) -> None:
        self.method = method
        self.message = message
        self.inner: Any = FakeDriver() if inner is None else inner
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        if name != self.method:
            return getattr(self.inner, name)

        def fail(*args: object, **kwargs: object) -> Any:
            self.failures += 1
            raise DriverError(f"{self.method}: {self.message}")

        return fail


class HangingDriver:
    """A driver whose call ``method`` hangs, deaf to its stop check, as on a vSphere that
    stopped answering, until ``release()``; ``on_hang()`` runs as it starts hanging. Every
    other call goes to ``inner``."""

    def __init__(self, method: str, inner: Any, on_hang: Callable[[], None] = lambda: None) -> None:
        self.method = method
        self.inner = inner
        self.on_hang = on_hang
        self.hanging = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        """Let the hanging call fail now."""
        self._released.set()

    def __getattr__(self, name: str) -> Any:
        if name != self.method:
            return getattr(self.inner, name)

        def hang(*args: object, **kwargs: object) -> Any:
            self.on_hang()
            self.hanging.set()
            self._released.wait(30)
            raise DriverError(f"{self.method}: the connection was reset")

        return hang


def as_driver(driver: object) -> VmDriver:
    """A fake as the ``VmDriver`` the fleet takes."""
    return cast(VmDriver, driver)

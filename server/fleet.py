"""`photonkick up`, `rebuild` and `down`: create the spec's VMs and follow them to ready.

Each host runs in a worker (at most ``parallel`` at once): create the VM by its boot method,
power it on, then follow the timeline the boot server writes until ``ready``, ``failed`` or a
timeout. After ``installed`` the VM is switched to boot from disk and its ISO and guestinfo
kickstart are removed.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from photonkick.kickstarts.errors import PhotonkickError
from photonkick.kickstarts.kickstart import build_kickstart, dumps
from photonkick.kickstarts.spec import Host, Inventory
from photonkick.server.iso_build import remaster_iso
from photonkick.server.state import StateDir
from photonkick.server.status import host_status
from photonkick.server.timeline import FAILED, PHASES, Timeline
from photonkick.server.vsphere import DriverError, VmDriver, VmHandle, VmRequest

log = logging.getLogger("photonkick.server.fleet")
GUESTINFO_KICKSTART = ("guestinfo.kickstart.data", "guestinfo.kickstart.url")
DONE = {"ready", "failed"}


class FleetError(PhotonkickError):
    """A host cannot be brought up as asked (before anything was created for it)."""


@dataclass
class HostRun:
    """One host's progress through `up`; ``outcome`` is set when it is finished."""

    name: str
    build: int = 0
    phase: str = "queued"
    outcome: str | None = None
    detail: str = ""
    started: float = 0.0


@dataclass(frozen=True)
class UpOptions:
    """How `up` runs."""

    parallel: int = 4
    timeout: float = 3600.0
    rebuild: bool = False


class Fleet:
    """Creates and follows the VMs of one spec."""

    def __init__(
        self,
        inventory: Inventory,
        state: StateDir,
        timeline: Timeline,
        driver: VmDriver,
        *,
        on_change: Callable[[HostRun], None] | None = None,
    ) -> None:
        self.inventory = inventory
        self.state = state
        self.timeline = timeline
        self.driver = driver
        self.stop = threading.Event()
        self._on_change = on_change or (lambda run: None)
        self._uploads: dict[Path, str] = {}
        self._upload_lock = threading.Lock()

    def hosts(self, names: Sequence[str]) -> list[Host]:
        """The named hosts (all when none are named); an unknown name is an error."""
        if not names:
            return list(self.inventory.hosts)
        known = {h.name: h for h in self.inventory.hosts}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise FleetError(f"no such host in {self.inventory.source}: {', '.join(unknown)}")
        return [known[n] for n in dict.fromkeys(names)]

    def up(self, names: Sequence[str], options: UpOptions) -> list[HostRun]:
        """Bring the hosts up; returns each host's run, in spec order."""
        hosts = self.hosts(names)
        runs = [HostRun(h.name) for h in hosts]
        with ThreadPoolExecutor(max_workers=max(1, options.parallel)) as pool:
            futures = [
                pool.submit(self._up_one, h, r, options) for h, r in zip(hosts, runs, strict=True)
            ]
            try:
                wait(futures)
            except KeyboardInterrupt:
                # Ctrl-C: hosts not started yet are left alone; running ones stop at their
                # next step. Further Ctrl-C only repeat the request.
                self.stop.set()
                for future in futures:
                    future.cancel()
                while True:
                    try:
                        wait(futures)
                        break
                    except KeyboardInterrupt:
                        continue
        for run in runs:
            if run.outcome is None:
                run.outcome = "stopped"
        return runs

    def down(self, names: Sequence[str]) -> list[HostRun]:
        """Power off and delete the hosts' VMs."""
        runs = []
        for host in self.hosts(names):
            run = HostRun(host.name, self.state.build(host.name).build)
            try:
                vm = self.driver.find(host.name)
                if vm is None:
                    run.outcome = "absent"
                else:
                    self.driver.destroy(vm)
                    self.timeline.record(host.name, run.build, "vm_destroyed")
                    run.outcome = "destroyed"
            except DriverError as exc:
                run.outcome, run.detail = "error", str(exc)
            runs.append(run)
        return runs

    # -- one host --------------------------------------------------------------------------

    def _set(self, run: HostRun, phase: str, outcome: str | None = None, detail: str = "") -> None:
        run.phase = phase
        if outcome is not None:
            run.outcome = outcome
        if detail:
            run.detail = detail
        self._on_change(run)

    def _up_one(self, host: Host, run: HostRun, options: UpOptions) -> None:
        run.started = time.time()
        try:
            self._bring_up(host, run, options)
        except (DriverError, PhotonkickError) as exc:
            self._set(run, run.phase, "error", str(exc))
        except Exception as exc:  # one host's surprise must not take the fleet down
            log.exception("%s: unexpected error", host.name)
            self._set(run, run.phase, "error", f"{type(exc).__name__}: {exc}")

    def _bring_up(self, host: Host, run: HostRun, options: UpOptions) -> None:
        self._check_can_create(host)
        if self.stop.is_set():
            self._set(run, "stopped", "stopped")
            return
        existing = self.driver.find(host.name)
        if existing is not None and not options.rebuild:
            run.build = self.state.build(host.name).build
            status = host_status(self.timeline, host, run.build)
            phase = "failed" if status.failed else status.phase
            note = "" if phase == "ready" else f" (build {run.build}: {phase})"
            self._set(run, phase, "exists", f"the VM exists{note}; --rebuild replaces it")
            return
        # Everything that can fail before the VM exists (remaster, upload) runs before an
        # old VM is destroyed.
        build = self._new_build(host.name)
        run.build = build
        request = self._request(host, build)
        if existing is not None:
            if self.stop.is_set():
                self._set(run, "stopped", "stopped")
                return
            self._set(run, "destroying")
            self.driver.destroy(existing)
            self.timeline.record(host.name, build, "vm_destroyed")
        if self.stop.is_set():
            self._set(run, "stopped", "stopped")
            return
        self._set(run, "creating")
        vm = self.driver.create(request)
        self.timeline.record(host.name, build, "vm_created", vm.ref)
        if self.stop.is_set():
            self._set(run, "created", "stopped", "created, not powered on")
            return
        since = time.time()
        try:
            self.driver.power_on(vm)
        except DriverError as exc:
            self.timeline.record(host.name, build, FAILED, f"power on failed: {exc}")
            raise
        self.timeline.record(host.name, build, "vm_powered_on")
        self._set(run, "booting")
        self._follow(host, vm, run, since, options.timeout)

    def _new_build(self, name: str) -> int:
        """A new VM is a new build (new token), unless build 1 was never used."""
        current = self.state.build(name).build
        build = (
            current
            if not self.timeline.events(name, current)
            else (self.state.next_build(name).build)
        )
        self.timeline.rearm(name)
        return build

    def _request(self, host: Host, build: int) -> VmRequest:
        vs = self.inventory.vsphere
        assert vs is not None and host.mac is not None
        extra: dict[str, str] = {}
        iso = None
        if host.boot != "pxe":
            kickstart = dumps(build_kickstart(host, self.inventory, self.state.build(host.name)))
            if host.boot == "guestinfo":
                iso = self._upload_once(self._base_iso(host))
                extra["guestinfo.kickstart.data"] = base64.b64encode(kickstart.encode()).decode()
            else:
                iso = self._host_iso(host, kickstart.encode(), build)
        return VmRequest(
            name=host.name,
            mac=host.mac,
            firmware="bios" if host.firmware == "bios" else "efi",
            cpus=host.vm.cpus,
            memory_mb=host.vm.memory_mb,
            disk_gb=host.vm.disk_gb,
            network=host.vm.network or vs.network,
            datastore=host.vm.datastore or vs.datastore,
            boot="pxe" if host.boot == "pxe" else ("iso" if host.boot == "iso" else "guestinfo"),
            iso=iso,
            extra_config=extra,
        )

    def _check_can_create(self, host: Host) -> None:
        """Refuse before anything is destroyed or created when the spec lacks something."""
        if host.mac is None:
            raise FleetError(
                f"{host.name}: give it a mac (00:50:56:00:00:00 to "
                "00:50:56:3f:ff:ff): its VM's NIC gets that manual address"
            )
        if host.boot != "pxe":
            self._base_iso(host)

    def _base_iso(self, host: Host) -> Path:
        vs = self.inventory.vsphere
        assert vs is not None
        if vs.iso is None or not vs.iso.is_file():
            raise FleetError(
                f"{host.name}: boot: {host.boot} needs vsphere.iso, the Photon ISO "
                f"file ({vs.iso or 'not set'})"
            )
        return vs.iso

    def _host_iso(self, host: Host, kickstart: bytes, build: int) -> str:
        """Remaster the Photon ISO for this host and upload it."""
        local = self.state.path / "iso" / f"{host.name}-build{build}.iso"
        local.parent.mkdir(parents=True, exist_ok=True)
        remaster_iso(self._base_iso(host), kickstart, local)
        vs = self.inventory.vsphere
        assert vs is not None
        return self.driver.upload(
            local,
            f"{vs.iso_folder}/{host.name}-build{build}.iso",
            datastore=host.vm.datastore or vs.datastore,
        )

    def _upload_once(self, local: Path) -> str:
        vs = self.inventory.vsphere
        assert vs is not None
        with self._upload_lock:
            if local not in self._uploads:
                self._uploads[local] = self.driver.upload(
                    local, f"{vs.iso_folder}/{local.name}", datastore=vs.datastore
                )
            return self._uploads[local]

    def _follow(self, host: Host, vm: VmHandle, run: HostRun, since: float, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        done = threading.Event()
        guest = threading.Thread(
            target=self._watch_guest,
            args=(host, vm, run.build, deadline, done),
            name=f"guest-{host.name}",
            daemon=True,
        )
        guest.start()
        try:
            self._follow_timeline(host, vm, run, since, timeout, deadline)
        finally:
            done.set()
            guest.join(5)

    def _follow_timeline(
        self, host: Host, vm: VmHandle, run: HostRun, since: float, timeout: float, deadline: float
    ) -> None:
        seen: set[str] = set()
        kinds = (set(PHASES) - {"vm_created"}) | {FAILED}
        while True:
            event = self.timeline.wait_for(
                host.name,
                run.build,
                kinds - seen,
                since=since,
                timeout=max(0.0, deadline - time.monotonic()),
                stop=self.stop,
            )
            if event is None:
                outcome = "stopped" if self.stop.is_set() else "timeout"
                detail = f"no ready after {timeout:.0f} s" if outcome == "timeout" else ""
                self._set(run, run.phase, outcome, detail)
                return
            seen.add(event.kind)
            if event.kind == "installed":
                self._after_install(host, vm, run)
            if event.kind in DONE:
                reason = event.detail.split("\n", 1)[0] if event.kind == "failed" else ""
                self._set(run, event.kind, event.kind, reason)
                return
            self._set(run, event.kind)

    def _after_install(self, host: Host, vm: VmHandle, run: HostRun) -> None:
        """Boot from disk from now on; the installer ISO and kickstart are no longer needed.

        A failure here is reported but does not stop following: the install goes on.
        """
        try:
            self.driver.set_boot_order(vm, ["disk"])
            if host.boot != "pxe":
                self.driver.detach_iso(vm)
            if host.boot == "guestinfo":
                self.driver.clear_guestinfo(vm, GUESTINFO_KICKSTART)
        except DriverError as exc:
            log.warning("%s: after install: %s", host.name, exc)
            run.detail = f"after install: {exc}"
            self.timeline.record(host.name, run.build, "vm_reconfigure_failed", str(exc))

    def _watch_guest(
        self, host: Host, vm: VmHandle, build: int, deadline: float, done: threading.Event
    ) -> None:
        """Record when VMware Tools run with an IP (a milestone, not readiness)."""
        stop = threading.Event()

        def watch_stop() -> None:
            while not (done.wait(0.5) or self.stop.is_set()):
                pass
            stop.set()

        threading.Thread(target=watch_stop, daemon=True).start()
        try:
            state = self.driver.wait_for(
                vm,
                lambda s: s.tools_running and s.ip is not None,
                timeout=max(0.0, deadline - time.monotonic()),
                stop=stop,
            )
            self.timeline.record(host.name, build, "guest_ip", state.ip or "")
        except DriverError as exc:
            log.debug("%s: no guest IP: %s", host.name, exc)

"""`photonkick up`, `rebuild` and `down`: create the spec's VMs and follow them to ready.

Each host runs in a worker (at most ``parallel`` at once): create the VM by its boot method,
power it on, then follow the timeline the boot server writes until ``ready``, ``failed`` or a
timeout. After ``installed`` the VM is switched to boot from disk and its ISO and guestinfo
kickstart are removed; a host whose steps failed fails, and the next `up` finishes them.

Every vSphere task wait asks the host's stop check (Ctrl-C, or its ``--timeout``) between
short waits, and `up` returns within ``STOP_GRACE`` seconds of a stop even when a call to
vSphere hangs: that worker is abandoned (its threads are daemons).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from photonkick.kickstarts.errors import PhotonkickError, UsageError
from photonkick.kickstarts.kickstart import build_kickstart, dumps
from photonkick.kickstarts.spec import NETWORK_BOOTS, Host, Inventory
from photonkick.pxe.dhcp import vm_http_boot_settings
from photonkick.server.guestinfo_channel import (
    VM_SETTINGS,
    GuestinfoChannel,
    catch_up,
    wait_closed,
    watching_guestinfo,
)
from photonkick.server.host_status import host_status
from photonkick.server.iso_build import remaster_iso
from photonkick.server.state_dir import StateDir
from photonkick.server.timeline import FAILED, PHASES, Timeline
from photonkick.server.vsphere import (
    DriverError,
    Stop,
    VmDriver,
    VmHandle,
    VmRequest,
    VmState,
)

log = logging.getLogger("photonkick.server.fleet")
GUESTINFO_KICKSTART = ("guestinfo.kickstart.data", "guestinfo.kickstart.url")
DONE = {"ready", "failed"}
AFTER_INSTALL_DONE = "vm_after_install"
AFTER_INSTALL_FAILED = "vm_reconfigure_failed"
STOP_GRACE = 0.5
"""Seconds `up` waits for its workers after a stop before it returns without them."""
_HASH_CHUNK = 1 << 20


class FleetError(PhotonkickError):
    """A host cannot be brought up as asked (before anything was created for it)."""


class FleetInputError(FleetError, UsageError):
    """The command line or the spec asks for something impossible (nothing was done)."""


class _Stopped(Exception):
    """A stop came between two steps of one host: it ends ``stopped`` at ``phase``."""

    def __init__(self, phase: str, detail: str) -> None:
        super().__init__(phase, detail)
        self.phase = phase
        self.detail = detail


def select_hosts(inventory: Inventory, names: Sequence[str]) -> list[Host]:
    """The named hosts (all when none are named); an unknown name is a FleetInputError."""
    if not names:
        return list(inventory.hosts)
    known = {h.name: h for h in inventory.hosts}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise FleetInputError(
            f"no such host in {inventory.source}: {', '.join(unknown)} (hosts: {', '.join(known)})"
        )
    return [known[n] for n in dict.fromkeys(names)]


def creation_problem(inventory: Inventory, host: Host) -> str | None:
    """What the spec lacks to create this host's VM, naming the spec key; None if nothing."""
    if host.mac is None:
        return (
            f"hosts[{list(inventory.hosts).index(host)}].mac: {host.name} needs a mac "
            "(00:50:56:00:00:00 to "
            "00:50:56:3f:ff:ff): its VM's NIC gets that manual address"
        )
    vs = inventory.vsphere
    if host.boot not in NETWORK_BOOTS and (vs is None or vs.iso is None or not vs.iso.is_file()):
        where = vs.iso if vs is not None and vs.iso is not None else "not set"
        return f"{host.name}: boot: {host.boot} needs vsphere.iso, the Photon ISO file ({where})"
    return None


Outcome = Literal["ready", "failed", "timeout", "stopped", "error", "exists", "absent", "destroyed"]
"""How a host ended: `up` gives the first six (``exists``: its VM was there already),
`down` ``destroyed``, ``absent`` or ``error``."""


@dataclass
class HostRun:
    """One host's progress through `up`; ``outcome`` is set when it is finished."""

    name: str
    build: int = 0
    phase: str = "queued"
    outcome: Outcome | None = None
    detail: str = ""
    started: float = 0.0
    deadline: float = 0.0
    """The clock's monotonic time at which the host's ``--timeout`` runs out (0: not
    started); ``started`` is the clock's wall time when its work began."""


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
        self.clock = timeline.clock
        """Deadlines and event times use the timeline's clock, so that they agree."""
        self.stop = threading.Event()
        self._on_change = on_change or (lambda run: None)
        self._uploads: dict[Path, str] = {}
        self._upload_lock = threading.Lock()
        self._runs_lock = threading.Lock()
        self._reports: dict[str, GuestinfoChannel] = {}

    def hosts(self, names: Sequence[str]) -> list[Host]:
        """The named hosts (all when none are named); an unknown name is an error."""
        return select_hosts(self.inventory, names)

    def up(self, names: Sequence[str], options: UpOptions) -> list[HostRun]:
        """Bring the hosts up; returns each host's run, in spec order.

        After a stop (Ctrl-C here, or ``self.stop`` set) hosts not started yet are left
        alone, running ones end at their next check, and this returns within
        ``STOP_GRACE`` seconds; a host still inside a vSphere call then counts as stopped.
        """
        hosts = self.hosts(names)
        runs = [HostRun(h.name) for h in hosts]
        queue = list(zip(hosts, runs, strict=True))
        lock = threading.Lock()
        abandoned: set[str] = set()

        def work() -> None:
            while not self.stop.is_set():
                with lock:
                    if not queue:
                        return
                    host, run = queue.pop(0)
                self._up_one(host, run, options)

        def start_worker() -> threading.Thread:
            worker = threading.Thread(target=work, name="up-worker", daemon=True)
            worker.start()
            return worker

        workers = [start_worker() for _ in range(max(1, min(options.parallel, len(hosts))))]
        try:
            while not self.stop.is_set() and any(w.is_alive() for w in workers):
                time.sleep(0.1)
                for run in runs:
                    if run.outcome is None and 0 < run.deadline < self.clock.mono() - STOP_GRACE:
                        # Its worker hangs in a vSphere call: report the host, and let a
                        # new worker take its place in the queue.
                        self._set(
                            run,
                            run.phase,
                            "timeout",
                            f"no ready after {options.timeout:.0f} s "
                            f"(a vSphere call was still running while {run.phase})",
                        )
                        abandoned.add(run.name)
                        workers.append(start_worker())
                if all(r.outcome is not None for r in runs):
                    break
        except KeyboardInterrupt:
            self.stop.set()
        if self.stop.is_set():
            _join_within(workers, STOP_GRACE)
        else:
            # A finished host's worker may still be clearing its guestinfo reports.
            wait_closed(
                [
                    self._reports[r.name]
                    for r in runs
                    if r.name not in abandoned and r.name in self._reports
                ]
            )
        for run in runs:
            self._set(
                run, run.phase, "stopped", "" if run.phase == "queued" else f"while {run.phase}"
            )
        return runs

    def down(self, names: Sequence[str]) -> list[HostRun]:
        """Power off and delete the hosts' VMs and their per-build ISOs."""
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
                self._remove_host_isos(host, keep=None)
            except DriverError as exc:
                run.outcome, run.detail = "error", str(exc)
            runs.append(run)
        return runs

    # -- one host --------------------------------------------------------------------------

    def _set(
        self, run: HostRun, phase: str, outcome: Outcome | None = None, detail: str = ""
    ) -> None:
        """Show a host's progress; its first outcome is final (a worker that comes back
        from a hung call after its host was reported does not change the report)."""
        with self._runs_lock:
            if run.outcome is not None:
                return
            run.phase = phase
            run.outcome = outcome
            if detail:
                run.detail = detail
        self._on_change(run)

    def _up_one(self, host: Host, run: HostRun, options: UpOptions) -> None:
        run.started = self.clock.wall()
        deadline = run.deadline = self.clock.mono() + options.timeout

        def stopped() -> bool:
            return self.stop.is_set() or self.clock.mono() >= deadline

        try:
            self._bring_up(host, run, options, stopped)
        except _Stopped as stop:
            self._set(run, stop.phase, "stopped", stop.detail)
        except (DriverError, PhotonkickError) as exc:
            if self.stop.is_set():
                self._set(run, run.phase, "stopped", f"while {run.phase}")
            elif stopped():
                self._set(run, run.phase, "timeout", f"no ready after {options.timeout:.0f} s")
            else:
                self._set(run, run.phase, "error", str(exc))
        except Exception as exc:  # one host's surprise must not take the fleet down
            log.exception("%s: unexpected error", host.name)
            self._set(run, run.phase, "error", f"{type(exc).__name__}: {exc}")

    def _checkpoint(self, phase: str = "stopped", detail: str = "") -> None:
        """Between two steps of a host: after a stop, end it there (as ``stopped`` at
        ``phase``) instead of taking the next step."""
        if self.stop.is_set():
            raise _Stopped(phase, detail)

    def _bring_up(self, host: Host, run: HostRun, options: UpOptions, stopped: Stop) -> None:
        self._check_can_create(host)
        self._checkpoint()
        existing = self.driver.find(host.name)
        if existing is not None and not options.rebuild:
            self._existing(host, existing, run, stopped)
            return
        # Everything that can fail before the VM exists (remaster, upload) runs before an
        # old VM is destroyed.
        build = self._new_build(host.name)
        run.build = build
        request = self._request(host, build)
        if existing is not None:
            self._checkpoint()
            self._set(run, "destroying")
            self.driver.destroy(existing, stop=stopped)
            self.timeline.record(host.name, build, "vm_destroyed")
        self._checkpoint()
        self._set(run, "creating")
        vm = self.driver.create(request, stop=stopped)
        self.timeline.record(host.name, build, "vm_created", vm.ref)
        self._remove_host_isos(host, keep=build)
        self._checkpoint("created", "created, not powered on")
        since = self.clock.wall()
        try:
            self.driver.power_on(vm, stop=stopped)
        except DriverError as exc:
            if not stopped():
                self.timeline.record(host.name, build, FAILED, f"power on failed: {exc}")
            raise
        self.timeline.record(host.name, build, "vm_powered_on")
        self._set(run, "booting")
        guestinfo = watching_guestinfo(
            self.driver,
            self.timeline,
            host.name,
            vm,
            build,
            deadline=run.deadline,
            stop=self.stop.is_set,
        )
        with self._watching_guest(host, vm, run), guestinfo as reports:
            self._reports[host.name] = reports
            self._follow(host, vm, run, since, options.timeout, stopped)

    def _existing(self, host: Host, vm: VmHandle, run: HostRun, stopped: Stop) -> None:
        """A VM that is there already: left alone, except that after-install steps a
        previous run could not finish are finished now."""
        run.build = self.state.build(host.name).build
        catch_up(self.driver, self.timeline, host.name, vm, run.build)  # reports through Tools
        status = host_status(self.timeline, host, run.build)
        phase = "failed" if status.failed else status.phase
        if self._needs_after_install(host.name, run.build):
            self._set(run, "after install")
            problem = self._after_install(host, vm, run, stopped)
            if problem:
                self._set(run, phase, "failed", problem)
                return
            note = "" if phase == "ready" else f" (build {run.build}: {phase})"
            self._set(
                run, phase, "exists", f"the VM exists{note}; finished its after-install steps"
            )
            return
        note = "" if phase == "ready" else f" (build {run.build}: {phase})"
        self._set(run, phase, "exists", f"the VM exists{note}; --rebuild replaces it")

    def _needs_after_install(self, name: str, build: int) -> bool:
        """Whether this build reported `installed` and its after-install steps did not all
        succeed since."""
        pending = False
        for event in self.timeline.events(name, build):
            if event.kind == "installed":
                pending = True
            elif event.kind == AFTER_INSTALL_DONE:
                pending = False
        return pending

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
        extra: dict[str, str] = dict(VM_SETTINGS)  # phases through VMware Tools
        iso = None
        if host.boot == "http":
            extra.update(vm_http_boot_settings(self.inventory))
        if host.boot not in NETWORK_BOOTS:
            kickstart = dumps(build_kickstart(host, self.inventory, self.state.build(host.name)))
            if host.boot == "guestinfo":
                iso = self._stock_iso(self._base_iso(host))
                extra["guestinfo.kickstart.data"] = base64.b64encode(kickstart.encode()).decode()
            else:
                iso = self._host_iso(host, kickstart.encode(), build)
        return VmRequest(
            name=host.name,
            mac=host.mac,
            firmware=host.firmware,
            cpus=host.vm.cpus,
            memory_mb=host.vm.memory_mb,
            disk_gb=host.vm.disk_gb,
            network=host.vm.network or vs.network,
            datastore=host.vm.datastore or vs.datastore,
            boot=host.boot,
            iso=iso,
            extra_config=extra,
        )

    def _check_can_create(self, host: Host) -> None:
        """Refuse before anything is destroyed or created when the spec lacks something."""
        problem = creation_problem(self.inventory, host)
        if problem:
            raise FleetInputError(problem)

    def _base_iso(self, host: Host) -> Path:
        self._check_can_create(host)
        vs = self.inventory.vsphere
        assert vs is not None and vs.iso is not None
        return vs.iso

    # -- ISOs ------------------------------------------------------------------------------

    def _host_iso(self, host: Host, kickstart: bytes, build: int) -> str:
        """Remaster the Photon ISO for this host and upload it; older local builds go."""
        folder = self.state.path / "iso"
        local = folder / f"{host.name}-build{build}.iso"
        folder.mkdir(parents=True, exist_ok=True)
        remaster_iso(self._base_iso(host), kickstart, local)
        for old in folder.glob(f"{host.name}-build*.iso"):
            if _iso_build(old.name, host.name) not in (None, build):
                old.unlink(missing_ok=True)
        vs = self.inventory.vsphere
        assert vs is not None
        return self.driver.upload(
            local,
            f"{vs.iso_folder}/{local.name}",
            datastore=host.vm.datastore or vs.datastore,
        )

    def _remove_host_isos(self, host: Host, keep: int | None) -> None:
        """Delete the host's per-build ISOs on the datastore, except build ``keep``'s
        (their VMs are gone); a failure is logged, not fatal."""
        vs = self.inventory.vsphere
        assert vs is not None
        datastore = host.vm.datastore or vs.datastore
        try:
            found = self.driver.list_files(
                vs.iso_folder, f"{host.name}-build*.iso", datastore=datastore
            )
            for name in sorted(found):
                if _iso_build(name, host.name) not in (None, keep):
                    self.driver.delete_file(f"{vs.iso_folder}/{name}", datastore=datastore)
        except DriverError as exc:
            log.warning("%s: old ISOs stay on the datastore: %s", host.name, exc)
        if keep is None:
            for old in (self.state.path / "iso").glob(f"{host.name}-build*.iso"):
                if _iso_build(old.name, host.name) is not None:
                    old.unlink(missing_ok=True)

    def _stock_iso(self, local: Path) -> str:
        """The stock Photon ISO on the datastore: uploaded once, then reused while its size
        and the SHA-256 in the ``.sha256`` file beside it match the local file."""
        vs = self.inventory.vsphere
        assert vs is not None
        remote = f"{vs.iso_folder}/{local.name}"
        with self._upload_lock:
            if local in self._uploads:
                return self._uploads[local]
            size, digest = self._local_sha256(local)
            stamp = f"{digest}  {size}\n".encode()
            sidecar = f"{remote}.sha256"
            there = self.driver.list_files(vs.iso_folder, local.name, datastore=vs.datastore)
            if (
                there.get(local.name) == size
                and self.driver.read_file(sidecar, datastore=vs.datastore) == stamp
            ):
                target = self.driver.datastore_path(remote, datastore=vs.datastore)
                log.info("%s is on the datastore already as %s", local, target)
            else:
                self.driver.delete_file(sidecar, datastore=vs.datastore)
                target = self.driver.upload(local, remote, datastore=vs.datastore)
                self.driver.write_file(stamp, sidecar, datastore=vs.datastore)
            self._uploads[local] = target
            return target

    def _local_sha256(self, local: Path) -> tuple[int, str]:
        """Size and SHA-256 of a local file, hashed again only when its size or mtime
        changed (the last result is kept in ``<state>/iso/<name>.sha256``)."""
        stat = local.stat()
        key = f"{stat.st_size} {stat.st_mtime_ns}"
        cache = self.state.path / "iso" / f"{local.name}.sha256"
        try:
            cached_key, digest = cache.read_text().rsplit(" ", 1)
            if cached_key == key and re.fullmatch(r"[0-9a-f]{64}", digest.strip()):
                return stat.st_size, digest.strip()
        except (OSError, ValueError):
            pass
        sha = hashlib.sha256()
        with local.open("rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                sha.update(chunk)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(f"{key} {sha.hexdigest()}\n")
        return stat.st_size, sha.hexdigest()

    # -- following -------------------------------------------------------------------------

    @contextmanager
    def _watching_guest(self, host: Host, vm: VmHandle, run: HostRun) -> Iterator[None]:
        """Record the guest's IP in the background while the block runs."""
        done = threading.Event()
        guest = threading.Thread(
            target=self._watch_guest,
            args=(host, vm, run.build, run.deadline, done),
            name=f"guest-{host.name}",
            daemon=True,
        )
        guest.start()
        try:
            yield
        finally:
            done.set()
            guest.join(STOP_GRACE)

    def _follow(
        self, host: Host, vm: VmHandle, run: HostRun, since: float, timeout: float, stopped: Stop
    ) -> None:
        """Follow the timeline to ready, failed, the host's deadline or a stop."""
        seen: set[str] = set()
        kinds = (set(PHASES) - {"vm_created"}) | {FAILED}
        problem = ""
        while True:
            event = self.timeline.wait_for(
                host.name,
                run.build,
                kinds - seen,
                since=since,
                timeout=max(0.0, run.deadline - self.clock.mono()),
                stop=self.stop,
            )
            if event is None or stopped():
                outcome: Outcome = "stopped" if self.stop.is_set() else "timeout"
                detail = f"no ready after {timeout:.0f} s" if outcome == "timeout" else ""
                self._set(run, run.phase, outcome, problem or detail)
                return
            seen.add(event.kind)
            if event.kind == "installed":
                self._set(run, "installed")
                problem = self._after_install(host, vm, run, stopped)
                if stopped():
                    continue
            if event.kind in DONE:
                if problem:
                    # The guest may be ready, but its VM still boots the installer.
                    self._set(run, event.kind, "failed", problem)
                elif event.kind == "ready":
                    self._set(run, "ready", "ready")
                else:
                    self._set(run, "failed", "failed", event.detail.split("\n", 1)[0])
                return
            self._set(run, event.kind)

    def _after_install(self, host: Host, vm: VmHandle, run: HostRun, stopped: Stop) -> str:
        """Boot from disk from now on; the installer ISO and kickstart are no longer needed.

        Every step is tried; the failures come back as one reason ("" when all worked) and
        are recorded, so a later `up` finishes them. Following goes on either way.
        """
        steps: list[tuple[str, Callable[[], None]]] = [
            ("boot order", lambda: self.driver.set_boot_order(vm, ["disk"], stop=stopped))
        ]
        if host.boot not in NETWORK_BOOTS:
            steps.append(("ISO detach", lambda: self.driver.detach_iso(vm, stop=stopped)))
        if host.boot == "guestinfo":
            steps.append(
                (
                    "guestinfo clear",
                    lambda: self.driver.clear_guestinfo(vm, GUESTINFO_KICKSTART, stop=stopped),
                )
            )
        failures = []
        for label, step in steps:
            if stopped():
                failures.append(f"{label}: stopped")
                continue
            try:
                step()
            except DriverError as exc:
                failures.append(f"{label}: {exc}")
        if not failures:
            self.timeline.record(host.name, run.build, AFTER_INSTALL_DONE)
            return ""
        problem = (
            "after install: "
            + "; ".join(failures)
            + " (the VM may boot the installer again; `up` retries these steps)"
        )
        log.warning("%s: %s", host.name, problem)
        self.timeline.record(host.name, run.build, AFTER_INSTALL_FAILED, problem)
        return problem

    def _watch_guest(
        self, host: Host, vm: VmHandle, build: int, deadline: float, done: threading.Event
    ) -> None:
        """Record when VMware Tools run with an IP (a milestone, not readiness); ends when
        following the host ends (``done``) or at a stop."""

        def has_ip(state: VmState) -> bool:
            return state.tools_running and state.ip is not None

        state: VmState | None = None
        try:
            state = self.driver.wait_for(
                vm,
                has_ip,
                timeout=max(0.0, deadline - self.clock.mono()),
                stop=lambda: done.is_set() or self.stop.is_set(),
            )
        except DriverError as exc:
            if done.is_set() and not self.stop.is_set():
                # Following ended (ready) between two polls: the address may be there now.
                with contextlib.suppress(DriverError):
                    state = self.driver.state(vm)
            if state is None or not has_ip(state):
                log.debug("%s: no guest IP: %s", host.name, exc)
                return
        if state.ip is not None:
            self.timeline.record(host.name, build, "guest_ip", state.ip)


_BUILD_ISO = re.compile(r"(?P<host>.+)-build(?P<build>[0-9]+)\.iso")


def _iso_build(file_name: str, host: str) -> int | None:
    """The build number of one of ``host``'s per-build ISO files, or None for other files."""
    match = _BUILD_ISO.fullmatch(file_name)
    return int(match["build"]) if match and match["host"] == host else None


def _join_within(threads: Sequence[threading.Thread], seconds: float) -> None:
    """Join threads for at most ``seconds`` in all; Ctrl-C meanwhile only repeats a stop."""
    end = time.monotonic() + seconds
    for thread in threads:
        while thread.is_alive() and (left := end - time.monotonic()) > 0:
            try:
                thread.join(left)
            except KeyboardInterrupt:
                continue

"""VMware Tools as a second status channel: phases the guest writes to ``guestinfo.photonkick.*``.

A VM on an isolated network cannot call photonkick back over HTTP, but with VMware Tools it
can set guestinfo keys the host sees in ``config.extraConfig``. The kickstart's postinstall
and first-boot scripts set ``guestinfo.photonkick.<phase>`` (``installed``, ``firstboot``,
``ready``, ``failed``) to ``"<build>"`` or, for ``failed``, ``"<build> <reason>"``; one key per
phase, so no phase is lost when two follow each other between two updates. `up` follows the
keys with the property collector and records each report as the HTTP callback would, through
``Timeline.record_callback``: whichever channel brings a phase first records it, the other's
copy is a replay and stores nothing. The values carry no secret (anyone who can read the VM's
configuration in vSphere can read them), and the keys are cleared when the build ends.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from photonkick.server.log_safety import escape_controls, redact_tokens
from photonkick.server.timeline import FAILED, StoreUnavailable, Timeline
from photonkick.server.vsphere import DriverError, DriverTimeout, Stop, VmDriver, VmHandle

log = logging.getLogger("photonkick.server.guestinfo_channel")

PREFIX = "guestinfo.photonkick."
REPORTED = ("installed", "firstboot", "ready", FAILED)
"""The phases a guest reports, in the order they are recorded when several are new."""
KEYS = tuple(PREFIX + phase for phase in REPORTED)
CLIENT = "guestinfo"
"""The timeline's ``client`` of an event that came through this channel."""
MAX_REASON = 200
VM_SETTINGS = {"isolation.tools.setinfo.disable": "FALSE"}
"""ExtraConfig that lets the guest set guestinfo keys even where a host-wide hardening
template disables it by default (the keys above are the only ones the scripts set)."""
REREAD_EVERY = 30.0
"""Seconds after which a watch with no news starts again (and so reads the keys again)."""
CLEAR_GRACE = 5.0
"""Seconds the end of a build waits for the keys to be cleared."""
_VALUE = re.compile(r"([0-9]{1,9})(?: (.*))?", re.DOTALL)


@dataclass(frozen=True)
class GuestReport:
    """One phase a guest wrote: its build and, for ``failed``, its reason."""

    phase: str
    build: int
    reason: str = ""


def parse_reports(values: Mapping[str, str]) -> list[GuestReport]:
    """The well-formed reports among a VM's guestinfo keys, in ``REPORTED`` order.

    Values come from the guest: one that does not read ``<build>[ <reason>]`` is ignored,
    and a reason is cut to ``MAX_REASON`` characters with control characters escaped and
    anything shaped like a token redacted.
    """
    reports = []
    for phase in REPORTED:
        value = values.get(PREFIX + phase)
        match = _VALUE.fullmatch(value or "")
        if match is None:
            if value:
                log.debug("ignored %s%s: not <build>[ <reason>]", PREFIX, phase)
            continue
        reason = ""
        if phase == FAILED:
            reason = redact_tokens(escape_controls((match[2] or "").strip()))[:MAX_REASON]
            reason = reason or "reported through VMware Tools, without a reason"
        reports.append(GuestReport(phase, int(match[1]), reason))
    return reports


class GuestinfoChannel:
    """Records one build's guestinfo reports in the timeline, each once."""

    def __init__(self, timeline: Timeline, host: str, build: int) -> None:
        self.timeline = timeline
        self.host = host
        self.build = build
        self._taken: set[GuestReport] = set()
        self.closed = threading.Event()
        """Set once the build has ended and its keys were cleared (or could not be)."""

    def take(self, values: Mapping[str, str]) -> bool:
        """Record this build's new reports among ``values``; True once the guest has
        reported ``ready`` or ``failed`` (nothing more will come)."""
        finished = False
        for report in parse_reports(values):
            if report.build != self.build:
                continue  # a report of an earlier install of this VM
            if report not in self._taken:
                self._taken.add(report)
                self._record(report)
            finished = finished or report.phase in ("ready", FAILED)
        return finished

    def _record(self, report: GuestReport) -> None:
        """Record one report as its HTTP callback would be recorded."""
        try:
            stored = self.timeline.record_callback(
                self.host, self.build, report.phase, report.reason, CLIENT
            )
        except StoreUnavailable as exc:
            # The timeline holds it and stores it once the database takes writes again.
            log.warning(
                "%s: %s through VMware Tools not stored yet: %s", self.host, report.phase, exc
            )
            return
        if stored is not None:
            log.info(
                "%s: %s through VMware Tools%s",
                self.host,
                stored.kind,
                f": {report.reason}" if report.reason else "",
            )


@contextmanager
def watching_guestinfo(
    driver: VmDriver,
    timeline: Timeline,
    host: str,
    vm: VmHandle,
    build: int,
    *,
    deadline: float,
    stop: Stop,
) -> Iterator[GuestinfoChannel]:
    """Record the VM's guestinfo reports in the background while the block runs, then
    clear the keys (the build has ended).

    ``deadline`` is a ``time.monotonic()`` time; ``stop`` ends the watch (Ctrl-C) and also
    means the keys are cleared without waiting for vSphere to confirm it.
    """
    channel = GuestinfoChannel(timeline, host, build)
    done = threading.Event()

    def watch() -> None:
        # Each new watch starts with the keys as they are: restarting it now and then also
        # reads them afresh, should a host ever change them without telling the collector.
        while (left := deadline - time.monotonic()) > 0:
            try:
                driver.watch_guestinfo(
                    vm,
                    channel.take,
                    timeout=min(left, REREAD_EVERY),
                    stop=lambda: done.is_set() or stop(),
                )
                return
            except DriverTimeout:
                continue
            except DriverError as exc:
                log.debug("%s: guestinfo no longer followed: %s", vm.name, exc)
                return
            except Exception:  # the HTTP channel and the deadline still work without it
                log.exception("%s: guestinfo no longer followed", vm.name)
                return

    watcher = threading.Thread(target=watch, name=f"guestinfo-{vm.name}", daemon=True)
    watcher.start()
    try:
        yield channel
    finally:
        done.set()  # the watcher ends at its next wait slice; the keys need not wait for it
        clear_reports(driver, vm, stop=stop)
        channel.closed.set()


def catch_up(driver: VmDriver, timeline: Timeline, host: str, vm: VmHandle, build: int) -> None:
    """Record what an existing VM's guest reported through Tools while nobody followed it,
    and clear the keys once the guest has reported the end of its build."""
    try:
        values = driver.guestinfo(vm)
    except DriverError as exc:
        log.warning("%s: cannot read its guestinfo reports: %s", host, exc)
        return
    if not any(key in values for key in KEYS):
        return
    if GuestinfoChannel(timeline, host, build).take(values):
        clear_reports(driver, vm, stop=lambda: False)


def wait_closed(channels: Iterable[GuestinfoChannel], seconds: float = CLEAR_GRACE) -> None:
    """Wait at most ``seconds`` in all for the channels' builds to end and clear their keys."""
    end = time.monotonic() + seconds
    for channel in channels:
        channel.closed.wait(max(0.0, end - time.monotonic()))


def clear_reports(driver: VmDriver, vm: VmHandle, *, stop: Stop) -> None:
    """Remove the ``guestinfo.photonkick.*`` keys; a failure is logged, not fatal."""
    end = time.monotonic() + CLEAR_GRACE
    try:
        driver.clear_guestinfo(vm, KEYS, stop=lambda: stop() or time.monotonic() > end)
    except DriverError as exc:
        log.warning(
            "%s: the guestinfo.photonkick.* keys may still be set (readable in vSphere): %s",
            vm.name,
            exc,
        )

"""Each host's progress, summarized from its timeline for the API, dashboard and metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from photonkick.kickstarts.spec import Host
from photonkick.server.package_progress import PackageCount
from photonkick.server.timeline import (
    ALARM,
    FAILED,
    PHASES,
    Event,
    Timeline,
    phase_offsets,
    since_rearm,
    time_to_ready,
)


@dataclass(frozen=True)
class HostStatus:
    """Where one build of a host stands."""

    name: str
    mac: str | None
    boot: str
    build: int
    phase: str
    failed: str | None
    offsets: dict[str, float]
    time_to_ready: float | None
    events: list[Event] = field(repr=False)
    alarms: tuple[str, ...] = ()
    """Refused secrets fetches of this build: someone else may hold its secrets."""
    packages: PackageCount | None = None
    """RPMs this build's installer fetched from photonkick so far."""

    def to_json(self, *, with_events: bool = False) -> dict[str, Any]:
        """The API form."""
        out: dict[str, Any] = {
            "name": self.name,
            "mac": self.mac,
            "boot": self.boot,
            "build": self.build,
            "phase": self.phase,
            "failed": self.failed,
            "phases": {k: round(v, 3) for k, v in self.offsets.items() if k in PHASES},
            "time_to_ready": None if self.time_to_ready is None else round(self.time_to_ready, 3),
            "alarms": list(self.alarms),
            "packages": None if self.packages is None else asdict(self.packages),
        }
        if with_events:
            out["events"] = [
                {
                    "kind": e.kind,
                    "detail": e.detail,
                    "client": e.client,
                    "time": e.wall,
                    "server": e.server,
                }
                for e in self.events
            ]
        return out


def host_status(
    timeline: Timeline, host: Host, build: int, packages: PackageCount | None = None
) -> HostStatus:
    """Summarize the current build's events (those after the last rearm)."""
    events = since_rearm(timeline.events(host.name, build))
    reached = [e.kind for e in events if e.kind in PHASES]
    phase = max(reached, key=PHASES.index) if reached else "waiting"
    failures = [e for e in events if e.kind == FAILED]
    failed = None
    if failures and failures[-1].wall >= _last(events, "ready"):
        failed = failures[-1].detail.split("\n", 1)[0] or "failed"
    return HostStatus(
        host.name,
        host.mac,
        host.boot,
        build,
        phase,
        failed,
        phase_offsets(events),
        time_to_ready(events),
        events,
        tuple(e.detail for e in events if e.kind == ALARM),
        packages,
    )


def _last(events: list[Event], kind: str) -> float:
    return max((e.wall for e in events if e.kind == kind), default=0.0)

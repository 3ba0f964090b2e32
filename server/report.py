"""The time-to-ready report: per-phase durations per host, fleet percentiles, JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from photonkick.server.fleet import HostRun, Outcome
from photonkick.server.timeline import ALARM, PHASES, Timeline, phase_offsets

STEPS = (
    ("vm_created", "config", "to loader"),
    ("config", "kickstart", "to kickstart"),
    ("kickstart", "installed", "install"),
    ("installed", "firstboot", "reboot"),
    ("firstboot", "ready", "first boot"),
)
"""The segments of an install, each between two phases."""


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of the values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class HostReport:
    """One host: its outcome, seconds from the build's start to each phase, the steps
    between phases, time to ready (ready hosts only) and its alarms."""

    name: str
    build: int
    outcome: Outcome | None
    detail: str
    phases: dict[str, float]
    steps: dict[str, float]
    time_to_ready: float | None
    alarms: list[str]


@dataclass(frozen=True)
class FleetReport:
    """The whole run: host counts, outcomes counted, and time-to-ready percentiles."""

    hosts: int
    ready: int
    failed: int
    outcomes: dict[str, int]
    p50: float | None
    p95: float | None
    max: float | None


@dataclass(frozen=True)
class Report:
    """The time-to-ready report of one `up`."""

    hosts: list[HostReport]
    fleet: FleetReport


def build_report(runs: Sequence[HostRun], timeline: Timeline) -> Report:
    """The report as data: each host's outcome, phase offsets and steps; fleet figures."""
    hosts = []
    ready_times = []
    for run in runs:
        events = [e for e in timeline.events(run.name, run.build) if e.wall >= run.started - 1]
        offsets = phase_offsets(events)
        steps = {
            label: round(offsets[b] - offsets[a], 3)
            for a, b, label in STEPS
            if a in offsets and b in offsets
        }
        ttr = offsets.get("ready") if run.outcome == "ready" else None
        if ttr is not None:
            ready_times.append(ttr)
        hosts.append(
            HostReport(
                name=run.name,
                build=run.build,
                outcome=run.outcome,
                detail=run.detail,
                phases={k: round(v, 3) for k, v in offsets.items() if k in PHASES},
                steps=steps,
                time_to_ready=None if ttr is None else round(ttr, 3),
                alarms=[e.detail for e in events if e.kind == ALARM],
            )
        )
    outcomes: dict[str, int] = {}
    for run in runs:
        outcomes[run.outcome or "unknown"] = outcomes.get(run.outcome or "unknown", 0) + 1
    fleet = FleetReport(
        hosts=len(runs),
        ready=len(ready_times),
        failed=sum(r.outcome == "failed" for r in runs),
        outcomes=dict(sorted(outcomes.items())),
        p50=percentile(ready_times, 50),
        p95=percentile(ready_times, 95),
        max=max(ready_times, default=None),
    )
    return Report(hosts, fleet)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def format_report(report: Report) -> str:
    """The report as a text table with a fleet summary line."""
    header = ["host", "result", *[label for _, _, label in STEPS], "ready"]
    rows = [header]
    for h in report.hosts:
        rows.append(
            [
                h.name,
                h.outcome or "?",
                *[_cell(h.steps.get(label)) for _, _, label in STEPS],
                _cell(h.time_to_ready),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    f = report.fleet
    others = ", ".join(
        f"{count} {outcome}" for outcome, count in f.outcomes.items() if outcome != "ready"
    )
    lines.append(
        f"{f.ready}/{f.hosts} ready"
        + (f" ({others})" if others else "")
        + f"; time to ready p50 {_cell(f.p50)}, p95 {_cell(f.p95)}, max {_cell(f.max)}"
    )
    for h in report.hosts:
        if h.detail and h.outcome != "ready":
            lines.append(f"{h.name}: {h.outcome}: {h.detail}")
    for h in report.hosts:
        lines += [f"{h.name}: ALARM: {alarm}" for alarm in h.alarms]
    return "\n".join(lines)


def report_json(report: Report) -> str:
    """The report as JSON text (keys sorted, two-space indent)."""
    return json.dumps(asdict(report), indent=2, sort_keys=True) + "\n"

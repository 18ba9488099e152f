"""A run's timeline: its status periods and its steps' bars, computed from the event history.

Bars are SVG rects in a 0..1000 coordinate space stretched to the track's width, so the page
zooms by widening the canvas (no re-layout, no inline style); labels and durations sit in an
HTML column beside the tracks, where stretching cannot distort them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ...engine import RunStatus, UpcasterRegistry
from ...engine.lifecycle import (
    LIFECYCLE_EVENT_TYPES,
    RUN_RETRY_SCHEDULED,
    STEP_FAILED,
    STEP_STARTED,
    STEP_SUCCEEDED,
    TERMINAL_STATUSES,
    next_status,
)
from ...types import RunEventPersisted, RunMetadata
from ._html import Markup, between, fmt_duration, fmt_time, join, render

WIDTH = 1000.0
TICKS = 4
MIN_BAR = 1.5  # a step of a microsecond still shows as a sliver


@dataclass(frozen=True, kw_only=True, slots=True)
class Period:
    """A span of the run in one status (``end`` None: still in it)."""

    status: str
    start: datetime
    end: datetime | None


@dataclass(frozen=True, kw_only=True, slots=True)
class StepBar:
    """One execution of a step: from StepStarted to its StepSucceeded or StepFailed."""

    name: str
    attempt: int
    start: datetime
    end: datetime | None
    outcome: str  # "succeeded", "failed", "running", or "abandoned" (its attempt ended first)
    error: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Timeline:
    """What the timeline shows: periods, bars, and the span they are drawn over."""

    periods: tuple[Period, ...]
    steps: tuple[StepBar, ...]
    start: datetime
    end: datetime


def event_time(event: RunEventPersisted) -> datetime:
    """When an event happened: its ``occurred_at`` if the writer gave one, else when stored."""
    return event.occurred_at or event.recorded_at


def _step_name(event: RunEventPersisted) -> str:
    name = event.payload.get("step")
    return name if isinstance(name, str) else "(unnamed step)"


def _error_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        message = value.get("message") or value.get("type")
        if message is not None:
            return str(message)
    return str(value)


def build_timeline(
    metadata: RunMetadata,
    events: Sequence[RunEventPersisted],
    upcasters: UpcasterRegistry,
    now: datetime,
) -> Timeline:
    """Fold the history into status periods and step bars (the engine's rules for statuses)."""
    periods: list[Period] = []
    bars: list[StepBar] = []
    open_steps: dict[str, StepBar] = {}
    status: RunStatus | None = None
    attempt = 1
    for raw in events:
        event = upcasters.upcast(metadata, raw)
        at = event_time(event)
        if event.type in LIFECYCLE_EVENT_TYPES:
            after = RunStatus.QUEUED if status is None else next_status(status, event.type)
            if after is None:
                continue  # an illegal transition changed nothing (the projector says the same)
            if event.type == RUN_RETRY_SCHEDULED or after in TERMINAL_STATUSES:
                for step in open_steps.values():
                    bars.append(_closed(step, at, "abandoned"))
                open_steps.clear()
            if event.type == RUN_RETRY_SCHEDULED:
                attempt += 1
            if after != status:
                if periods:
                    periods[-1] = _ended(periods[-1], at)
                periods.append(Period(status=after.value, start=at, end=None))
            status = after
        elif event.type == STEP_STARTED:
            name = _step_name(event)
            previous = open_steps.pop(name, None)
            if previous is not None:
                bars.append(_closed(previous, at, "abandoned"))
            open_steps[name] = StepBar(
                name=name, attempt=attempt, start=at, end=None, outcome="running"
            )
        elif event.type in (STEP_SUCCEEDED, STEP_FAILED):
            started = open_steps.pop(_step_name(event), None)
            if started is not None:
                failed = event.type == STEP_FAILED
                bar = _closed(started, at, "failed" if failed else "succeeded")
                error = _error_text(event.payload.get("error")) if failed else None
                bars.append(dataclasses.replace(bar, error=error))
    bars.extend(open_steps.values())
    bars.sort(key=lambda b: (b.start, b.name))
    start = periods[0].start if periods else metadata.created_at
    last = max((event_time(e) for e in events), default=start)
    running = status is not None and status not in TERMINAL_STATUSES
    end = max(now, last) if running else last
    return Timeline(periods=tuple(periods), steps=tuple(bars), start=start, end=end)


def _closed(step: StepBar, at: datetime, outcome: str) -> StepBar:
    return StepBar(name=step.name, attempt=step.attempt, start=step.start, end=at, outcome=outcome)


def _ended(period: Period, at: datetime) -> Period:
    return Period(status=period.status, start=period.start, end=at)


class _Scale:
    def __init__(self, timeline: Timeline) -> None:
        self.start = timeline.start
        self.span = max(between(timeline.start, timeline.end) or 0.0, 1e-3)
        self.end = timeline.end

    def x(self, at: datetime) -> float:
        return min(max((between(self.start, at) or 0.0) / self.span * WIDTH, 0.0), WIDTH)

    def rect(self, start: datetime, end: datetime | None, css: str, title: str) -> Markup:
        x0 = self.x(start)
        width = max(self.x(end or self.end) - x0, MIN_BAR)
        return render(
            '<rect class="$c" x="$x" y="0" width="$w" height="1"><title>$t</title></rect>',
            c=css,
            x=f"{min(x0, WIDTH - MIN_BAR):.3f}",
            w=f"{width:.3f}",
            t=title,
        )


def _track(content: Markup, css: str = "") -> Markup:
    return render(
        '<svg class="tl-track$c" viewBox="0 0 1000 1" preserveAspectRatio="none" '
        'role="img" aria-hidden="true">$content</svg>',
        c=f" {css}" if css else "",
        content=content,
    )


def _step_label(bar: StepBar, end: datetime) -> Markup:
    took = fmt_duration(between(bar.start, bar.end or end))
    retry = (
        render('<span class="retry">attempt $a</span>', a=bar.attempt) if bar.attempt > 1 else ""
    )
    return render(
        '<div class="tl-label" title="$name"><span class="dot $o"></span>'
        '<span class="name">$name</span>$retry<span class="took">$took</span></div>',
        name=bar.name,
        o=bar.outcome,
        retry=retry,
        took=took + ("…" if bar.end is None else ""),
    )


def render_timeline(timeline: Timeline) -> Markup:
    """The timeline panel: tools, labels, axis, one status track and one bar per step."""
    scale = _Scale(timeline)
    period_rects = join(
        scale.rect(
            p.start,
            p.end,
            f"tl-bar period st-{p.status}",
            f"{p.status} · {fmt_duration(between(p.start, p.end or timeline.end))} · from "
            f"{fmt_time(p.start)}",
        )
        for p in timeline.periods
    )
    labels = [Markup('<div class="tl-label status-label"><span class="name">Status</span></div>')]
    tracks = [_track(period_rects, "status-track")]
    for bar in timeline.steps:
        labels.append(_step_label(bar, timeline.end))
        detail = f" · {bar.error}" if bar.error else ""
        title = (
            f"{bar.name} (attempt {bar.attempt}) · {bar.outcome} · "
            f"{fmt_duration(between(bar.start, bar.end or timeline.end))}{detail}"
        )
        tracks.append(_track(scale.rect(bar.start, bar.end, f"tl-bar step {bar.outcome}", title)))
    axis = join(
        render("<span>+$t</span>", t=fmt_duration(scale.span * i / TICKS) or "0 ms")
        for i in range(TICKS)
    )
    empty = Markup('<p class="muted tl-empty">No steps recorded.</p>') if not timeline.steps else ""
    return render(
        '<section class="panel timeline" id="timeline" data-span="$span">'
        '<div class="panel-head"><h2>Timeline</h2><span class="muted">$total · $n steps</span>'
        '<div class="tools"><button type="button" data-zoom="fit">Fit</button>'
        '<button type="button" data-zoom="out" aria-label="Zoom out">&minus;</button>'
        '<button type="button" data-zoom="in" aria-label="Zoom in">+</button>'
        '<span class="zoom-level" id="zoom-level">1&times;</span></div></div>'
        '<div class="tl-grid"><div class="tl-labels"><div class="tl-label axis-label">'
        "</div>$labels</div>"
        '<div class="tl-scroll" id="tl-scroll"><div class="tl-canvas" id="tl-canvas">'
        '<div class="tl-axis" id="tl-axis">$axis</div>$tracks</div></div></div>$empty</section>',
        span=f"{scale.span:.6f}",
        total=fmt_duration(scale.span),
        n=len(timeline.steps),
        labels=join(labels),
        axis=axis,
        tracks=join(tracks),
        empty=empty,
    )

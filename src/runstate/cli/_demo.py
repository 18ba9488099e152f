"""``runstate demo``: the main job, end to end, with a self-check.

About 500 runs go through realistic lifecycles on the engine, with the sync and the queued
execution adapters, several concurrent workers, random step counts, flaky and failing handlers,
retries, pauses, cancellations and timeouts, while the relay delivers the outbox to a sink.
At the end it checks that every stored event was delivered exactly once, in per-run order,
and that every final state is legal; the exit status says whether the check held.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .._open import open_store
from .._url import mask_url
from ..engine import RunContext, RunEngine, RunStatus, Worker, project, run_sync
from ..engine.lifecycle import TERMINAL_STATUSES
from ..errors import InvalidTransition
from ..relay import Relay, percentile
from ..sinks import BaseSink, create_sink
from ..store import OutboxStore, RunStateStore, Sink
from ..types import JSON, DeliveryOutcome, DeliveryStatus, OutboxRecord, RunMetadata, utc_now

TERMINAL_EVENT_TYPES = {"RunSucceeded", "RunFailed", "RunCancelled", "RunTimedOut"}
PLANS: list[tuple[str, float]] = [
    ("succeed", 0.58),
    ("flaky", 0.12),
    ("fail", 0.08),
    ("pause", 0.09),
    ("cancel_running", 0.05),
    ("cancel_queued", 0.04),
    ("time_out", 0.04),
]
MAX_ATTEMPTS = 3


@dataclass(kw_only=True)
class DeliveryLog:
    """What the demo's sink wrapper saw acknowledged: message ids and commit-to-ack latency."""

    prefix: str
    seqs_by_run: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    latencies: list[float] = field(default_factory=list)
    finished_runs: set[str] = field(default_factory=set)
    delivered: int = 0


class RecordingSink(BaseSink):
    """Wraps the real sink and records every acknowledged delivery of the demo's runs."""

    def __init__(self, inner: Sink, log: DeliveryLog) -> None:
        self.inner = inner
        self.log = log
        self.name = inner.name

    async def open(self) -> None:
        """Open the wrapped sink."""
        await self.inner.open()

    async def close(self) -> None:
        """Close the wrapped sink."""
        await self.inner.close()

    async def publish(self, batch: Sequence[OutboxRecord]) -> list[DeliveryOutcome]:
        """Publish through the wrapped sink, then note what it acknowledged."""
        outcomes = await self.inner.publish(batch)
        acked_at = utc_now()
        by_id = {record.outbox_id: record for record in batch}
        for outcome in outcomes:
            record = by_id[outcome.outbox_id]
            if outcome.status is not DeliveryStatus.DELIVERED:
                continue
            event = record.event
            if not event.run_id.startswith(self.log.prefix):
                continue
            self.log.delivered += 1
            self.log.seqs_by_run[event.run_id].append(event.seq)
            self.log.latencies.append((acked_at - event.recorded_at).total_seconds())
            if event.type in TERMINAL_EVENT_TYPES:
                self.log.finished_runs.add(event.run_id)
        return outcomes


def _choose_plan(rng: random.Random) -> str:
    names = [name for name, _ in PLANS]
    weights = [weight for _, weight in PLANS]
    return rng.choices(names, weights)[0]


async def _handler(ctx: RunContext) -> JSON:
    """The demo's workflow: a few steps, some flaky, some failing, some slow."""
    spec: dict[str, Any] = ctx.input  # type: ignore[assignment]
    steps: int = spec["steps"]
    plan: str = spec["plan"]
    slow = plan in {"pause", "cancel_running", "time_out"}
    for index in range(steps):
        async with ctx.step(f"step-{index + 1}", input={"attempt": ctx.attempt}):
            await asyncio.sleep(0.03 if slow else spec["step_ms"] / 1000)
            if plan == "flaky" and ctx.attempt == 1 and index == steps - 1:
                raise ConnectionError("transient: upstream reset the connection")
            if plan == "fail" and index == 0:
                raise ValueError("bad input: the demo says this run always fails")
    return {"steps": steps, "attempts": ctx.attempt}


async def _operate(engine: RunEngine, run_id: str, plan: str) -> None:
    """What an operator does to some runs: pause and resume, cancel, time out."""
    if plan == "cancel_queued":
        await _tolerate(engine.cancel(run_id, reason="operator cancelled before start"))
        return
    if plan not in {"pause", "cancel_running", "time_out"}:
        return
    for _ in range(400):
        state = await engine.get_run(run_id)
        if state is None or state.status in TERMINAL_STATUSES:
            return
        if state.status is RunStatus.RUNNING and state.steps_started > 0:
            break
        await asyncio.sleep(0.01)
    if plan == "pause":
        if await _tolerate(engine.pause(run_id, reason="operator paused")):
            await asyncio.sleep(0.05)
            await _tolerate(engine.resume(run_id, reason="operator resumed"))
    elif plan == "cancel_running":
        await _tolerate(engine.cancel(run_id, reason="operator cancelled"))
    else:
        await _tolerate(engine.time_out(run_id, reason="deadline exceeded"))


async def _tolerate(command: Any) -> bool:
    """Run an operator command; losing a race with the worker is part of life."""
    try:
        await command
    except InvalidTransition:
        return False
    return True


@dataclass(frozen=True, kw_only=True)
class DemoResult:
    """The demo's figures and the outcome of its self-check."""

    runs: int
    statuses: dict[str, int]
    events_written: int
    events_delivered: int
    seconds: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    problems: list[str]
    store_url: str
    sink_url: str

    @property
    def ok(self) -> bool:
        """True when the self-check found nothing wrong."""
        return not self.problems


async def run_demo(
    *,
    url: str,
    sink_url: str,
    runs: int,
    workers: int,
    seed: int | None,
    show_progress: bool,
) -> DemoResult:
    """Drive ``runs`` runs to completion while relaying, then check everything."""
    rng = random.Random(seed)
    prefix = f"demo-{uuid.uuid4().hex[:8]}-"
    log = DeliveryLog(prefix=prefix)
    _truncate_file_sink(sink_url)
    sink = RecordingSink(create_sink(sink_url), log)
    started = time.perf_counter()
    async with open_store(url) as store:
        if not isinstance(store, OutboxStore):
            raise TypeError(f"{type(store).__name__} has no outbox")
        engine = RunEngine(store)
        relay = Relay(store, sink, workers=2, batch_size=200, poll_interval=0.05, backoff_base=0.05)
        await sink.open()
        relay_task = asyncio.create_task(relay.run_forever())
        try:
            async with Worker(
                engine, _handler, concurrency=workers, max_attempts=MAX_ATTEMPTS, name="demo"
            ) as worker:
                await _drive_all(engine, rng, prefix, runs, log, show_progress)
                await worker.join()
            relay.stop()
            await relay_task
            await Relay(store, sink, batch_size=500).run_once()
        finally:
            relay.stop()
            if not relay_task.done():
                relay_task.cancel()
            await sink.close()
        seconds = time.perf_counter() - started
        return await _check(store, url, sink_url, prefix, runs, log, seconds)


async def _drive_all(
    engine: RunEngine,
    rng: random.Random,
    prefix: str,
    runs: int,
    log: DeliveryLog,
    show_progress: bool,
) -> None:
    tasks: list[asyncio.Task[None]] = []
    with Progress(
        TextColumn("[bold]runs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not show_progress,
        transient=False,
    ) as progress:
        bar = progress.add_task("runs", total=runs)
        for index in range(runs):
            tasks.append(asyncio.create_task(_one_run(engine, rng, f"{prefix}{index:04d}")))
            if index % 25 == 24:
                # Let the workers and the relay breathe between submissions.
                await asyncio.sleep(0.01)
                progress.update(bar, completed=len(log.finished_runs))
        pending = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.2)
            progress.update(bar, completed=len(log.finished_runs))
        for task in tasks:
            task.result()
        deadline = time.monotonic() + 30
        while len(log.finished_runs) < runs and time.monotonic() < deadline:
            progress.update(bar, completed=len(log.finished_runs))
            await asyncio.sleep(0.1)
        progress.update(bar, completed=len(log.finished_runs))


async def _one_run(engine: RunEngine, rng: random.Random, run_id: str) -> None:
    plan = _choose_plan(rng)
    spec: dict[str, JSON] = {
        "plan": plan,
        "steps": rng.randint(1, 5),
        "step_ms": rng.randint(0, 4),
    }
    metadata = RunMetadata(
        run_id=run_id,
        workflow=rng.choice(["ingest", "train", "report"]),
        workflow_version="v1",
        tenant_id=rng.choice(["acme", "globex", "initech"]),
        input=spec,
        labels={"demo": "true", "plan": plan},
    )
    if plan in {"succeed", "flaky", "fail"} and rng.random() < 0.3:
        # The sync adapter: created already RUNNING and driven in this task.
        await run_sync(engine, metadata, _handler, max_attempts=MAX_ATTEMPTS)
        return
    await engine.create_run(metadata, mode="queued")
    await _operate(engine, run_id, plan)


async def _check(
    store: RunStateStore,
    url: str,
    sink_url: str,
    prefix: str,
    runs: int,
    log: DeliveryLog,
    seconds: float,
) -> DemoResult:
    problems: list[str] = []
    statuses: Counter[str] = Counter()
    written = 0
    file_seqs = _read_file_sink(sink_url, prefix, problems)
    for index in range(runs):
        run_id = f"{prefix}{index:04d}"
        metadata = await store.get_run_metadata_by_run_id(run_id)
        if metadata is None:
            problems.append(f"{run_id}: metadata missing")
            continue
        events = await store.list_events(run_id)
        written += len(events)
        state = project(metadata, events)
        statuses[state.status.value] += 1
        if state.status not in TERMINAL_STATUSES:
            problems.append(f"{run_id}: ended {state.status.value}, not a final status")
        if state.anomalies:
            problems.append(f"{run_id}: illegal transitions {state.anomalies}")
        expected = list(range(1, len(events) + 1))
        if [e.seq for e in events] != expected:
            problems.append(f"{run_id}: stored seqs have gaps")
        if log.seqs_by_run.get(run_id, []) != expected:
            problems.append(
                f"{run_id}: delivered seqs {log.seqs_by_run.get(run_id)} != stored {expected}"
            )
        if file_seqs is not None and file_seqs.get(run_id, []) != expected:
            problems.append(f"{run_id}: the sink file holds seqs {file_seqs.get(run_id)}")
    latencies = sorted(log.latencies)
    return DemoResult(
        runs=runs,
        statuses=dict(sorted(statuses.items())),
        events_written=written,
        events_delivered=log.delivered,
        seconds=seconds,
        latency_p50_ms=_milliseconds(percentile(latencies, 0.50)),
        latency_p99_ms=_milliseconds(percentile(latencies, 0.99)),
        problems=problems,
        store_url=mask_url(url, url),
        sink_url=mask_url(sink_url, sink_url),
    )


def _milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _file_path(sink_url: str) -> Path | None:
    if not sink_url.startswith("file://"):
        return None
    return Path(sink_url.removeprefix("file://").split("?", 1)[0])


def _truncate_file_sink(sink_url: str) -> None:
    path = _file_path(sink_url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")


def _read_file_sink(sink_url: str, prefix: str, problems: list[str]) -> dict[str, list[int]] | None:
    """Read back what the file sink wrote: CloudEvents, once per id, in per-run order."""
    path = _file_path(sink_url)
    if path is None:
        return None
    seqs: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            envelope = json.loads(line)
            if envelope.get("specversion") != "1.0" or envelope.get("source") != "runstate":
                problems.append(f"{path}:{number}: not a runstate CloudEvent")
                continue
            if not envelope["subject"].startswith(prefix):
                continue
            if envelope["id"] in seen:
                problems.append(f"{path}:{number}: duplicate delivery of {envelope['id']}")
            seen.add(envelope["id"])
            seqs[envelope["subject"]].append(envelope["seq"])
    return seqs


def default_sink_url() -> str:
    """The demo's default sink: a JSON lines file in the current folder."""
    return (Path.cwd() / "runstate-demo-events.jsonl").resolve().as_uri()

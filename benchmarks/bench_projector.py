"""Time ``project`` over one 10,000-event run; prints the median of several runs in ms.

Usage: ``.venv/bin/python benchmarks/bench_projector.py [events] [repeats]``
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

from runstate import RunMetadata, project
from runstate.types import JSON, RunEventPersisted

BUDGET_MS = 50.0


def build_run(count: int, *, legacy: bool = False) -> tuple[RunMetadata, list[RunEventPersisted]]:
    """Build a realistic run: queued, started, many steps and a custom event, then success.

    With ``legacy``, RunQueued and StepStarted are stored at schema v1, so every one of them
    goes through the upcasters and the metadata fill.
    """
    metadata = RunMetadata(run_id="bench-run", workflow="bench", tenant_id="acme")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    shapes: list[tuple[str, dict[str, JSON]]] = [
        ("RunQueued", {} if legacy else {"workflow": "bench", "tenant_id": "acme"}),
        ("RunStarted", {"worker": "w-1"}),
    ]
    index = 0
    while len(shapes) < count - 1:
        step = f"step-{index}"
        started: dict[str, JSON] = {"name" if legacy else "step": step, "input": {"i": index}}
        shapes.append(("StepStarted", started))
        if index % 50 == 49:
            shapes.append(("StepFailed", {"step": step, "error": {"message": "flaky"}}))
        else:
            shapes.append(("StepSucceeded", {"step": step, "output": index}))
        if index % 100 == 99:
            shapes.append(("MetricRecorded", {"value": index}))
        index += 1
    shapes = shapes[: count - 1]
    shapes.append(("RunSucceeded", {"output": {"steps": index}}))
    events = [
        RunEventPersisted(
            run_id=metadata.run_id,
            seq=seq,
            position=seq * 3,
            type=event_type,
            payload=payload,
            event_id=f"e-{seq}",
            schema_version=2 if event_type in {"RunQueued", "StepStarted"} and not legacy else 1,
            occurred_at=None,
            recorded_at=start + timedelta(milliseconds=seq),
        )
        for seq, (event_type, payload) in enumerate(shapes, start=1)
    ]
    return metadata, events


def measure(count: int, repeats: int, *, legacy: bool) -> None:
    """Time one shape of run and print the median."""
    metadata, events = build_run(count, legacy=legacy)
    project(metadata, events)  # warm-up
    timings = []
    for _ in range(repeats):
        began = time.perf_counter()
        state = project(metadata, events)
        timings.append((time.perf_counter() - began) * 1000)
    if state.status != "SUCCEEDED" or state.last_seq != count or state.anomalies:
        raise SystemExit(f"unexpected projection: {state.status} at seq {state.last_seq}")
    median = statistics.median(timings)
    verdict = "OK" if median < BUDGET_MS else "OVER BUDGET"
    label = "old schema, upcast on read" if legacy else "current schema"
    print(
        f"project(): {count} events ({label}), median {median:.2f} ms over {repeats} runs "
        f"(min {min(timings):.2f}, max {max(timings):.2f}; budget {BUDGET_MS:.0f} ms: {verdict})"
    )


def main() -> None:
    """Run the benchmark for current-schema and old-schema logs."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    measure(count, repeats, legacy=False)
    measure(count, repeats, legacy=True)


if __name__ == "__main__":
    main()

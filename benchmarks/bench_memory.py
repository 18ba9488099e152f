"""In-memory adapter throughput next to eventsourcing's in-memory (POPO) recorder.

Run: ``python benchmarks/bench_memory.py [--operations N] [--rounds R]``. Inputs are built
before each timed loop, so both sides time the store call alone.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import median_rate, print_table, timed_rate, timed_rate_async
from runstate import MemoryStore, RunBootstrapInput, RunEventInput, RunMetadata


async def runstate_bootstraps(operations: int) -> float:
    """Bootstraps/s: metadata + [RunQueued, RunStarted] + their outbox records."""
    store = MemoryStore()
    inputs = [
        RunBootstrapInput(
            metadata=RunMetadata(run_id=f"run-{i}", workflow="bench"),
            first_events=[RunEventInput(type="RunQueued"), RunEventInput(type="RunStarted")],
        )
        for i in range(operations)
    ]

    async def run() -> None:
        for item in inputs:
            await store.bootstrap_run_tx(item)

    return await timed_rate_async(operations, run)


async def runstate_appends(operations: int) -> float:
    """Single-event appends/s to 100 runs, each with its outbox record."""
    store = MemoryStore()
    run_ids = [f"run-{i}" for i in range(100)]
    for run_id in run_ids:
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="bench"),
                first_events=[RunEventInput(type="RunQueued")],
            )
        )
    batches = [
        (run_ids[i % 100], [RunEventInput(type="StepStarted", payload={"step": i})])
        for i in range(operations)
    ]

    async def run() -> None:
        for run_id, events in batches:
            await store.append_and_enqueue_tx(run_id, events)

    return await timed_rate_async(operations, run)


def eventsourcing_rates(operations: int) -> tuple[float, float] | None:
    """The same work on eventsourcing's POPOApplicationRecorder, if installed."""
    try:
        from eventsourcing.persistence import StoredEvent
        from eventsourcing.popo import POPOApplicationRecorder
    except ImportError:
        return None
    recorder = POPOApplicationRecorder()
    ids = [uuid.uuid4() for _ in range(operations)]
    pairs = [
        [
            StoredEvent(originator_id=i, originator_version=1, topic="RunQueued", state=b"{}"),
            StoredEvent(originator_id=i, originator_version=2, topic="RunStarted", state=b"{}"),
        ]
        for i in ids
    ]

    def insert_pairs() -> None:
        for pair in pairs:
            recorder.insert_events(pair)

    boot = timed_rate(operations, insert_pairs)
    singles = [
        [
            StoredEvent(
                originator_id=ids[i % 100],
                originator_version=3 + i // 100,
                topic="StepStarted",
                state=b'{"step":%d}' % i,
            )
        ]
        for i in range(operations)
    ]

    def insert_singles() -> None:
        for single in singles:
            recorder.insert_events(single)

    append = timed_rate(operations, insert_singles)
    return boot, append


def main() -> None:
    """Measure several rounds and print medians with ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--operations", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    boots, appends, es_boots, es_appends = [], [], [], []
    for _ in range(args.rounds):
        boots.append(asyncio.run(runstate_bootstraps(args.operations)))
        appends.append(asyncio.run(runstate_appends(args.operations)))
        baseline = eventsourcing_rates(args.operations)
        if baseline is not None:
            es_boots.append(baseline[0])
            es_appends.append(baseline[1])
    rows: list[list[object]] = []
    for label, ours, theirs in (
        ("bootstraps/s (2 events)", boots, es_boots),
        ("appends/s (1 event)", appends, es_appends),
    ):
        mine = median_rate(ours)
        if theirs:
            base = median_rate(theirs)
            rows.append([label, mine, base, mine / base])
        else:
            rows.append([label, mine, "n/a", "n/a"])
    print_table(
        f"memory:// — median of {args.rounds} rounds x {args.operations} operations",
        ["operation", "runstate", "eventsourcing POPO", "ratio"],
        rows,
    )


if __name__ == "__main__":
    main()

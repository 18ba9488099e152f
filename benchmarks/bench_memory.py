"""In-memory adapter throughput next to eventsourcing's in-memory (POPO) recorder.

Run: ``python benchmarks/bench_memory.py [--operations N] [--rounds R]``. Inputs are built
before each timed loop, so both sides time the store call alone. Reads return copies of what
the store holds (payloads handed out are the caller's to change), so ``list_events`` pays a
copy of every payload it returns; eventsourcing's recorder hands out its own immutable
``StoredEvent`` objects, with bytes for state.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import median_rate, print_table, timed_rate_cpu, timed_rate_cpu_async
from runstate import MemoryStore, RunBootstrapInput, RunEventInput, RunMetadata

Sample = tuple[float, float]  # operations/s, CPU µs per operation

#: Runs and events per run of the read benchmark: each list_events call returns one run.
READ_RUNS = 100
READ_EVENTS = 100


def _step_payload(i: int) -> dict[str, Any]:
    return {"step": i, "attempt": 1, "result": {"rows": [1, 2, 3], "ok": True}}


async def runstate_bootstraps(operations: int) -> Sample:
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

    return await timed_rate_cpu_async(operations, run)


async def runstate_appends(operations: int) -> Sample:
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

    return await timed_rate_cpu_async(operations, run)


async def runstate_reads(operations: int) -> Sample:
    """Events read/s by ``list_events`` of whole runs of 100 events with small payloads."""
    store = MemoryStore()
    run_ids = [f"run-{i}" for i in range(READ_RUNS)]
    for run_id in run_ids:
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="bench"),
                first_events=[
                    RunEventInput(type="StepSucceeded", payload=_step_payload(i))
                    for i in range(READ_EVENTS)
                ],
            )
        )
    calls = max(1, operations // READ_EVENTS)

    async def run() -> None:
        for i in range(calls):
            await store.list_events(run_ids[i % READ_RUNS])

    return await timed_rate_cpu_async(calls * READ_EVENTS, run)


def eventsourcing_rates(operations: int) -> tuple[Sample, Sample, Sample] | None:
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

    boot = timed_rate_cpu(operations, insert_pairs)
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

    append = timed_rate_cpu(operations, insert_singles)
    readers = POPOApplicationRecorder()
    read_ids = [uuid.uuid4() for _ in range(READ_RUNS)]
    for originator in read_ids:
        readers.insert_events(
            [
                StoredEvent(
                    originator_id=originator,
                    originator_version=v + 1,
                    topic="StepSucceeded",
                    state=b'{"step":%d,"attempt":1,"result":{"rows":[1,2,3],"ok":true}}' % v,
                )
                for v in range(READ_EVENTS)
            ]
        )
    calls = max(1, operations // READ_EVENTS)

    def select() -> None:
        for i in range(calls):
            readers.select_events(read_ids[i % READ_RUNS])

    read = timed_rate_cpu(calls * READ_EVENTS, select)
    return boot, append, read


def main() -> None:
    """Measure several rounds and print medians with ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--operations", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ours: dict[str, list[Sample]] = {"boot": [], "append": [], "read": []}
    theirs: dict[str, list[Sample]] = {"boot": [], "append": [], "read": []}
    for _ in range(args.rounds):
        ours["boot"].append(asyncio.run(runstate_bootstraps(args.operations)))
        ours["append"].append(asyncio.run(runstate_appends(args.operations)))
        ours["read"].append(asyncio.run(runstate_reads(args.operations)))
        baseline = eventsourcing_rates(args.operations)
        if baseline is not None:
            for key, sample in zip(("boot", "append", "read"), baseline, strict=True):
                theirs[key].append(sample)
    rows: list[list[object]] = []
    for label, key in (
        ("bootstraps/s (2 events)", "boot"),
        ("appends/s (1 event)", "append"),
        (f"events read/s (list_events, {READ_EVENTS}/run)", "read"),
    ):
        mine = median_rate([rate for rate, _ in ours[key]])
        cpu = statistics.median(c for _, c in ours[key])
        if theirs[key]:
            base = median_rate([rate for rate, _ in theirs[key]])
            rows.append([label, mine, base, mine / base, cpu])
        else:
            rows.append([label, mine, "n/a", "n/a", cpu])
    print_table(
        f"memory:// — median of {args.rounds} rounds x {args.operations} operations",
        ["operation", "runstate", "eventsourcing POPO", "ratio", "runstate CPU µs/op"],
        rows,
    )


if __name__ == "__main__":
    main()

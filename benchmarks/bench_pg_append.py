"""Cost of one PostgreSQL append by its number of events: linear, like a bootstrap.

Times one ``append_and_enqueue_tx`` of 100, 1,000 and 10,000 events into one run, and 8
concurrent appends of 200 events to 8 runs (which group commit sends as one statement of
1,600 events), next to a baseline in the same run: one ``bootstrap_run_tx`` carrying the same
events, whose cost was always linear. Prints time per event, its spread across sizes (within
2x means linear), events/s of 8 writers against one writer appending the same 200 events, and
client CPU per event. Medians over rounds; the scratch schema is dropped at the end::

    .venv/bin/python benchmarks/bench_pg_append.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runstate import RunBootstrapInput, RunEventInput, RunMetadata, open_store
from runstate.adapters.postgres import PostgresStore

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
SIZES = (100, 1_000, 10_000)


def _events(count: int) -> list[RunEventInput]:
    return [RunEventInput(type="Step", payload={"n": index}) for index in range(count)]


def _bootstrap(events: list[RunEventInput]) -> RunBootstrapInput:
    return RunBootstrapInput(
        metadata=RunMetadata(run_id=f"bench-{uuid.uuid4().hex}", workflow="bench"),
        first_events=events,
    )


async def _new_run(store: PostgresStore) -> str:
    bootstrap = _bootstrap(_events(1))
    await store.bootstrap_run_tx(bootstrap)
    return bootstrap.metadata.run_id


async def _timed(coroutine: object) -> tuple[float, float]:
    """Seconds and client CPU seconds of awaiting ``coroutine``."""
    cpu, started = time.process_time(), time.perf_counter()
    await coroutine  # type: ignore[misc]
    return time.perf_counter() - started, time.process_time() - cpu


async def one_round(store: PostgresStore) -> dict[str, tuple[float, float]]:
    """Per cell: (seconds per event, client CPU seconds per event)."""
    cells: dict[str, tuple[float, float]] = {}
    for size in SIZES:
        run_id = await _new_run(store)
        events = _events(size)
        took, cpu = await _timed(store.append_and_enqueue_tx(run_id, events))
        cells[f"append {size}"] = (took / size, cpu / size)
        bootstrap = _bootstrap(_events(size))
        took, cpu = await _timed(store.bootstrap_run_tx(bootstrap))
        cells[f"bootstrap {size}"] = (took / size, cpu / size)
    runs = [await _new_run(store) for _ in range(8)]
    batches = [_events(200) for _ in runs]
    took, cpu = await _timed(
        asyncio.gather(
            *(store.append_and_enqueue_tx(r, b) for r, b in zip(runs, batches, strict=True))
        )
    )
    cells["8 x append 200"] = (took / 1_600, cpu / 1_600)
    took, cpu = await _timed(store.append_and_enqueue_tx(runs[0], _events(200)))
    cells["1 x append 200"] = (took / 200, cpu / 200)
    return cells


async def main() -> None:
    """Run the rounds and print the table of medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    schema = f"rs_bench_append_{uuid.uuid4().hex[:10]}"
    store = await open_store(args.url, schema=schema, pool_size=9)
    assert isinstance(store, PostgresStore)
    samples: dict[str, list[tuple[float, float]]] = {}
    try:
        await one_round(store)  # warm-up: plans, pool connections
        for round_no in range(1, args.rounds + 1):
            for name, value in (await one_round(store)).items():
                samples.setdefault(name, []).append(value)
            print(f"round {round_no} done", flush=True)
    finally:
        await store.close()
        connection = await asyncpg.connect(args.url)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()
    med = {
        name: (
            statistics.median(s for s, _ in values),
            statistics.median(c for _, c in values),
        )
        for name, values in samples.items()
    }
    print(f"\nmedians over {args.rounds} rounds (µs per event; baseline = a bootstrap of as many)")
    print(f"{'cell':<16} {'µs/event':>9} {'baseline':>9} {'ratio':>6} {'py µs/ev':>9}")
    for size in SIZES:
        ours, cpu = med[f"append {size}"]
        base, _ = med[f"bootstrap {size}"]
        print(
            f"{'append ' + str(size):<16} {ours * 1e6:>9.1f} {base * 1e6:>9.1f} "
            f"{ours / base:>6.2f} {cpu * 1e6:>9.1f}"
        )
    for name in ("1 x append 200", "8 x append 200"):
        ours, cpu = med[name]
        print(f"{name:<16} {ours * 1e6:>9.1f} {'':>9} {'':>6} {cpu * 1e6:>9.1f}")
    per_event = [med[f"append {size}"][0] for size in SIZES]
    spread = max(per_event) / min(per_event)
    one, eight = 1 / med["1 x append 200"][0], 1 / med["8 x append 200"][0]
    print(f"time per event across sizes: max/min = {spread:.2f} (linear: within 2x)")
    print(f"events/s: 1 writer {one:,.0f}, 8 writers {eight:,.0f}, ratio {eight / one:.2f}")


if __name__ == "__main__":
    asyncio.run(main())

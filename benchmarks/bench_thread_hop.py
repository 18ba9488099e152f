"""What one thread round trip costs here: the floor under every SQLite call.

The SQLite adapter runs each transaction on its writer thread (the event loop must never block
on a transaction), so a single writer pays one hop there and one back per call. This prints the
median cost of an empty call through the adapter's worker, next to ``loop.run_in_executor``
(the standard way) as the baseline. Run it as ``taskset -c 0 python ...`` to see the cost when
both threads share one CPU.

Run: ``python benchmarks/bench_thread_hop.py [--calls N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import print_table
from runstate import open_store
from runstate.adapters.sqlite import SQLiteStore


def _noop(_connection: Any) -> None:
    return None


async def _round(calls: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        async with open_store(f"sqlite:///{folder}/hop.db") as store:
            assert isinstance(store, SQLiteStore)
            worker = store._writer
            started = time.perf_counter()
            for _ in range(calls):
                await worker.call(_noop)
            hop = (time.perf_counter() - started) / calls
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            for _ in range(calls):
                await loop.run_in_executor(None, _noop, None)
            executor = (time.perf_counter() - started) / calls
    return hop * 1e6, executor * 1e6


def main() -> None:
    """Measure several rounds and print medians in microseconds."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = [asyncio.run(_round(args.calls)) for _ in range(args.rounds)]
    hop = statistics.median(r[0] for r in results)
    executor = statistics.median(r[1] for r in results)
    print_table(
        f"thread round trip — median of {args.rounds} rounds x {args.calls} calls",
        ["path", "µs per call", "ratio to run_in_executor"],
        [["runstate SQLite worker", hop, hop / executor], ["loop.run_in_executor", executor, 1.0]],
    )


if __name__ == "__main__":
    main()

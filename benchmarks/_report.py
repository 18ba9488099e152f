"""Small helpers shared by the benchmark scripts: timing rounds and printing ratio tables."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence


def median_rate(samples: Sequence[float]) -> float:
    """Return the median of per-round rates."""
    return statistics.median(samples)


def settle_inputs() -> None:
    """Move pre-built inputs out of the GC's young generations, for both sides alike.

    Without it the collector rescans every pre-built input during the timed loop, which
    measures the benchmark's own memory rather than the store.
    """
    gc.collect()
    gc.freeze()


def timed_rate(operations: int, run: Callable[[], None]) -> float:
    """Run ``run`` once and return operations per second."""
    settle_inputs()
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    gc.unfreeze()
    return operations / elapsed


async def timed_rate_async(operations: int, run: Callable[[], Awaitable[None]]) -> float:
    """Await ``run()`` once and return operations per second."""
    settle_inputs()
    started = time.perf_counter()
    await run()
    elapsed = time.perf_counter() - started
    gc.unfreeze()
    return operations / elapsed


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a plain-text table, one row per line, columns aligned."""
    cells = [list(map(str, header))] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)

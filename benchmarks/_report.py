"""Small helpers shared by the benchmark scripts: timing rounds and printing ratio tables."""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

# Open ``cpu_per_operation`` blocks, innermost last: each collects the timed sections' CPU.
_cpu_meters: list[list[float]] = []


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


@contextlib.contextmanager
def cpu_per_operation() -> Iterator[list[float]]:
    """Collect the client CPU per operation (``time.process_time``, every thread of this
    process) of each ``timed_rate`` / ``timed_rate_async`` run inside the block, in order."""
    samples: list[float] = []
    _cpu_meters.append(samples)
    try:
        yield samples
    finally:
        _cpu_meters.remove(samples)


def _record_cpu(operations: int, cpu: float) -> None:
    for samples in _cpu_meters:
        samples.append(cpu / operations)


def timed_rate(operations: int, run: Callable[[], None]) -> float:
    """Run ``run`` once and return operations per second."""
    settle_inputs()
    cpu = time.process_time()
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    _record_cpu(operations, time.process_time() - cpu)
    gc.unfreeze()
    return operations / elapsed


async def timed_rate_async(operations: int, run: Callable[[], Awaitable[None]]) -> float:
    """Await ``run()`` once and return operations per second."""
    settle_inputs()
    cpu = time.process_time()
    started = time.perf_counter()
    await run()
    elapsed = time.perf_counter() - started
    _record_cpu(operations, time.process_time() - cpu)
    gc.unfreeze()
    return operations / elapsed


async def timed_rate_cpu_async(
    operations: int, run: Callable[[], Awaitable[None]]
) -> tuple[float, float]:
    """Await ``run()`` once; return operations per second and CPU µs per operation."""
    settle_inputs()
    cpu = time.process_time()
    started = time.perf_counter()
    await run()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    gc.unfreeze()
    return operations / elapsed, cpu / operations * 1e6


def timed_rate_cpu(operations: int, run: Callable[[], None]) -> tuple[float, float]:
    """Run ``run`` once; return operations per second and CPU µs per operation."""
    settle_inputs()
    cpu = time.process_time()
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    gc.unfreeze()
    return operations / elapsed, cpu / operations * 1e6


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

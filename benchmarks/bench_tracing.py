"""What tracing costs: writes and relay deliveries with OpenTelemetry off, unconfigured and on.

Run (under ``rs-bench``, alone on the machine): ``python benchmarks/bench_tracing.py
[--operations N] [--rounds R] [--stores memory,sqlite,postgres]``.

Three modes, each in a fresh interpreter (whether ``opentelemetry`` imports is decided when
``runstate.tracing`` is first imported):

- ``off``: ``opentelemetry`` cannot be imported (an import hook refuses it), as without the
  ``otel`` extra: the decorators are the plain functions, nothing is stored;
- ``unconfigured``: the API is installed but no SDK is set up, the state of a library user who
  installed the extra and never configured tracing (the API's no-op spans);
- ``on``: the SDK with a ``BatchSpanProcessor`` and an exporter that drops the spans (no I/O:
  what tracing costs this process), so every write is a recorded span whose context is stored
  and every delivery a recorded PRODUCER span, child of it.

One operation of the write phase is a ``bootstrap_run_tx`` (metadata + RunQueued + RunStarted)
then a single-event ``append_and_enqueue_tx`` of the same run, awaited one after the other.
The relay phase then delivers every record written (3 per operation) with ``Relay.run_once``
to a sink that drops them (``CallableSink``), batches of 100. Rates are operations (records)
per second; CPU is this process's ``time.process_time`` per operation (record), every thread
(the batch processor's included). Each round runs the three modes in a rotated order on fresh
stores; the ratios are to ``off`` in the same round, and every figure is the median over the
rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.abc
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("off", "unconfigured", "on")
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


class _RefuseOpenTelemetry(importlib.abc.MetaPathFinder):
    """An import hook that makes ``opentelemetry`` unimportable, as if never installed."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(f"{name} is hidden by bench_tracing (mode off)")


def _configure(mode: str) -> Any:
    """Set the mode up before runstate is imported; return the SDK provider (mode on)."""
    if mode == "off":
        sys.meta_path.insert(0, _RefuseOpenTelemetry())
        return None
    if mode == "unconfigured":
        return None
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Discard(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    trace.set_tracer_provider(provider)
    return provider


async def _measure(url: str, operations: int) -> dict[str, float]:
    from benchmarks._report import settle_inputs
    from runstate import RunBootstrapInput, RunEventInput, RunMetadata, open_store
    from runstate.relay import Relay
    from runstate.sinks import CallableSink

    bootstraps = [
        RunBootstrapInput(
            metadata=RunMetadata(run_id=f"run-{i}", workflow="bench", input={"n": i}),
            first_events=[
                RunEventInput(type="RunQueued", payload={"queue": "default"}),
                RunEventInput(type="RunStarted", payload={"worker": "w-1"}),
            ],
        )
        for i in range(operations)
    ]
    appends = [[RunEventInput(type="StepStarted", payload={"step": i})] for i in range(operations)]

    async def drop(_: dict[str, Any]) -> None:
        return None

    async with open_store(url) as store:
        # Warm up (connections, statement caches, first spans) on runs of their own.
        for i in range(20):
            run_id = f"warm-{i}"
            await store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=run_id, workflow="bench"),
                    first_events=[RunEventInput(type="RunQueued")],
                )
            )
            await store.append_and_enqueue_tx(run_id, [RunEventInput(type="StepStarted")])
        relay = Relay(store, CallableSink(drop), batch_size=100)  # type: ignore[arg-type]
        await relay.run_once()

        settle_inputs()
        cpu, started = time.process_time(), time.perf_counter()
        for bootstrap, events in zip(bootstraps, appends, strict=True):
            await store.bootstrap_run_tx(bootstrap)
            await store.append_and_enqueue_tx(bootstrap.metadata.run_id, events)
        write_s, write_cpu = time.perf_counter() - started, time.process_time() - cpu

        cpu, started = time.process_time(), time.perf_counter()
        report = await relay.run_once()
        relay_s, relay_cpu = time.perf_counter() - started, time.process_time() - cpu
    records = operations * 3
    assert report.delivered == records, report
    return {
        "write_rate": operations / write_s,
        "write_cpu_us": write_cpu / operations * 1e6,
        "relay_rate": records / relay_s,
        "relay_cpu_us": relay_cpu / records * 1e6,
    }


def _worker(mode: str, url: str, operations: int) -> None:
    provider = _configure(mode)
    result = asyncio.run(_measure(url, operations))
    if provider is not None:
        provider.shutdown()  # flush the batch processor; after the timed sections
    import runstate.tracing

    result["traced"] = float(runstate.tracing.ENABLED)
    print(json.dumps(result))


def _store_url(store: str, folder: Path, tag: str) -> tuple[str, str | None]:
    if store == "memory":
        return "memory://", None
    if store == "sqlite":
        return f"sqlite:///{folder / f'{tag}.db'}", None
    schema = f"rs_bench_tracing_{uuid.uuid4().hex[:12]}"
    return f"{POSTGRES_URL}?schema={schema}", schema


def _drop_schema(schema: str) -> None:
    import asyncpg

    async def drop() -> None:
        connection = await asyncpg.connect(POSTGRES_URL)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()

    asyncio.run(drop())


def _run_mode(mode: str, store: str, folder: Path, operations: int) -> dict[str, float]:
    url, schema = _store_url(store, folder, f"{store}-{mode}-{uuid.uuid4().hex[:6]}")
    try:
        output = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                mode,
                "--url",
                url,
                "--operations",
                str(operations),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        ).stdout
    finally:
        if schema is not None:
            _drop_schema(schema)
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    assert bool(result["traced"]) == (mode != "off"), (mode, result)
    return result


def main() -> None:
    """Measure every store in every mode, round after round, and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default="memory,sqlite,postgres")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.url, args.operations)
        return
    from benchmarks._report import print_table

    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="rs-bench-tracing-") as tmp:
        for round_index in range(args.rounds):
            for store in stores:
                order = MODES[round_index % 3 :] + MODES[: round_index % 3]
                for mode in order:
                    measured = _run_mode(mode, store, Path(tmp), args.operations)
                    results.setdefault((store, mode), []).append(measured)
    for store in stores:
        off = results[(store, "off")]
        rows = []
        for mode in MODES:
            rounds = results[(store, mode)]

            def median(key: str, rounds: list[dict[str, float]] = rounds) -> float:
                return statistics.median(r[key] for r in rounds)

            def ratio(
                key: str, rounds: list[dict[str, float]] = rounds, off: list[dict[str, float]] = off
            ) -> float:
                return statistics.median(
                    r[key] / base[key] for r, base in zip(rounds, off, strict=True)
                )

            rows.append(
                [
                    mode,
                    median("write_rate"),
                    f"{ratio('write_rate'):.2f}x",
                    median("write_cpu_us"),
                    f"{ratio('write_cpu_us'):.2f}x",
                    median("relay_rate"),
                    f"{ratio('relay_rate'):.2f}x",
                    median("relay_cpu_us"),
                    f"{ratio('relay_cpu_us'):.2f}x",
                ]
            )
        print_table(
            f"{store}: {args.operations} writes (bootstrap + append) then "
            f"{args.operations * 3} deliveries, medians of {args.rounds} rounds",
            [
                "tracing",
                "writes/s",
                "vs off",
                "CPU µs/write",
                "vs off",
                "deliveries/s",
                "vs off",
                "CPU µs/delivery",
                "vs off",
            ],
            rows,
        )


if __name__ == "__main__":
    main()

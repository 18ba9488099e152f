"""Bootstraps/s and appends/s through the HTTP API next to direct store calls, as a ratio.

Run: ``python benchmarks/bench_http.py [--operations N] [--rounds R] [--backends sqlite,postgres]
[--concurrency 1,8] [--adapter]`` (hold ``flock /tmp/runstate-bench.lock`` on shared machines).

Per backend, concurrency and round, on a fresh database each time:

- direct: ``bootstrap_run_tx`` (metadata + [RunQueued, RunStarted]) and one-event
  ``append_and_enqueue_tx`` round-robin over 100 runs, from N tasks on one store in this
  process;
- http: the same writes as ``POST /v1/runs`` and ``POST /v1/runs/{id}/events`` to a
  ``runstate serve`` subprocess on the same kind of store, from N keep-alive HTTP/1.1
  connections of a minimal asyncio client (raw requests encoded before the timed loop, one
  request in flight per connection). The client is kept this small because on two shared cores
  every microsecond it spends is taken from the server;
- adapter (``--adapter``): the same calls through ``open_store("runstate+http://...")``
  (httpx), the cost a Python program pays.

Columns: operations per second, the ratio to direct, the client's CPU per operation
(``time.process_time``) and, for http, the server process's CPU per operation (/proc). The
tables show medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import print_table, settle_inputs
from runstate import RunBootstrapInput, RunEventInput, RunMetadata, RunStateStore, open_store

RUNS_FOR_APPENDS = 100
POSTGRES_URL = os.environ.get(
    "RUNSTATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Sample:
    """One timed phase: operations per second, client and server CPU seconds per operation."""

    rate: float
    client_cpu: float
    server_cpu: float | None = None


# -- the minimal HTTP/1.1 client ---------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight; answers framed by Content-Length."""

    def __init__(self) -> None:
        self._buffer = b""
        self._waiter: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to write requests to."""
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        """Hand a complete answer to the waiting request."""
        self._buffer += data
        head_end = self._buffer.find(b"\r\n\r\n")
        if head_end < 0 or self._waiter is None or self._waiter.done():
            return
        head = self._buffer[:head_end].lower()
        start = head.find(b"content-length:") + 15
        length = int(head[start : head.find(b"\r\n", start) if b"\r\n" in head[start:] else None])
        total = head_end + 4 + length
        if len(self._buffer) >= total:
            answer, self._buffer = self._buffer[:total], self._buffer[total:]
            waiter, self._waiter = self._waiter, None
            waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the waiting request: the server went away."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("server closed the connection"))

    async def request(self, raw: bytes) -> bytes:
        """Send one encoded request; return the whole answer."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self._waiter


def _post(path: str, body: object) -> bytes:
    content = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(content)}\r\n\r\n"
    )
    return head.encode() + content


def _bootstrap_body(i: int) -> dict[str, object]:
    return {
        "metadata": {"run_id": f"run-{i}", "workflow": "bench", "input": {"n": i}},
        "first_events": [
            {"type": "RunQueued", "payload": {"queue": "default"}, "event_id": f"q-{i}"},
            {"type": "RunStarted", "payload": {"worker": "w-1"}, "event_id": f"s-{i}"},
        ],
    }


async def _drive(port: int, requests: list[bytes], connections: int, expect: bytes) -> float:
    loop = asyncio.get_running_loop()
    opened = [
        (await loop.create_connection(_Connection, "127.0.0.1", port))[1]
        for _ in range(connections)
    ]

    async def worker(connection: _Connection, share: list[bytes]) -> None:
        for raw in share:
            answer = await connection.request(raw)
            if not answer.startswith(expect, 9):
                raise RuntimeError(f"unexpected answer: {answer[:200]!r}")

    settle_inputs()
    started = time.perf_counter()
    await asyncio.gather(*(worker(c, requests[i::connections]) for i, c in enumerate(opened)))
    elapsed = time.perf_counter() - started
    for connection in opened:
        assert connection.transport is not None
        connection.transport.close()
    return elapsed


# -- the server subprocess ---------------------------------------------------------------------


def _server_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_server(url: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    command = [sys.executable, "-m", "runstate.cli", "serve", "--url", url]
    command += ["--port", str(port), "--no-access-log"]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("runstate serve did not become ready")


def _stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- the contenders ----------------------------------------------------------------------------


def _inputs(operations: int) -> tuple[list[RunBootstrapInput], list[tuple[str, RunEventInput]]]:
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
    appends = [
        (f"run-{i % RUNS_FOR_APPENDS}", RunEventInput(type="StepStarted", payload={"step": i}))
        for i in range(operations)
    ]
    return bootstraps, appends


async def _timed(tasks: int, calls: list[Callable[[], Awaitable[object]]]) -> Sample:
    async def worker(share: list[Callable[[], Awaitable[object]]]) -> None:
        for call in share:
            await call()

    settle_inputs()
    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(calls[i::tasks]) for i in range(tasks)))
    elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    return Sample(rate=len(calls) / elapsed, client_cpu=used / len(calls))


async def _store_phases(store: RunStateStore, operations: int, tasks: int) -> tuple[Sample, Sample]:
    bootstraps, appends = _inputs(operations)
    boot = await _timed(tasks, [partial(store.bootstrap_run_tx, b) for b in bootstraps])
    add = await _timed(tasks, [partial(store.append_and_enqueue_tx, r, [e]) for r, e in appends])
    return boot, add


async def direct(url: str, operations: int, tasks: int) -> tuple[Sample, Sample]:
    """Direct store calls from ``tasks`` tasks on one store."""
    async with open_store(url) as store:
        return await _store_phases(store, operations, tasks)


async def _http_phase(port: int, pid: int, raws: list[bytes], tasks: int, expect: bytes) -> Sample:
    server_before, cpu = _server_cpu(pid), time.process_time()
    elapsed = await _drive(port, raws, tasks, expect)
    used, served = time.process_time() - cpu, _server_cpu(pid) - server_before
    n = len(raws)
    return Sample(rate=n / elapsed, client_cpu=used / n, server_cpu=served / n)


async def http(url: str, operations: int, tasks: int) -> tuple[Sample, Sample]:
    """The raw HTTP client against a ``runstate serve`` subprocess."""
    boots = [_post("/v1/runs", _bootstrap_body(i)) for i in range(operations)]
    adds = [
        _post(
            f"/v1/runs/run-{i % RUNS_FOR_APPENDS}/events",
            {"events": [{"type": "StepStarted", "payload": {"step": i}, "event_id": f"e-{i}"}]},
        )
        for i in range(operations)
    ]
    process, port = _start_server(url)
    try:
        boot = await _http_phase(port, process.pid, boots, tasks, b"201")
        add = await _http_phase(port, process.pid, adds, tasks, b"200")
    finally:
        _stop_server(process)
    return boot, add


async def adapter(url: str, operations: int, tasks: int) -> tuple[Sample, Sample]:
    """The runstate+http adapter (httpx) against a ``runstate serve`` subprocess."""
    process, port = _start_server(url)
    try:
        async with open_store(f"runstate+http://127.0.0.1:{port}") as store:
            return await _store_phases(store, operations, tasks)
    finally:
        _stop_server(process)


# -- rounds and tables -------------------------------------------------------------------------


class _Database:
    """A fresh database per measurement: a SQLite file or a PostgreSQL schema."""

    def __init__(self, backend: str, folder: Path) -> None:
        self.backend = backend
        self.folder = folder
        self.schemas: list[str] = []

    def new_url(self) -> str:
        """A store URL on a database no measurement used before."""
        name = uuid.uuid4().hex[:12]
        if self.backend == "sqlite":
            return f"sqlite:///{self.folder / f'{name}.db'}"
        schema = f"rs_bench_http_{name}"
        self.schemas.append(schema)
        return f"{POSTGRES_URL}?schema={schema}"

    async def drop(self) -> None:
        """Drop the PostgreSQL schemas made (SQLite files go with the temporary folder)."""
        if not self.schemas:
            return
        import asyncpg

        connection = await asyncpg.connect(POSTGRES_URL)
        try:
            for schema in self.schemas:
                await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()


def _median(samples: list[Sample]) -> Sample:
    server = [s.server_cpu for s in samples if s.server_cpu is not None]
    return Sample(
        rate=statistics.median(s.rate for s in samples),
        client_cpu=statistics.median(s.client_cpu for s in samples),
        server_cpu=statistics.median(server) if server else None,
    )


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.0f}"


async def _measure(args: argparse.Namespace, backend: str, folder: Path) -> list[list[object]]:
    contenders: dict[str, Callable[[str, int, int], Awaitable[tuple[Sample, Sample]]]] = {
        "direct": direct,
        "http": http,
    }
    if args.adapter:
        contenders["adapter"] = adapter
    database = _Database(backend, folder)
    rows: list[list[object]] = []
    try:
        for tasks in args.concurrency:
            results: dict[str, list[tuple[Sample, Sample]]] = {name: [] for name in contenders}
            for round_index in range(args.rounds):
                # Rotate the order so no contender always runs on a warmer machine.
                names = list(contenders)
                names = names[round_index % len(names) :] + names[: round_index % len(names)]
                for name in names:
                    results[name].append(
                        await contenders[name](database.new_url(), args.operations, tasks)
                    )
            base = [_median([r[k] for r in results["direct"]]) for k in (0, 1)]
            for name in contenders:
                medians = [_median([r[k] for r in results[name]]) for k in (0, 1)]
                rows.append(
                    [
                        backend,
                        tasks,
                        name,
                        medians[0].rate,
                        f"{medians[0].rate / base[0].rate:.2f}x",
                        medians[1].rate,
                        f"{medians[1].rate / base[1].rate:.2f}x",
                        f"{_us(medians[0].client_cpu)} / {_us(medians[1].client_cpu)}",
                        f"{_us(medians[0].server_cpu)} / {_us(medians[1].server_cpu)}",
                    ]
                )
    finally:
        await database.drop()
    return rows


def main() -> None:
    """Parse arguments, run every round, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--operations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--adapter", action="store_true", help="Also measure runstate+http.")
    args = parser.parse_args()
    args.concurrency = [int(n) for n in args.concurrency.split(",")]
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="runstate-bench-http-") as folder:
        for backend in args.backends.split(","):
            rows += asyncio.run(_measure(args, backend, Path(folder)))
    print_table(
        f"through HTTP vs direct ({args.operations} operations, median of {args.rounds} rounds; "
        "CPU in µs per operation, bootstrap / append)",
        [
            "backend",
            "clients",
            "path",
            "bootstraps/s",
            "ratio",
            "appends/s",
            "ratio",
            "client CPU",
            "server CPU",
        ],
        rows,
    )


if __name__ == "__main__":
    main()

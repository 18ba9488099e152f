"""The group-commit scheduler on its own: when statements go out, and how many items each takes.

The statements here go to a scripted runner that finishes each one when the test says so, so
the order of events is exact. The PostgreSQL tests run the same scheduler against the server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from runstate.adapters.postgres._batch import WriteBatcher


class EchoCodec:
    """Each item's result is its own argument tuple."""

    def statement(self, items: list[tuple[Any, ...]]) -> tuple[str, list[Any]]:
        return "echo", list(items)

    def results(self, rows: list[Any], items: list[tuple[Any, ...]]) -> list[Any]:
        return list(rows)


class ScriptedServer:
    """Runs statements only when ``finish`` is called; records what each one carried."""

    def __init__(self) -> None:
        self.sent: list[list[Any]] = []
        self._gates: list[asyncio.Future[None]] = []

    async def run(self, action: str, work: Any) -> list[Any]:
        result: list[Any] = await work(self)  # this object is the connection too
        return result

    async def fetch(self, sql: str, *values: Any) -> list[Any]:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._gates.append(gate)
        self.sent.append([value[0] for value in values])
        await gate
        return list(values)

    def finish(self, index: int) -> None:
        self._gates[index].set_result(None)


async def _turns(count: int = 5) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def _batcher(server: ScriptedServer, statements: int, *, at_once: bool = False) -> WriteBatcher:
    # The sharing rules are observed with the lone-writer shortcut off: with it, the first of
    # several writers ready together goes out alone (tested on its own below).
    return WriteBatcher(
        server.run,
        action="test",
        codec=EchoCodec(),
        max_in_flight=statements,
        lone_writer_at_once=at_once,
    )


async def test_writes_ready_together_share_one_statement() -> None:
    server = ScriptedServer()
    batcher = _batcher(server, statements=1)
    calls = [asyncio.ensure_future(batcher.submit(f"run-{n}", (f"run-{n}",))) for n in range(6)]
    await _turns()
    assert server.sent == [[f"run-{n}" for n in range(6)]]
    server.finish(0)
    assert await asyncio.gather(*calls) == [(f"run-{n}",) for n in range(6)]
    assert batcher.idle


async def test_the_load_is_balanced_over_the_statements() -> None:
    server = ScriptedServer()
    batcher = _batcher(server, statements=2)
    calls = [asyncio.ensure_future(batcher.submit(f"run-{n}", (f"run-{n}",))) for n in range(8)]
    await _turns()
    assert [len(sent) for sent in server.sent] == [4, 4]
    server.finish(0)
    server.finish(1)
    await asyncio.gather(*calls)


async def test_a_small_batch_waits_while_another_statement_is_out() -> None:
    server = ScriptedServer()
    batcher = _batcher(server, statements=2)
    first = [asyncio.ensure_future(batcher.submit(f"a-{n}", (f"a-{n}",))) for n in range(8)]
    await _turns()
    assert [len(sent) for sent in server.sent] == [4, 4]
    server.finish(0)
    await asyncio.gather(*first[:4])
    # One write arrives while four are still out: a statement of its own would go out a
    # quarter full, so it waits for company.
    late = asyncio.ensure_future(batcher.submit("late", ("late",)))
    await _turns()
    assert len(server.sent) == 2
    again = [asyncio.ensure_future(batcher.submit(f"b-{n}", (f"b-{n}",))) for n in range(3)]
    await _turns()
    assert sorted(server.sent[2]) == ["b-0", "b-1", "b-2", "late"]
    server.finish(1)
    server.finish(2)
    await asyncio.gather(late, *again, *first[4:])
    assert batcher.idle


async def test_a_held_write_goes_out_when_the_other_statement_ends() -> None:
    server = ScriptedServer()
    batcher = _batcher(server, statements=2)
    first = [asyncio.ensure_future(batcher.submit(f"a-{n}", (f"a-{n}",))) for n in range(4)]
    await _turns()
    assert [len(sent) for sent in server.sent] == [2, 2]
    server.finish(0)
    await asyncio.gather(*first[:2])
    late = asyncio.ensure_future(batcher.submit("late", ("late",)))
    await _turns()
    assert len(server.sent) == 2
    server.finish(1)
    await asyncio.gather(*first[2:])
    await _turns()
    assert server.sent[2] == ["late"]
    server.finish(2)
    assert await late == ("late",)


async def test_a_lone_write_goes_out_at_once_when_nothing_else_is_out() -> None:
    server = ScriptedServer()
    batcher = _batcher(server, statements=4, at_once=True)
    call = asyncio.ensure_future(batcher.submit("only", ("only",)))
    await _turns()
    assert server.sent == [["only"]]
    server.finish(0)
    assert await call == ("only",)


async def test_the_writers_report_idle_once_nothing_waits_or_runs() -> None:
    server = ScriptedServer()
    batcher = WriteBatcher(server.run, action="test", codec=EchoCodec(), max_in_flight=1)
    call = asyncio.ensure_future(batcher.submit("run", ("run",)))
    await _turns()
    assert not batcher.idle
    server.finish(0)
    await call
    await _turns()
    assert batcher.idle


async def test_a_run_is_never_in_two_statements_at_once() -> None:
    server = ScriptedServer()
    batcher = _batcher(server, statements=2)
    first = asyncio.ensure_future(batcher.submit("run", ("run", 1)))
    second = asyncio.ensure_future(batcher.submit("run", ("run", 2)))
    await _turns()
    # A free statement is no reason to write the run's next event before its first commits.
    assert server.sent == [["run"]]
    server.finish(0)
    assert await first == ("run", 1)
    await _turns()
    assert server.sent == [["run"], ["run"]]
    server.finish(1)
    assert await second == ("run", 2)


async def test_with_the_shortcut_the_first_goes_alone_and_the_rest_share_the_next() -> None:
    server = ScriptedServer()
    batcher = _batcher(server, statements=1, at_once=True)
    calls = [asyncio.ensure_future(batcher.submit(f"run-{n}", (f"run-{n}",))) for n in range(6)]
    await _turns()
    assert server.sent == [["run-0"]]
    server.finish(0)
    await _turns()
    assert server.sent[1] == [f"run-{n}" for n in range(1, 6)]
    server.finish(1)
    assert await asyncio.gather(*calls) == [(f"run-{n}",) for n in range(6)]
    assert batcher.idle

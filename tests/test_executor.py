"""The tiny executor: Worker over queued runs, run_sync for the synchronous adapter."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from runstate import (
    InvalidInput,
    RunEngine,
    RunMetadata,
    RunStateStore,
    RunStatus,
    Worker,
    open_store,
    project,
)
from runstate.engine.executor import RunContext, run_sync
from runstate.types import JSON

StoreFactory = Callable[[], Awaitable[RunStateStore]]


def metadata(value: int = 0) -> RunMetadata:
    """Metadata for a fresh run whose input is ``{"n": value}``."""
    return RunMetadata(run_id=f"ex-{uuid.uuid4().hex}", workflow="double", input={"n": value})


async def double(ctx: RunContext) -> JSON:
    """A two-step handler: read the input, double it."""
    assert isinstance(ctx.input, dict)
    async with ctx.step("read"):
        n = ctx.input["n"]
    async with ctx.step("double", input=n):
        assert isinstance(n, int)
        result = n * 2
    return {"result": result}


async def test_worker_drives_queued_runs_to_success(store_factory: StoreFactory) -> None:
    store = await store_factory()
    engine = RunEngine(store)
    async with Worker(engine, double, concurrency=3) as worker:
        created = [await engine.create_run(metadata(i)) for i in range(6)]
        await worker.join()
    for index, run in enumerate(created):
        state = await engine.get_run(run.run_id)
        assert state is not None
        assert state.status is RunStatus.SUCCEEDED
        assert state.output == {"result": index * 2}
        assert (state.steps_started, state.steps_succeeded, state.current_step) == (2, 2, None)
        assert worker.results[run.run_id] == state
        stored = await store.get_run_metadata_by_run_id(run.run_id)
        assert stored is not None
        events = await store.list_events(run.run_id)
        assert project(stored, events) == state
        assert [e.type for e in events] == [
            "RunQueued",
            "RunStarted",
            "StepStarted",
            "StepSucceeded",
            "StepStarted",
            "StepSucceeded",
            "RunSucceeded",
        ]


async def test_worker_retries_then_fails() -> None:
    engine = RunEngine(await open_store("memory://"))
    calls: dict[str, int] = {}

    async def flaky(ctx: RunContext) -> JSON:
        calls[ctx.run_id] = calls.get(ctx.run_id, 0) + 1
        async with ctx.step("call-api"):
            if ctx.input == {"n": 1} and ctx.attempt < 3:
                raise ConnectionError(f"attempt {ctx.attempt}")
            if ctx.input == {"n": 2}:
                raise ValueError("always broken")
        return ctx.attempt

    async with Worker(engine, flaky, max_attempts=3) as worker:
        recovers = await engine.create_run(metadata(1))
        broken = await engine.create_run(metadata(2))
        await worker.join()
    good = await engine.get_run(recovers.run_id)
    assert good is not None
    assert (good.status, good.attempt, good.output) == (RunStatus.SUCCEEDED, 3, 3)
    assert (good.steps_failed, good.steps_succeeded) == (2, 1)
    assert good.last_error == {"type": "ConnectionError", "message": "attempt 2"}
    bad = await engine.get_run(broken.run_id)
    assert bad is not None
    assert (bad.status, bad.attempt) == (RunStatus.FAILED, 3)
    assert bad.error == {"type": "ValueError", "message": "always broken"}
    assert calls == {recovers.run_id: 3, broken.run_id: 3}


async def test_submit_and_duplicates_run_the_handler_once() -> None:
    engine = RunEngine(await open_store("memory://"))
    run = await engine.create_run(metadata(5))  # created before any worker listened
    seen: list[str] = []

    async def handler(ctx: RunContext) -> JSON:
        seen.append(ctx.run_id)
        await asyncio.sleep(0.01)
        return None

    async with Worker(engine, handler, concurrency=4) as worker:
        for _ in range(5):
            worker.submit(run.run_id)
        await worker.join()
        worker.submit(run.run_id)  # finished runs are skipped
        await worker.join()
    assert seen == [run.run_id]
    state = await engine.get_run(run.run_id)
    assert state is not None
    assert state.status is RunStatus.SUCCEEDED


async def test_concurrency_is_bounded_and_used() -> None:
    engine = RunEngine(await open_store("memory://"))
    running = peak = 0

    async def handler(ctx: RunContext) -> JSON:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return None

    async with Worker(engine, handler, concurrency=3) as worker:
        for i in range(9):
            await engine.create_run(metadata(i))
        await worker.join()
    assert peak == 3


async def test_cancel_takes_effect_at_the_next_step() -> None:
    engine = RunEngine(await open_store("memory://"))
    in_first_step = asyncio.Event()
    release = asyncio.Event()
    finished_second_step = False

    async def handler(ctx: RunContext) -> JSON:
        nonlocal finished_second_step
        async with ctx.step("first"):
            in_first_step.set()
            await release.wait()
        async with ctx.step("second"):
            finished_second_step = True
        return "done"

    async with Worker(engine, handler) as worker:
        run = await engine.create_run(metadata())
        await in_first_step.wait()
        asked = await engine.cancel(run.run_id, reason="user")
        assert asked.status is RunStatus.CANCELLING
        release.set()
        await worker.join()
    state = await engine.get_run(run.run_id)
    assert state is not None
    assert state.status is RunStatus.CANCELLED
    assert (state.steps_started, state.steps_succeeded) == (1, 1)
    assert not finished_second_step


async def test_pause_blocks_at_the_next_step_until_resumed() -> None:
    engine = RunEngine(await open_store("memory://"))
    in_first_step = asyncio.Event()
    release = asyncio.Event()

    async def handler(ctx: RunContext) -> JSON:
        async with ctx.step("first"):
            in_first_step.set()
            await release.wait()
        async with ctx.step("second"):
            pass
        return "done"

    async with Worker(engine, handler, poll_interval=0.01) as worker:
        run = await engine.create_run(metadata())
        await in_first_step.wait()
        await engine.pause(run.run_id)
        release.set()
        await asyncio.sleep(0.05)
        paused = await engine.get_run(run.run_id)
        assert paused is not None
        assert (paused.status, paused.steps_started) == (RunStatus.PAUSED, 1)
        await engine.resume(run.run_id)
        await worker.join()
    state = await engine.get_run(run.run_id)
    assert state is not None
    assert (state.status, state.steps_succeeded, state.output) == (RunStatus.SUCCEEDED, 2, "done")


async def test_a_run_paused_after_its_last_step_succeeds_once_resumed() -> None:
    engine = RunEngine(await open_store("memory://"))
    in_last_step = asyncio.Event()
    release = asyncio.Event()

    async def handler(ctx: RunContext) -> JSON:
        async with ctx.step("only"):
            in_last_step.set()
            await release.wait()
        return "done"

    async with Worker(engine, handler, poll_interval=0.01) as worker:
        run = await engine.create_run(metadata())
        await in_last_step.wait()
        await engine.pause(run.run_id)
        release.set()
        await asyncio.sleep(0.05)
        paused = await engine.get_run(run.run_id)
        assert paused is not None
        assert paused.status is RunStatus.PAUSED
        await engine.resume(run.run_id)
        await worker.join()
    state = await engine.get_run(run.run_id)
    assert state is not None
    assert (state.status, state.output) == (RunStatus.SUCCEEDED, "done")


async def test_run_sync(store_factory: StoreFactory) -> None:
    engine = RunEngine(await store_factory())
    state = await run_sync(engine, metadata(21), double)
    assert (state.status, state.output) == (RunStatus.SUCCEEDED, {"result": 42})

    async def broken(ctx: RunContext) -> JSON:
        async with ctx.step("only"):
            raise RuntimeError("nope")

    failed = await run_sync(engine, metadata(), broken, max_attempts=2)
    assert (failed.status, failed.attempt, failed.steps_failed) == (RunStatus.FAILED, 2, 2)
    assert failed.error == {"type": "RuntimeError", "message": "nope"}
    # An idempotent retry of a finished sync run returns its outcome without re-running.
    once = metadata(1)
    first = await run_sync(engine, once, double, idempotency_key="k")
    again = await run_sync(engine, once, broken, idempotency_key="k")
    assert first == again


def test_worker_refuses_bad_options() -> None:
    engine = RunEngine(asyncio.run(_memory()))
    with pytest.raises(InvalidInput):
        Worker(engine, double, concurrency=0)
    with pytest.raises(InvalidInput):
        Worker(engine, double, max_attempts=0)


async def _memory() -> RunStateStore:
    return await open_store("memory://")

"""A tiny in-process executor: drives queued runs through a user's async handler.

The handler gets a ``RunContext`` to record steps; its return value becomes the run's output,
an exception schedules a retry (up to ``max_attempts``) and then fails the run. Cancellation
and pausing are cooperative: they take effect at the next step boundary (``ctx.step`` or
``ctx.checkpoint``).

``runstate.sync`` has the same executor for plain functions, generated from this module
(``tools/async_to_sync.py``): its ``Worker`` drives runs on threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import TracebackType

from ..errors import InvalidInput, InvalidTransition, RunCancelledError, RunNotFound
from ..types import JSON, RunEventInput, RunMetadata
from ._workers import WorkerTasks
from .lifecycle import STEP_FAILED, STEP_STARTED, STEP_SUCCEEDED, RunStatus
from .projector import RunState
from .run_engine import RunEngine

logger = logging.getLogger("runstate.executor")

Handler = Callable[["RunContext"], Awaitable[JSON]]


def describe_error(exc: BaseException) -> dict[str, JSON]:
    """Return the JSON error record the executor stores for an exception."""
    return {"type": type(exc).__name__, "message": str(exc)}


class RunContext:
    """What a handler sees of its run: identity, input, attempt, and step recording."""

    def __init__(self, engine: RunEngine, state: RunState, *, poll_interval: float) -> None:
        self.engine = engine
        self.state = state
        self._poll_interval = poll_interval

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.state.run_id

    @property
    def input(self) -> JSON:
        """The run's input, from its metadata."""
        return self.state.input

    @property
    def attempt(self) -> int:
        """The current attempt, starting at 1."""
        return self.state.attempt

    async def checkpoint(self) -> RunState:
        """Re-read the run; raise ``RunCancelledError`` if cancelled, wait while paused."""
        while True:
            state = await self.engine.get_run(self.run_id)
            if state is None:  # pragma: no cover - runs are never deleted
                raise RunNotFound(self.run_id)
            self.state = state
            if state.status is RunStatus.CANCELLING or state.status is RunStatus.CANCELLED:
                raise RunCancelledError(self.run_id)
            if state.status is not RunStatus.PAUSED:
                return state
            await asyncio.sleep(self._poll_interval)

    @asynccontextmanager
    async def step(self, name: str, *, input: JSON = None) -> AsyncIterator[None]:
        """Record StepStarted, then StepSucceeded or StepFailed (re-raising) around the body."""
        await self.checkpoint()
        payload: dict[str, JSON] = {"step": name}
        if input is not None:
            payload["input"] = input
        self.state = await self.engine.record(
            self.run_id, RunEventInput(type=STEP_STARTED, payload=payload)
        )
        try:
            yield
        except Exception as exc:
            self.state = await self.engine.record(
                self.run_id,
                RunEventInput(
                    type=STEP_FAILED, payload={"step": name, "error": describe_error(exc)}
                ),
            )
            raise
        self.state = await self.engine.record(
            self.run_id, RunEventInput(type=STEP_SUCCEEDED, payload={"step": name})
        )

    async def record(self, event_type: str, payload: dict[str, JSON] | None = None) -> RunState:
        """Record a custom event on the run."""
        event = RunEventInput(type=event_type, payload=payload or {})
        self.state = await self.engine.record(self.run_id, event)
        return self.state


async def drive(
    engine: RunEngine,
    run_id: str,
    handler: Handler,
    *,
    max_attempts: int = 1,
    retry_delay: float = 0.0,
    poll_interval: float = 0.05,
    worker_name: str | None = None,
    already_started: bool = False,
) -> RunState | None:
    """Start a queued run and drive it to an outcome through ``handler``; return its state.

    Returns None without doing anything if the run is not QUEUED (with ``already_started``,
    RUNNING): another worker has it, or it is finished. Losing a race to start is not an error.
    """
    resume = already_started
    while True:
        state = await engine.get_run(run_id)
        if state is None:
            raise RunNotFound(run_id)
        if resume and state.status is RunStatus.RUNNING:
            resume = False
        elif state.status is RunStatus.QUEUED:
            try:
                state = await engine.start(run_id, worker=worker_name)
            except InvalidTransition:
                return None
        else:
            return None
        context = RunContext(engine, state, poll_interval=poll_interval)
        try:
            output = await handler(context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            outcome = await _after_failure(engine, context, exc, max_attempts=max_attempts)
            if outcome is not None:
                return outcome
            await asyncio.sleep(retry_delay)
            continue
        return await _finish(engine, context, output, poll_interval=poll_interval)


async def _finish(
    engine: RunEngine, context: RunContext, output: JSON, *, poll_interval: float
) -> RunState | None:
    """Record success; a run paused after its last step succeeds once it is resumed."""
    while True:
        try:
            return await engine.succeed(context.run_id, output=output)
        except InvalidTransition:
            state = await engine.get_run(context.run_id)
            if state is None or state.status is not RunStatus.PAUSED:
                # Cancelled, timed out, ...: the run's outcome was decided elsewhere.
                return state
            await asyncio.sleep(poll_interval)


async def _after_failure(
    engine: RunEngine, context: RunContext, exc: Exception, *, max_attempts: int
) -> RunState | None:
    """Record the outcome of a failed attempt; None means a retry was scheduled."""
    run_id = context.run_id
    current = await engine.get_run(run_id)
    if current is None or current.is_terminal:
        return current
    try:
        if current.status is RunStatus.CANCELLING or isinstance(exc, RunCancelledError):
            return await engine.cancel(run_id)
        error = describe_error(exc)
        if current.attempt < max_attempts:
            await engine.retry(run_id, error=error)
            return None
        return await engine.fail(run_id, error=error)
    except InvalidTransition:
        return await engine.get_run(run_id)


class Worker:
    """Runs queued runs with ``concurrency`` workers; fed by queued ``create_run`` and ``submit``.

    ``async with Worker(engine, handler) as worker: ...`` starts it and subscribes it to the
    engine's queued runs; ``await worker.join()`` waits until every submitted run is handled.
    The workers are asyncio tasks (threads in ``runstate.sync``).
    """

    def __init__(
        self,
        engine: RunEngine,
        handler: Handler,
        *,
        concurrency: int = 1,
        max_attempts: int = 3,
        retry_delay: float = 0.0,
        poll_interval: float = 0.05,
        name: str = "worker",
    ) -> None:
        if type(concurrency) is not int or concurrency < 1:
            raise InvalidInput(f"must be a positive int, got {concurrency!r}", field="concurrency")
        if type(max_attempts) is not int or max_attempts < 1:
            raise InvalidInput(
                f"must be a positive int, got {max_attempts!r}", field="max_attempts"
            )
        self.engine = engine
        self.handler = handler
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.poll_interval = poll_interval
        self.name = name
        # None tells a worker to end (threads of runstate.sync cannot be cancelled).
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._active: set[str] = set()
        self._workers = WorkerTasks()
        self._unsubscribe: Callable[[], None] | None = None
        self.results: dict[str, RunState] = {}

    def submit(self, run_id: str) -> None:
        """Queue a run for this worker; runs not QUEUED when picked up are skipped."""
        self._queue.put_nowait(run_id)

    async def start(self) -> None:
        """Start the workers and take every run the engine creates queued."""
        if self._workers:
            return
        self._unsubscribe = self.engine.on_queued(lambda state: self.submit(state.run_id))
        self._workers.start(self.concurrency, self._work, self.name)

    async def join(self) -> None:
        """Wait until every run submitted so far has been handled."""
        await self._queue.join()

    async def stop(self) -> None:
        """Stop taking runs and end the workers; runs still queued stay queued.

        Tasks are cancelled, and the runs they drive stay as they are (RUNNING); threads
        (``runstate.sync``) finish the run they drive first.
        """
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self._workers.stop(self._queue)

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _work(self, index: int) -> None:
        while True:
            run_id = await self._queue.get()
            try:
                if run_id is None:
                    return
                if self._workers.stopping:
                    # Left for a later start, behind the signals to end that stop() queued.
                    self._queue.put_nowait(run_id)
                    continue
                if run_id in self._active:
                    continue  # the worker driving it already handles the run
                self._active.add(run_id)
                try:
                    state = await drive(
                        self.engine,
                        run_id,
                        self.handler,
                        max_attempts=self.max_attempts,
                        retry_delay=self.retry_delay,
                        poll_interval=self.poll_interval,
                        worker_name=f"{self.name}-{index}",
                    )
                finally:
                    self._active.discard(run_id)
                if state is not None:
                    self.results[run_id] = state
            except asyncio.CancelledError:
                raise
            except Exception:
                # One bad run (or a store outage) must not kill the worker; resubmit to retry.
                logger.exception("worker %s-%d failed to drive run %s", self.name, index, run_id)
            finally:
                self._queue.task_done()


async def run_sync(
    engine: RunEngine,
    metadata: RunMetadata,
    handler: Handler,
    *,
    max_attempts: int = 1,
    retry_delay: float = 0.0,
    idempotency_key: str | None = None,
) -> RunState:
    """Create a run already RUNNING (``mode="sync"``) and drive it to an outcome, in the caller."""
    await engine.create_run(metadata, mode="sync", idempotency_key=idempotency_key)
    state = await drive(
        engine,
        metadata.run_id,
        handler,
        max_attempts=max_attempts,
        retry_delay=retry_delay,
        worker_name="sync",
        already_started=True,
    )
    if state is None:
        # Not ours to drive: an idempotent retry of a run that already moved on.
        state = await engine.get_run(metadata.run_id)
        if state is None:  # pragma: no cover - runs are never deleted
            raise RunNotFound(metadata.run_id)
    return state

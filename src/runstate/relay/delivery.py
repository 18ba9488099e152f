"""The outbox relay: claims outbox records and delivers them to a sink, in seq order per run.

Delivery is at least once: a crash between publish and ``mark_delivered`` re-sends the record
later with the same message id (``<run_id>:<seq>``), which brokers and consumers deduplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .._url import mask_url
from .._validation import check_count
from ..errors import InvalidInput, RunStateError, StoreUnavailable
from ..sinks.base import BaseSink
from ..sinks.cloudevents import check_source, store_source
from ..store import OutboxStore, Sink
from ..tracing import ENABLED as TRACING
from ..tracing import PublishTracer
from ..types import DeliveryOutcome, DeliveryStatus, OutboxRecord, utc_now
from ._ahead import ClaimAhead
from .metrics import RelayMetrics, default_metrics

logger = logging.getLogger("runstate.relay")


@dataclass(frozen=True, kw_only=True, slots=True)
class RelayReport:
    """What a relay run did: records delivered, retried, dead-lettered, released; batches."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    released: int = 0
    batches: int = 0


class _Counts:
    __slots__ = ("batches", "dead", "delivered", "released", "retried")

    def __init__(self) -> None:
        self.delivered = self.retried = self.dead = self.released = self.batches = 0

    def report(self) -> RelayReport:
        return RelayReport(
            delivered=self.delivered,
            retried=self.retried,
            dead=self.dead,
            released=self.released,
            batches=self.batches,
        )


#: The most concurrent delivery workers one relay runs.
MAX_WORKERS = 1024


def _check_settings(
    workers: object,
    batch_size: object,
    max_attempts: object,
    lease_seconds: object,
    poll_interval: object,
) -> None:
    check_count(workers, "workers", minimum=1)
    if workers > MAX_WORKERS:  # type: ignore[operator]
        raise InvalidInput(f"must be at most {MAX_WORKERS}, got {workers}", field="workers")
    check_count(batch_size, "batch_size", minimum=1)
    check_count(max_attempts, "max_attempts", minimum=1)
    for name, value in (("lease_seconds", lease_seconds), ("poll_interval", poll_interval)):
        if type(value) not in (int, float) or not 0 < value < 10**9:  # type: ignore[operator]
            raise InvalidInput(f"must be a positive number of seconds, got {value!r}", field=name)


def first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception to report for a group: its first runstate error, else its first leaf."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        current = pending.pop(0)
        if isinstance(current, BaseExceptionGroup):
            pending[:0] = list(current.exceptions)
        else:
            leaves.append(current)
    for leaf in leaves:
        if isinstance(leaf, RunStateError):
            return leaf
    return leaves[0]


def _publish_tracer(sink: Sink, label: str) -> PublishTracer:
    # Sinks derived from BaseSink name their messaging system and destinations; any other
    # Sink is described by its URL's scheme and name.
    system = getattr(sink, "messaging_system", "") or label
    destination = getattr(sink, "trace_destination", None)
    return PublishTracer(system, destination or (lambda _record: sink.name))


def default_owner() -> str:
    """A lease owner id unique to this relay instance: host, pid and a random suffix."""
    return f"relay-{socket.gethostname()[:180]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Relay:
    """Deliver outbox records from ``store`` to ``sink`` with ``workers`` concurrent loops.

    The caller opens and closes the sink. Each worker claims a batch (the store guarantees
    per-run prefix order across workers and processes), publishes it, marks what was delivered,
    schedules a retry with exponential backoff and full jitter for a run's first failed record
    (dead-lettering it after ``max_attempts`` or on a permanent error) and releases the run's
    later records, so a failing record holds back only its own run.

    The CloudEvents ``source`` of a built-in sink is the sink's own ``source`` option, else
    ``source`` here, else ``runstate://<store id>`` (``OutboxStore.store_id``): stable for a
    store and distinct between stores, so ``source`` + ``id`` never clash across deployments.
    """

    def __init__(
        self,
        store: OutboxStore,
        sink: Sink,
        *,
        workers: int = 1,
        batch_size: int = 100,
        lease_seconds: float = 30.0,
        max_attempts: int = 10,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        poll_interval: float = 1.0,
        stats_interval: float = 15.0,
        owner: str | None = None,
        retention: timedelta | None = None,
        purge_interval: float = 60.0,
        purge_batch: int = 1000,
        metrics: RelayMetrics | None = None,
        rng: random.Random | None = None,
        source: str | None = None,
    ) -> None:
        _check_settings(workers, batch_size, max_attempts, lease_seconds, poll_interval)
        self.source = check_source(source)
        self.store = store
        self.sink = sink
        self.workers = workers
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self.stats_interval = stats_interval
        self.owner = owner or default_owner()
        self.retention = retention
        self.purge_interval = purge_interval
        self.purge_batch = purge_batch
        self.metrics = metrics if metrics is not None else default_metrics()
        self._rng = rng or random.Random()
        self._sink_label = sink.name.split("://", 1)[0] if "://" in sink.name else sink.name
        self._tracer = _publish_tracer(sink, self._sink_label) if TRACING else None
        self._stopping = asyncio.Event()
        self._counts = _Counts()
        self._next_retry: datetime | None = None

    def stop(self) -> None:
        """Ask every worker to finish its batch in flight, release its leases and return."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called since the current run began."""
        return self._stopping.is_set()

    async def run_once(self) -> RelayReport:
        """Deliver everything deliverable now (retries not yet due stay pending); return counts."""
        return await self._run(forever=False)

    async def run_forever(self) -> RelayReport:
        """Deliver until ``stop()``, waking on new records or every ``poll_interval``."""
        return await self._run(forever=True)

    async def _run(self, *, forever: bool) -> RelayReport:
        self._stopping = asyncio.Event()
        self._counts = _Counts()
        await self._give_sink_its_source()
        # Scrapes read the backlog fresh (at most 1 s old), not the stats loop's last look.
        self.metrics.watch_backlog(asyncio.get_running_loop(), self._update_stats)
        logger.info(
            "relay %s started: sink %s, %d worker(s), batch %d%s",
            self.owner,
            mask_url(self.sink.name),
            self.workers,
            self.batch_size,
            "" if forever else ", once",
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                stats = tasks.create_task(self._stats_loop()) if forever else None
                retention = (
                    tasks.create_task(self._retention_loop())
                    if forever and self.retention is not None
                    else None
                )
                workers = [
                    tasks.create_task(self._worker(f"{self.owner}-w{index}", forever=forever))
                    for index in range(self.workers)
                ]
                await asyncio.gather(*workers)
                for helper in (stats, retention):
                    if helper is not None:
                        helper.cancel()
        except BaseExceptionGroup as group:
            # The workers' own failure (a store error, say), not the task group around it:
            # callers and the CLI report one reason.
            failure = first_failure(group)
            raise failure from failure.__cause__
        finally:
            self.metrics.unwatch_backlog(self._update_stats)
        await self._update_stats()
        report = self._counts.report()
        logger.info(
            "relay %s finished: %d delivered, %d retried, %d dead-lettered, %d released",
            self.owner,
            report.delivered,
            report.retried,
            report.dead,
            report.released,
        )
        return report

    async def _give_sink_its_source(self) -> None:
        if isinstance(self.sink, BaseSink) and self.sink.source is None:
            self.sink.source = self.source or store_source(await self.store.store_id())

    async def _worker(self, owner: str, *, forever: bool) -> None:
        failures = 0
        # Under a backlog (the last claim filled its batch), the next batch is claimed while
        # this one is delivered, so the database works on the claim while this process
        # publishes instead of each waiting for the other. The store keeps per-run order: a
        # run whose records are still leased is not claimed ahead.
        ahead: ClaimAhead | None = None
        try:
            while not self._stopping.is_set():
                fresh = ahead is None
                try:
                    if ahead is None:
                        batch = await self._claim(owner)
                    else:
                        taken, ahead = ahead, None
                        batch = await self._take(owner, taken)
                    if batch:
                        if len(batch) >= self.batch_size and not self._stopping.is_set():
                            ahead = ClaimAhead(self._claim(owner))
                        # A store failure while recording the outcome (mark_delivered,
                        # mark_failed, release) is survived like a failed claim: the batch's
                        # leases expire and its records are delivered again, under the same
                        # message ids.
                        await self._deliver(owner, batch)
                except StoreUnavailable as exc:
                    if not forever or not exc.retryable:
                        raise
                    failures += 1
                    delay = min(self.backoff_max, self.poll_interval * 2 ** min(failures, 6))
                    logger.warning(
                        "relay %s: store unavailable (%s); retry in %.1fs", owner, exc, delay
                    )
                    await self._sleep(delay)
                    continue
                failures = 0
                # A batch claimed ahead predates the delivery: what was committed meanwhile
                # is looked for again before going idle.
                if batch or not fresh:
                    continue
                if not forever:
                    return
                await self._idle_wait()
        finally:
            if ahead is not None:
                await asyncio.shield(ahead.give_back(self.store, owner))

    def _claim(self, owner: str) -> Coroutine[Any, Any, list[OutboxRecord]]:
        return self.store.claim_outbox_batch(
            owner=owner, limit=self.batch_size, lease_seconds=self.lease_seconds
        )

    async def _take(self, owner: str, ahead: ClaimAhead) -> list[OutboxRecord]:
        """The batch claimed ahead; claimed again if it waited for half its lease or more."""
        batch = await ahead.task
        if time.monotonic() - ahead.started < self.lease_seconds / 2:
            return batch
        await ahead.give_back(self.store, owner)
        return await self._claim(owner)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _idle_wait(self) -> None:
        timeout = self.poll_interval
        if self._next_retry is not None:
            # Wake for our own scheduled retries: stores only signal new or released records.
            due = (self._next_retry - utc_now()).total_seconds()
            if due <= 0:
                self._next_retry = None
            timeout = max(0.001, min(timeout, due))
        waiter = asyncio.ensure_future(self.store.wait_for_outbox(timeout))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stopper):
                task.cancel()
            await asyncio.gather(waiter, stopper, return_exceptions=True)
        if waiter.done() and not waiter.cancelled() and waiter.exception() is not None:
            exc = waiter.exception()
            logger.warning("relay %s: wait_for_outbox failed: %s", self.owner, exc)
            await self._sleep(self.poll_interval)

    async def _deliver(self, owner: str, batch: list[OutboxRecord]) -> None:
        settled = False
        try:
            started = time.perf_counter()
            outcomes = await self._publish(batch)
            self.metrics.observe_publish(self._sink_label, time.perf_counter() - started)
            await self._settle(owner, batch, outcomes)
            settled = True
        finally:
            if not settled:
                # Cancelled or failed midway: hand the leases back so nothing waits for expiry.
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        self.store.release_outbox([r.outbox_id for r in batch], owner=owner)
                    )

    async def _publish(self, batch: list[OutboxRecord]) -> list[DeliveryOutcome]:
        spans = None if self._tracer is None else self._tracer.start(batch)
        outcomes: list[DeliveryOutcome] = []
        try:
            outcomes = list(await self.sink.publish(batch))
        except Exception as exc:
            error = mask_url(f"sink {self.sink.name} raised {type(exc).__name__}: {exc}")
            logger.exception("relay %s: %s", self.owner, error)
            outcomes = [DeliveryOutcome.retry(record, error) for record in batch]
        finally:
            if self._tracer is not None:
                # Every span ends, even when the publish is cancelled (outcomes then unknown).
                self._tracer.end(spans, batch, outcomes)
        return outcomes

    async def _settle(
        self, owner: str, batch: Sequence[OutboxRecord], outcomes: Sequence[DeliveryOutcome]
    ) -> None:
        by_id = {outcome.outbox_id: outcome for outcome in outcomes}
        delivered: list[int] = []
        failed: list[tuple[OutboxRecord, DeliveryOutcome]] = []
        released: list[int] = []
        blocked: set[str] = set()
        for record in batch:
            run_id = record.event.run_id
            outcome = by_id.get(record.outbox_id) or DeliveryOutcome.retry(
                record, f"sink {self.sink.name} reported no outcome"
            )
            if run_id in blocked:
                # Even if the sink delivered it: it is re-sent after the earlier record, and
                # its message id lets the broker or consumer drop the duplicate.
                released.append(record.outbox_id)
            elif outcome.status is DeliveryStatus.DELIVERED:
                delivered.append(record.outbox_id)
            elif outcome.status is DeliveryStatus.SKIPPED:
                released.append(record.outbox_id)
                blocked.add(run_id)
            else:
                failed.append((record, outcome))
                blocked.add(run_id)
        counts = self._counts
        if delivered:
            done = await self.store.mark_delivered(delivered, owner=owner)
            if done < len(delivered):
                logger.warning(
                    "relay %s: %d lease(s) expired before delivery was recorded; "
                    "those records will be delivered again",
                    owner,
                    len(delivered) - done,
                )
            counts.delivered += len(delivered)
            self.metrics.record_delivered(self._sink_label, len(delivered))
        for record, outcome in failed:
            await self._fail(owner, record, outcome)
        if released:
            await self.store.release_outbox(released, owner=owner)
            counts.released += len(released)
        counts.batches += 1

    async def _fail(self, owner: str, record: OutboxRecord, outcome: DeliveryOutcome) -> None:
        attempt = record.attempts + 1
        error = mask_url(outcome.error or "delivery failed")
        permanent = outcome.status is DeliveryStatus.DEAD
        if permanent or attempt >= self.max_attempts:
            await self.store.mark_failed(record.outbox_id, owner=owner, error=error, retry_at=None)
            self._counts.dead += 1
            self.metrics.record_dead_letters(self._sink_label, 1)
            logger.error(
                "relay: %s dead-lettered after %d attempt(s) (%s) to %s: %s",
                record.message_id,
                attempt,
                "permanent error" if permanent else "max attempts reached",
                self.sink.name,
                error,
            )
            return
        delay = self.backoff_delay(attempt, outcome.retry_after)
        retry_at = utc_now() + timedelta(seconds=delay)
        await self.store.mark_failed(record.outbox_id, owner=owner, error=error, retry_at=retry_at)
        if self._next_retry is None or retry_at < self._next_retry:
            self._next_retry = retry_at
        self._counts.retried += 1
        self.metrics.record_failed(self._sink_label, 1)
        logger.warning(
            "relay: delivery of %s to %s failed (attempt %d/%d), retry in %.2fs: %s",
            record.message_id,
            self.sink.name,
            attempt,
            self.max_attempts,
            delay,
            error,
        )

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry ``attempt + 1``: full jitter over an exponential, capped."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** min(attempt - 1, 62))
        delay = self._rng.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    async def _stats_loop(self) -> None:
        if self.stats_interval <= 0:
            return
        while not self._stopping.is_set():
            await self._update_stats()
            await self._sleep(self.stats_interval)

    async def _retention_loop(self) -> None:
        """Delete deliveries older than ``retention`` in small batches, never all at once."""
        assert self.retention is not None
        while not self._stopping.is_set():
            await self.purge_once()
            await self._sleep(self.purge_interval)

    async def purge_once(self) -> int:
        """Purge every delivery older than ``retention`` now, batch by batch; return how many."""
        if self.retention is None:
            return 0
        cutoff = utc_now() - self.retention
        total = 0
        while not self._stopping.is_set():
            try:
                purged = await self.store.purge_delivered(older_than=cutoff, limit=self.purge_batch)
            except RunStateError as exc:
                logger.warning("relay %s: purging delivered records failed: %s", self.owner, exc)
                break
            total += purged
            if purged < self.purge_batch:
                break
            # Yield between batches: each is its own short transaction, so writers interleave.
            await asyncio.sleep(0)
        if total:
            logger.info("relay %s: purged %d delivered record(s)", self.owner, total)
        return total

    async def _update_stats(self) -> None:
        try:
            stats = await self.store.outbox_stats()
        except Exception as exc:
            logger.debug("relay %s: outbox_stats failed: %s", self.owner, exc)
            return
        oldest = stats.oldest_pending_at
        self.metrics.set_backlog(
            pending=stats.pending,
            in_flight=stats.in_flight,
            dead=stats.dead,
            oldest_age_seconds=None if oldest is None else (utc_now() - oldest).total_seconds(),
        )

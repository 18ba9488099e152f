"""What every sink implements, the per-record outcome it reports, and shared helpers."""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .._url import mask_secret, mask_url
from ..errors import InvalidInput
from ..types import OutboxRecord

MAX_ERROR_LENGTH = 1000


class DeliveryStatus(enum.StrEnum):
    """What became of one record handed to a sink."""

    DELIVERED = "delivered"
    """The broker or receiver acknowledged it."""
    RETRY = "retry"
    """A transient failure: try again later."""
    DEAD = "dead"
    """A permanent failure: dead-letter it (until an operator redrives it)."""
    SKIPPED = "skipped"
    """Not attempted, because an earlier record of the same run failed in this batch."""


@dataclass(frozen=True, kw_only=True, slots=True)
class DeliveryOutcome:
    """The sink's verdict on one record; ``retry_after`` is a server hint in seconds."""

    outbox_id: int
    status: DeliveryStatus
    error: str | None = None
    retry_after: float | None = None

    @classmethod
    def delivered(cls, record: OutboxRecord) -> DeliveryOutcome:
        """The record was acknowledged."""
        return cls(outbox_id=record.outbox_id, status=DeliveryStatus.DELIVERED)

    @classmethod
    def retry(
        cls, record: OutboxRecord, error: str, *, retry_after: float | None = None
    ) -> DeliveryOutcome:
        """The record failed transiently."""
        return cls(
            outbox_id=record.outbox_id,
            status=DeliveryStatus.RETRY,
            error=error[:MAX_ERROR_LENGTH],
            retry_after=retry_after,
        )

    @classmethod
    def dead(cls, record: OutboxRecord, error: str) -> DeliveryOutcome:
        """The record failed permanently."""
        return cls(
            outbox_id=record.outbox_id, status=DeliveryStatus.DEAD, error=error[:MAX_ERROR_LENGTH]
        )

    @classmethod
    def skipped(cls, record: OutboxRecord) -> DeliveryOutcome:
        """The record was not attempted."""
        return cls(outbox_id=record.outbox_id, status=DeliveryStatus.SKIPPED)


class SinkError(Exception):
    """A delivery failed; ``permanent`` failures are dead-lettered, the others retried."""

    permanent = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class PermanentDeliveryError(SinkError):
    """A delivery that can never succeed as it is (e.g. HTTP 400): dead-letter it."""

    permanent = True


@runtime_checkable
class Sink(Protocol):
    """A destination for outbox records.

    ``publish`` returns one outcome per record, in batch order. A sink must not deliver a
    record of a run after an earlier record of that run failed in the same batch: it reports
    such records ``SKIPPED`` (or whatever happened to them; the relay releases every record of
    a run after the run's first failure, whatever the sink said).
    """

    name: str
    """A label for logs and metrics, with every secret masked."""

    async def open(self) -> None:
        """Prepare connections; a broker that is down must not make this raise."""
        ...

    async def publish(self, batch: Sequence[OutboxRecord]) -> list[DeliveryOutcome]:
        """Deliver the records and report what happened to each, in batch order."""
        ...

    async def close(self) -> None:
        """Release connections; idempotent."""
        ...


class BaseSink:
    """Shared plumbing: ``async with``, masked error text, outcome bookkeeping."""

    name: str = "sink"
    _url: str = ""

    async def open(self) -> None:
        """Prepare connections; nothing by default."""

    async def close(self) -> None:
        """Release connections; nothing by default."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def describe(self, exc: BaseException) -> str:
        """Describe an exception for logs and the outbox, with this sink's secrets masked."""
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return mask_secret(text, self._url)[:MAX_ERROR_LENGTH]

    def outcome_for(self, record: OutboxRecord, exc: BaseException) -> DeliveryOutcome:
        """Turn a failure into a retry or, for ``PermanentDeliveryError``, a dead letter."""
        if isinstance(exc, SinkError) and exc.permanent:
            return DeliveryOutcome.dead(record, self.describe(exc))
        retry_after = exc.retry_after if isinstance(exc, SinkError) else None
        return DeliveryOutcome.retry(record, self.describe(exc), retry_after=retry_after)

    def all_retry(self, batch: Sequence[OutboxRecord], exc: BaseException) -> list[DeliveryOutcome]:
        """Report the whole batch as transiently failed."""
        return [self.outcome_for(record, exc) for record in batch]


def group_by_run(batch: Sequence[OutboxRecord]) -> dict[str, list[int]]:
    """Map each run id to the batch indexes of its records, in batch order."""
    groups: dict[str, list[int]] = {}
    for index, record in enumerate(batch):
        groups.setdefault(record.event.run_id, []).append(index)
    return groups


async def publish_per_run(
    sink: BaseSink,
    batch: Sequence[OutboxRecord],
    publish_one: Callable[[OutboxRecord], Awaitable[None]],
    *,
    concurrency: int = 1,
) -> list[DeliveryOutcome]:
    """Publish each run's records one after another, runs concurrently, skipping after a failure.

    ``publish_one`` returns on success and raises on failure; raising ``PermanentDeliveryError``
    dead-letters the record.
    """
    outcomes: list[DeliveryOutcome | None] = [None] * len(batch)
    limit = asyncio.Semaphore(max(1, concurrency))

    async def chain(indexes: list[int]) -> None:
        failed = False
        for index in indexes:
            record = batch[index]
            if failed:
                outcomes[index] = DeliveryOutcome.skipped(record)
                continue
            try:
                async with limit:
                    await publish_one(record)
            except Exception as exc:
                outcomes[index] = sink.outcome_for(record, exc)
                failed = True
            else:
                outcomes[index] = DeliveryOutcome.delivered(record)

    groups = group_by_run(batch)
    if concurrency <= 1 or len(groups) == 1:
        for indexes in groups.values():
            await chain(indexes)
    else:
        async with asyncio.TaskGroup() as tasks:
            for indexes in groups.values():
                tasks.create_task(chain(indexes))
    return [outcome for outcome in outcomes if outcome is not None]


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a sink URL into the URL without its query and the query's parameters."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit(parts._replace(query="", fragment="")), query


def sink_options(
    url: str, options: Mapping[str, Any], known: set[str]
) -> tuple[str, dict[str, Any]]:
    """Merge URL query parameters with keyword options (which win); refuse unknown names."""
    base, query = split_url(url)
    merged: dict[str, Any] = {**query, **options}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise InvalidInput(
            f"unknown sink option(s) {', '.join(unknown)} for {mask_url(base)!r} "
            f"(supported: {', '.join(sorted(known))})",
            field="sink_url",
        )
    return base, merged


def option_float(options: Mapping[str, Any], name: str, default: float) -> float:
    """Read a positive number option given as a number or a string."""
    value = options.get(name, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"must be a number, got {value!r}", field=name) from None
    if not number > 0:
        raise InvalidInput(f"must be positive, got {value!r}", field=name)
    return number


def option_int(options: Mapping[str, Any], name: str, default: int | None) -> int | None:
    """Read a positive integer option given as a number or a string."""
    value = options.get(name, default)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"must be an integer, got {value!r}", field=name) from None
    if number <= 0:
        raise InvalidInput(f"must be positive, got {value!r}", field=name)
    return number


_TEMPLATE_FIELD = re.compile(r"\{(workflow|type|run_id)\}")
_TOKEN_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def render_subject(template: str, record: OutboxRecord) -> str:
    """Fill ``{workflow}``, ``{type}``, ``{run_id}`` into a subject or routing key template.

    Each value becomes one token: characters other than letters, digits, ``_`` and ``-`` (dots
    and wildcards included) are replaced by ``_``.
    """
    if "{" not in template:
        return template
    values = {
        "workflow": record.workflow,
        "type": record.event.type,
        "run_id": record.event.run_id,
    }
    return _TEMPLATE_FIELD.sub(lambda m: _TOKEN_UNSAFE.sub("_", values[m.group(1)]), template)


def subject_wildcard(template: str) -> str:
    """The subject filter matching every subject a template renders to."""
    return _TEMPLATE_FIELD.sub("*", template)

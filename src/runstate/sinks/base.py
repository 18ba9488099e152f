"""What sinks share: ``BaseSink``, per-run publishing, URL options, subject templates.

The ``Sink`` protocol lives in ``runstate.store`` with every other interface, and the outcome
and error types in ``runstate.types`` and ``runstate.errors``; they are re-exported here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .._url import mask_url
from ..errors import InvalidInput, PermanentDeliveryError, SinkError
from ..store import Sink
from ..types import MAX_DELIVERY_ERROR_LENGTH, DeliveryOutcome, DeliveryStatus, OutboxRecord
from .cloudevents import SOURCE

__all__ = [
    "MAX_ERROR_LENGTH",
    "BaseSink",
    "DeliveryOutcome",
    "DeliveryStatus",
    "PermanentDeliveryError",
    "Sink",
    "SinkError",
    "group_by_run",
    "option_float",
    "option_int",
    "publish_per_run",
    "render_subject",
    "sink_options",
    "split_url",
    "subject_wildcard",
]

MAX_ERROR_LENGTH = MAX_DELIVERY_ERROR_LENGTH


class BaseSink:
    """Shared plumbing: ``async with``, masked error text, outcome bookkeeping."""

    name: str = "sink"
    _url: str = ""
    source: str | None = None
    """The CloudEvents ``source`` this sink sends; when None the relay sets its store's."""

    @property
    def event_source(self) -> str:
        """The ``source`` to put in each CloudEvent: the configured one, else ``SOURCE``."""
        return self.source or SOURCE

    #: ``messaging.system`` of the relay's publish spans (empty: the sink URL's scheme).
    messaging_system: str = ""

    def trace_destination(self, record: OutboxRecord) -> str:
        """``messaging.destination.name`` of a record's publish span: the sink by default."""
        return self.name

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
        return mask_url(text, self._url)[:MAX_ERROR_LENGTH]

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
            f"unknown sink option(s) {', '.join(unknown)} for {mask_url(base, base)!r} "
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

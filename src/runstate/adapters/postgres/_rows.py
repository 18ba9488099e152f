"""Rows in and out of PostgreSQL: the write functions' arrays and results, and values from
the rows of the reads (events, metadata, run summaries, outbox records and stats, the feed).

JSON columns arrive as text and are decoded here, row by row, so that one row that cannot be
decoded stays that row's problem (see ``adapters/_decode.py``). Timestamps arrive as aware
datetimes, or, when the driver could not build one (a date past year 9999), as the raw
microseconds since 2000-01-01 UTC of ``RAW_TIMESTAMP_CODEC``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ..._validation import MAX_INT64, CheckedEvent
from ...errors import InvalidInput, UnreadableRecord
from ...types import (
    AppendResult,
    FeedPage,
    OutboxRecord,
    OutboxStats,
    RunEventPersisted,
    RunMetadata,
    RunSummary,
    new_append_result,
    new_outbox_record,
    new_persisted_event,
)
from .._base import persisted_event
from .._decode import DECODE_ERRORS, decode_rows, load_labels, load_payload, reason, report

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MAX_XID8 = 2**64 - 1
_loads = json.loads


def _raw_timestamp_encode(value: datetime) -> tuple[int]:
    return ((value - _PG_EPOCH) // _MICROSECOND,)


def _raw_timestamp_decode(value: tuple[int]) -> int:
    return value[0]


#: ``set_type_codec`` arguments that make the driver pass timestamptz as raw microseconds,
#: for reading rows again when one of them holds a date no datetime can.
RAW_TIMESTAMP_CODEC: dict[str, Any] = {
    "encoder": _raw_timestamp_encode,
    "decoder": _raw_timestamp_decode,
    "schema": "pg_catalog",
    "format": "tuple",
}


def utc_column(value: Any) -> datetime:
    """A timestamp column as an aware UTC datetime; raises for values no datetime holds."""
    if type(value) is int:
        return _PG_EPOCH + timedelta(microseconds=value)
    if value.tzinfo is UTC:
        # asyncpg's own: every timestamp read takes this path.
        return value  # type: ignore[no-any-return]
    if value.tzinfo is None:
        # The driver's stand-ins for -infinity and infinity: no instant at all.
        raise ValueError(f"the timestamp is {'-' if value.year == 1 else ''}infinity")
    result: datetime = value.astimezone(UTC)
    return result


def event_rows(events: list[CheckedEvent]) -> list[list[Any]]:
    """The batch functions' events, one JSON-ready list each: id, type, payload (JSON
    text), schema version, occurred_at (ISO 8601 in UTC, or ``None``)."""
    return [
        [
            item.event.event_id,
            item.event.type,
            item.payload_json,
            item.event.schema_version,
            None if item.occurred_at is None else item.occurred_at.isoformat(),
        ]
        for item in events
    ]


def append_result(
    run_id: str,
    events: list[CheckedEvent],
    appended_indexes: list[int],
    positions: Sequence[int] | None,
    last_seq: int,
    recorded_at: datetime | None,
) -> AppendResult:
    """Build the result; ``appended_indexes`` are 0-based indexes into ``events``."""
    stored_positions: list[int] = list(positions or ())
    first_seq = last_seq - len(appended_indexes) + 1
    appended = []
    if appended_indexes:
        assert recorded_at is not None
        recorded = utc_column(recorded_at)
        for offset, (index, position) in enumerate(
            zip(appended_indexes, stored_positions, strict=True)
        ):
            appended.append(
                persisted_event(events[index], run_id, first_seq + offset, position, recorded)
            )
    if len(appended_indexes) == len(events):
        deduplicated: tuple[str, ...] = ()
    else:
        kept = set(appended_indexes)
        deduplicated = tuple(
            item.event.event_id for index, item in enumerate(events) if index not in kept
        )
    result: AppendResult = new_append_result(run_id, tuple(appended), deduplicated, last_seq)
    return result


def event_from_row(row: Mapping[str, Any]) -> RunEventPersisted:
    """Build a stored event from a row of ``run_events`` columns."""
    occurred_at = row["occurred_at"]
    event: RunEventPersisted = new_persisted_event(
        row["run_id"],
        row["seq"],
        row["position"],
        row["type"],
        load_payload(row["payload"]),
        row["event_id"],
        row["schema_version"],
        None if occurred_at is None else utc_column(occurred_at),
        utc_column(row["recorded_at"]),
    )
    return event


def events_from_rows(rows: list[Any], *, skip: bool) -> list[RunEventPersisted]:
    """Decode event rows: an unreadable one raises (one run's read) or is left out (``skip``)."""
    return decode_rows(
        rows,
        event_from_row,
        lambda row, exc: UnreadableRecord(row["run_id"], seq=row["seq"], reason=reason(exc)),
        skip=skip,
    )


def record_from_row(row: Mapping[str, Any]) -> OutboxRecord:
    """Build a claimed outbox record from a row of the ``claim`` query."""
    expires = row["lease_expires_at"]
    record: OutboxRecord = new_outbox_record(
        row["outbox_id"],
        event_from_row(row),
        row["workflow"],
        row["attempts"],
        row["lease_owner"],
        None if expires is None else utc_column(expires),
        row["traceparent"],
        row["tracestate"],
    )
    return record


def records_from_rows(rows: list[Any]) -> tuple[list[OutboxRecord], list[tuple[int, str]]]:
    """Decode claimed rows, run by run in seq order, keeping each run's order.

    Returns the records and the ``(outbox_id, error)`` of each record that cannot be read
    back, to dead-letter. A run's records after its unreadable one are left out of the
    records (the caller releases them): its run waits behind the dead letter.
    """
    records: list[OutboxRecord] = []
    unreadable: list[tuple[int, str]] = []
    blocked: set[str] = set()
    for row in rows:
        run_id = row["run_id"]
        if run_id in blocked:
            continue
        try:
            records.append(record_from_row(row))
        except DECODE_ERRORS as exc:
            problem = UnreadableRecord(run_id, seq=row["seq"], reason=reason(exc))
            report(problem, "its outbox record is dead-lettered")
            unreadable.append((row["outbox_id"], f"{problem} ({problem.code})"))
            blocked.add(run_id)
    return records, unreadable


def stats_from_row(row: Mapping[str, Any]) -> OutboxStats:
    """Build the outbox summary from the row of the ``stats`` query."""
    oldest = row["oldest_pending_at"]
    try:
        oldest_at = None if oldest is None else utc_column(oldest)
    except DECODE_ERRORS:
        oldest_at = None  # a statistic: a damaged row's time is unknown, not an error
    return OutboxStats(
        pending=row["pending"],
        in_flight=row["in_flight"],
        dead=row["dead"],
        delivered=row["delivered"],
        oldest_pending_at=oldest_at,
    )


def metadata_from_row(row: Mapping[str, Any]) -> RunMetadata:
    """Build run metadata from a row of ``run_metadata`` columns."""
    return RunMetadata(
        run_id=row["run_id"],
        workflow=row["workflow"],
        workflow_version=row["workflow_version"],
        tenant_id=row["tenant_id"],
        parent_run_id=row["parent_run_id"],
        input=_loads(row["input"]),
        labels=load_labels(row["labels"]),
        created_at=utc_column(row["created_at"]),
        schema_version=row["schema_version"],
    )


def summary_from_row(row: Mapping[str, Any]) -> RunSummary:
    """Build a run summary from a row of ``run_metadata`` and ``run_summaries`` columns."""
    started, finished = row["started_at"], row["finished_at"]
    return RunSummary(
        metadata=metadata_from_row(row),
        last_seq=row["last_seq"],
        updated_at=utc_column(row["updated_at"]),
        status=row["status"],
        attempt=row["attempt"],
        started_at=None if started is None else utc_column(started),
        finished_at=None if finished is None else utc_column(finished),
    )


def summaries_from_rows(rows: list[Any]) -> list[RunSummary]:
    """Decode ``list_runs`` rows; an unreadable run is left out and logged."""
    return decode_rows(
        rows,
        summary_from_row,
        lambda row, exc: UnreadableRecord(row["run_id"], reason=reason(exc)),
        skip=True,
    )


def parse_feed_cursor(cursor: object) -> tuple[str, int]:
    """Split a feed cursor ``"<transaction id>:<position>"``; ``None`` is the start."""
    if cursor is None:
        return "0", 0
    if type(cursor) is str:
        tx_id, _, position = cursor.partition(":")
        if (
            tx_id.isascii()
            and tx_id.isdigit()
            and position.isascii()
            and position.isdigit()
            and len(tx_id) <= 20
            and len(position) <= 19
            and int(tx_id) <= _MAX_XID8
            and int(position) <= MAX_INT64
        ):
            return tx_id, int(position)
    shown = cursor[:60] if type(cursor) is str else cursor
    raise InvalidInput(f"not a cursor of this store: {shown!r}", field="cursor")


def feed_page(rows: list[Mapping[str, Any]], cursor: tuple[str, int]) -> FeedPage:
    """Build a feed page and the cursor after its last row: an unreadable event is left out
    (logged), and passed."""
    if not rows:
        return FeedPage(events=(), cursor=f"{cursor[0]}:{cursor[1]}")
    last = rows[-1]
    return FeedPage(
        events=tuple(events_from_rows(rows, skip=True)),
        cursor=f"{last['tx_id']}:{last['position']}",
    )

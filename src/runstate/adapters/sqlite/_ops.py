"""The SQLite adapter's transactions and reads of the store and the catalog.

Plain synchronous functions: each takes the connection as its first argument and runs on the
thread that owns it; the writes run inside the transaction that ``ConnectionThread.write``
opens. The SQL is in ``sql/queries.sql``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from ..._validation import CheckedEvent, CheckedMetadata
from ...errors import ConcurrencyConflict, RunAlreadyExists, RunNotFound, UnreadableRecord
from ...types import (
    AppendResult,
    RunBootstrapInput,
    RunEventPersisted,
    RunMetadata,
    RunSummary,
    new_append_result,
    new_persisted_event,
    new_run_metadata,
    new_run_summary,
    utc_now,
)
from .._base import first_occurrences, is_same_bootstrap, persisted_event, unique_first_event_ids
from .._catalog import SummaryState, fold_summary
from .._decode import decode_one, decode_rows, load_labels, load_payload, reason
from ._connect import from_us, to_us
from ._queries import Q
from ._writer import rollback

T = TypeVar("T")
_INSERT_RUN = Q["insert_run"]
_SELECT_RUN_HEAD = Q["select_run_head"]
_UPDATE_SUMMARY = Q["update_summary"]
_INSERT_EVENT = Q["insert_event"]
_INSERT_OUTBOX = Q["insert_outbox"]
_INSERT_TRACE = Q["insert_trace"]
_LIST_EVENTS = Q["list_events"]
_BEGIN_READ = Q["begin_read"]
_COMMIT = Q["commit"]
_loads = json.loads


def read(connection: sqlite3.Connection, function: Callable[..., T], *args: Any) -> T:
    """Run ``function(connection, *args)`` in one read transaction: one consistent snapshot.

    A failure ends the transaction too: a reader left inside one would keep its snapshot and
    miss every later commit.
    """
    connection.execute(_BEGIN_READ)
    try:
        result = function(connection, *args)
    except BaseException:
        rollback(connection)
        raise
    connection.execute(_COMMIT)
    return result


# -- writes of the store contract ------------------------------------------------------------


def bootstrap(
    connection: sqlite3.Connection,
    checked_metadata: CheckedMetadata,
    checked_events: list[CheckedEvent],
    request: RunBootstrapInput,
    trace: tuple[str, str | None] | None = None,
) -> AppendResult:
    """Insert a new run, its first events and their outbox records (in a write tx).

    ``trace`` is the W3C (traceparent, tracestate) to store with the events, if traced.
    """
    metadata = checked_metadata.metadata
    run_id = metadata.run_id
    # A new run has no stored events, so duplicates can only come from the call itself.
    firsts = first_occurrences(checked_events)
    fresh = [checked_events[index] for index in firsts]
    duplicates = []
    if len(fresh) < len(checked_events):
        kept = set(firsts)
        duplicates = [
            item.event.event_id for index, item in enumerate(checked_events) if index not in kept
        ]
    recorded_at = utc_now()
    # The run's summary is known before its events are written: seqs 1..n, one recorded time.
    summary = fold_summary(
        SummaryState(),
        [(i, item.event.type, item.occurred_at, recorded_at) for i, item in enumerate(fresh, 1)],
    )
    inserted = connection.execute(
        _INSERT_RUN,
        (
            run_id,
            metadata.workflow,
            metadata.workflow_version,
            metadata.tenant_id,
            metadata.parent_run_id,
            checked_metadata.input_json,
            checked_metadata.labels_json,
            to_us(checked_metadata.created_at),
            metadata.schema_version,
            len(fresh),
            summary.status,
            summary.attempt,
            to_us(recorded_at),
            _us(summary.started_at),
            _us(summary.finished_at),
        ),
    ).rowcount
    if not inserted:
        raise RunAlreadyExists(run_id, same_request=_same_request(connection, request))
    appended, _ = _insert_events(connection, run_id, 0, fresh, recorded_at)
    if trace is not None:
        _insert_traces(connection, appended, trace)
    result: AppendResult = new_append_result(run_id, appended, tuple(duplicates), len(fresh))
    return result


def append(
    connection: sqlite3.Connection,
    run_id: str,
    checked_events: list[CheckedEvent],
    expected_seq: int | None,
    trace: tuple[str, str | None] | None = None,
) -> AppendResult:
    """Append events to an existing run with their outbox records (in a write tx)."""
    head = connection.execute(_SELECT_RUN_HEAD, (run_id,)).fetchone()
    if head is None:
        raise RunNotFound(run_id)
    last_seq: int = head[1]
    if expected_seq is not None and expected_seq != last_seq:
        raise ConcurrencyConflict(run_id, expected_seq=expected_seq, actual_seq=last_seq)
    appended, duplicates = _insert_events(connection, run_id, last_seq, checked_events, utc_now())
    if appended:
        # The summary moves in the same transaction as the events it summarizes.
        before = SummaryState(
            status=head[2],
            attempt=head[3],
            last_seq=last_seq,
            started_at=None if head[4] is None else from_us(head[4]),
            finished_at=None if head[5] is None else from_us(head[5]),
        )
        summary = fold_summary(
            before, [(e.seq, e.type, e.occurred_at, e.recorded_at) for e in appended]
        )
        last_seq = summary.last_seq
        connection.execute(
            _UPDATE_SUMMARY,
            (
                last_seq,
                summary.status,
                summary.attempt,
                to_us(appended[-1].recorded_at),
                _us(summary.started_at),
                _us(summary.finished_at),
                run_id,
            ),
        )
        if trace is not None:
            _insert_traces(connection, appended, trace)
    result: AppendResult = new_append_result(run_id, appended, tuple(duplicates), last_seq)
    return result


def _us(value: datetime | None) -> int | None:
    return None if value is None else to_us(value)


def _insert_events(
    connection: sqlite3.Connection,
    run_id: str,
    last_seq: int,
    checked: list[CheckedEvent],
    recorded_at: datetime,
) -> tuple[tuple[RunEventPersisted, ...], list[str]]:
    execute = connection.execute
    recorded_us = to_us(recorded_at)
    appended: list[RunEventPersisted] = []
    duplicates: list[str] = []
    seq = last_seq
    for item in checked:
        event = item.event
        occurred_at = item.occurred_at
        cursor = execute(
            _INSERT_EVENT,
            (
                run_id,
                seq + 1,
                event.event_id,
                event.type,
                item.payload_json,
                event.schema_version,
                None if occurred_at is None else to_us(occurred_at),
                recorded_us,
            ),
        )
        # ON CONFLICT (run_id, event_id) DO NOTHING: no row means the event id is taken.
        if not cursor.rowcount:
            duplicates.append(event.event_id)
            continue
        seq += 1
        position = cursor.lastrowid
        assert position is not None  # a row was inserted
        execute(_INSERT_OUTBOX, (position, run_id, seq))
        appended.append(persisted_event(item, run_id, seq, position, recorded_at))
    return tuple(appended), duplicates


def _insert_traces(
    connection: sqlite3.Connection,
    appended: tuple[RunEventPersisted, ...],
    trace: tuple[str, str | None],
) -> None:
    traceparent, tracestate = trace
    connection.executemany(
        _INSERT_TRACE, [(event.position, traceparent, tracestate) for event in appended]
    )


def _same_request(connection: sqlite3.Connection, request: RunBootstrapInput) -> bool | None:
    try:
        stored = get_metadata(connection, request.metadata.run_id)
    except UnreadableRecord:
        return None  # the stored run cannot be compared
    if stored is None:
        return False
    wanted = len(unique_first_event_ids(request))
    stored_ids = [
        row[0] for row in connection.execute(Q["first_event_ids"], (stored.run_id, wanted))
    ]
    return is_same_bootstrap(request, stored, stored_ids)


# -- reads ---------------------------------------------------------------------------------


def list_events(
    connection: sqlite3.Connection, run_id: str, after_seq: int, limit: int | None
) -> list[RunEventPersisted]:
    """Return a page of the run's events in seq order; ``UnreadableRecord`` for a bad one."""
    rows = connection.execute(
        _LIST_EVENTS, (run_id, after_seq, -1 if limit is None else limit)
    ).fetchall()
    return decode_rows(
        rows,
        lambda row: event_from_row(run_id, *row),
        lambda row, exc: UnreadableRecord(run_id, seq=row[1], reason=reason(exc)),
        skip=False,
    )


def event_from_row(
    run_id: str,
    position: int,
    seq: int,
    type_: str,
    payload: str,
    event_id: str,
    schema_version: int,
    occurred_at: int | None,
    recorded_at: int,
) -> RunEventPersisted:
    """Build a stored event from a row of ``runstate_events`` columns (the run id apart)."""
    event: RunEventPersisted = new_persisted_event(
        run_id,
        seq,
        position,
        type_,
        load_payload(payload),
        event_id,
        schema_version,
        None if occurred_at is None else from_us(occurred_at),
        from_us(recorded_at),
    )
    return event


def get_metadata(connection: sqlite3.Connection, run_id: str) -> RunMetadata | None:
    """Return the run's metadata, or ``None``; ``UnreadableRecord`` if it cannot be decoded."""
    row = connection.execute(Q["select_run"], (run_id,)).fetchone()
    return None if row is None else decode_one(row, _row_metadata, run_id)


def _row_metadata(row: tuple[Any, ...]) -> RunMetadata:
    return _metadata(*row)


def _metadata(
    run_id: str,
    workflow: str,
    workflow_version: str | None,
    tenant_id: str | None,
    parent_run_id: str | None,
    input_json: str,
    labels_json: str,
    created_at: int,
    schema_version: int,
) -> RunMetadata:
    metadata: RunMetadata = new_run_metadata(
        run_id,
        workflow,
        workflow_version,
        tenant_id,
        parent_run_id,
        _loads(input_json),
        load_labels(labels_json),
        from_us(created_at),
        schema_version,
    )
    return metadata


def list_runs(
    connection: sqlite3.Connection,
    workflow: str | None,
    tenant_id: str | None,
    created_after: datetime | None,
    limit: int,
    offset: int,
) -> list[RunSummary]:
    """Return runs newest first, filtered and paged; an unreadable run is left out (logged)."""
    after_us = None if created_after is None else to_us(created_after)
    rows = connection.execute(
        Q["list_runs"], (workflow, tenant_id, after_us, limit, offset)
    ).fetchall()
    return decode_rows(
        rows,
        summary_from_row,
        lambda row, exc: UnreadableRecord(row[0], reason=reason(exc)),
        skip=True,
    )


def summary_from_row(row: tuple[Any, ...]) -> RunSummary:
    """Build a run summary from the 15 columns of the ``list_runs`` query."""
    summary: RunSummary = new_run_summary(
        _metadata(*row[:9]),
        row[9],
        from_us(row[10]),
        row[11],
        row[12],
        None if row[13] is None else from_us(row[13]),
        None if row[14] is None else from_us(row[14]),
    )
    return summary


def read_feed(
    connection: sqlite3.Connection, after_position: int, limit: int
) -> tuple[tuple[RunEventPersisted, ...], int]:
    """Return events of every run after ``after_position``, in position order, and the
    position to resume after: an unreadable event is left out (logged), and passed."""
    rows = connection.execute(Q["read_feed"], (after_position, limit)).fetchall()
    events = decode_rows(
        rows,
        lambda row: event_from_row(*row),
        lambda row, exc: UnreadableRecord(row[0], seq=row[2], reason=reason(exc)),
        skip=True,
    )
    return tuple(events), (rows[-1][1] if rows else after_position)


def head_position(connection: sqlite3.Connection) -> int:
    """Return the greatest committed position, 0 for an empty store."""
    return int(connection.execute(Q["head_position"]).fetchone()[0])


def data_version(connection: sqlite3.Connection) -> int:
    """Return ``PRAGMA data_version``: it changes when another connection commits."""
    return int(connection.execute(Q["data_version"]).fetchone()[0])

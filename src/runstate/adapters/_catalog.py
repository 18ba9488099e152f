"""What every adapter shares for run queries: the per-run summary fold, the validation of
``query_runs`` / ``count_runs_by_status`` / ``list_dead_letters`` arguments, and their cursors.

The summary fold is the projector's status, attempt and start/finish rules and nothing else
(``engine/projector.py``); the contract suite checks it against ``project`` on every adapter,
and the PostgreSQL trigger's SQL mapping is checked against ``NEXT_STATUS``.

A cursor is base64url JSON of ``[version, fingerprint, key, run_id]``: the fingerprint hashes
the normalized filter and order, so a cursor is refused with any other one; the key is the
sort value of the last run of the page (microseconds since the epoch for times).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .._validation import check_aware_datetime, check_count, check_identifier
from ..engine.lifecycle import (
    NEXT_STATUS,
    RUN_QUEUED,
    RUN_RETRY_SCHEDULED,
    RUN_STARTED,
    TERMINAL_STATUSES,
    RunStatus,
)
from ..errors import InvalidInput
from ..types import RunFilter, RunMetadata, RunSummary

#: The largest page ``query_runs`` returns.
MAX_QUERY_LIMIT = 1000
#: Every status a run can have, in lifecycle order (``count_runs_by_status`` keys).
STATUSES: tuple[str, ...] = tuple(status.value for status in RunStatus)
ORDERS: tuple[str, ...] = ("created_at", "updated_at", "workflow", "status")
_CURSOR_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATUS_OF = {status.value: status for status in RunStatus}
_NEXT = {(status.value, event_type): to.value for (status, event_type), to in NEXT_STATUS.items()}
_TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)


# -- the summary fold ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class SummaryState:
    """The projector's status, attempt and start/finish times of a run, as of ``last_seq``."""

    status: str = RunStatus.QUEUED.value
    attempt: int = 1
    last_seq: int = 0
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


def fold_summary(
    state: SummaryState, events: list[tuple[int, str, datetime | None, datetime]]
) -> SummaryState:
    """Fold ``(seq, type, occurred_at, recorded_at)`` events (seq order) into ``state``.

    Mirrors ``project``: the first ``RunQueued`` only starts the run; a lifecycle event moves
    the status when ``NEXT_STATUS`` allows it (else it is ignored, as an anomaly); step and
    custom events keep the status. ``RunStarted`` sets ``started_at`` once, a terminal status
    sets ``finished_at``, ``RunRetryScheduled`` counts an attempt.
    """
    status, attempt, last_seq = state.status, state.attempt, state.last_seq
    updated_at, started_at, finished_at = state.updated_at, state.started_at, state.finished_at
    for seq, event_type, occurred_at, recorded_at in events:
        if seq <= last_seq:
            continue
        bootstrapping = last_seq == 0
        last_seq = seq
        updated_at = recorded_at
        if bootstrapping and event_type == RUN_QUEUED:
            continue
        to_status = _NEXT.get((status, event_type))
        if to_status is None:
            continue
        status = to_status
        at = occurred_at or recorded_at
        if event_type == RUN_STARTED:
            if started_at is None:
                started_at = at
        elif event_type == RUN_RETRY_SCHEDULED:
            attempt += 1
        elif to_status in _TERMINAL:
            finished_at = at
    return SummaryState(
        status=status,
        attempt=attempt,
        last_seq=last_seq,
        updated_at=updated_at,
        started_at=started_at,
        finished_at=finished_at,
    )


# -- validation ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class RunQuery:
    """Validated ``query_runs`` / ``count_runs_by_status`` arguments, normalized.

    ``statuses`` is ``None`` for any status, else the statuses to include with the excluded
    ones already taken out (possibly empty: nothing matches). ``after`` is the cursor's
    ``(key, run_id)``; time keys are aware UTC datetimes.
    """

    statuses: tuple[str, ...] | None
    exclude_statuses: tuple[str, ...]
    workflow: str | None
    tenant_id: str | None
    labels: tuple[tuple[str, str], ...]
    created_after: datetime | None
    created_before: datetime | None
    run_id_prefix: str | None
    order_by: str = "created_at"
    descending: bool = True
    limit: int = 50
    after: tuple[Any, str] | None = None

    def fingerprint(self) -> str:
        """A short hash of the filter and order: what a cursor is bound to."""
        parts = [
            self.statuses,
            self.exclude_statuses,
            self.workflow,
            self.tenant_id,
            self.labels,
            _micros(self.created_after),
            _micros(self.created_before),
            self.run_id_prefix,
            self.order_by,
            self.descending,
        ]
        text = json.dumps(parts, ensure_ascii=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def matches(self, metadata: RunMetadata, status: str) -> bool:
        """Whether a run passes the filter (the in-memory adapter's query)."""
        if self.statuses is not None and status not in self.statuses:
            return False
        if status in self.exclude_statuses:
            return False
        if self.workflow is not None and metadata.workflow != self.workflow:
            return False
        if self.tenant_id is not None and metadata.tenant_id != self.tenant_id:
            return False
        if self.created_after is not None and metadata.created_at < self.created_after:
            return False
        if self.created_before is not None and metadata.created_at >= self.created_before:
            return False
        if self.run_id_prefix is not None and not metadata.run_id.startswith(self.run_id_prefix):
            return False
        return all(metadata.labels.get(key) == value for key, value in self.labels)


def order_value(summary: RunSummary, order_by: str) -> Any:
    """The value ``summary`` sorts by under ``order_by``."""
    if order_by == "created_at":
        return summary.metadata.created_at
    if order_by == "updated_at":
        return summary.updated_at
    if order_by == "workflow":
        return summary.metadata.workflow
    return summary.status


def _statuses(value: object, field: str) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (frozenset, set, list, tuple)):
        raise InvalidInput(
            f"must be a frozenset of statuses, got {type(value).__name__}", field=field
        )
    for item in value:
        if not isinstance(item, str) or item not in _STATUS_OF:
            raise InvalidInput(
                f"unknown status {item!r}; known: {', '.join(STATUSES)}", field=field
            )
    return tuple(sorted(str(item) for item in set(value)))


def _labels(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        raise InvalidInput("must be a mapping of str to str", field="filter.labels")
    for key, item in value.items():
        check_identifier(key, "filter.labels key")
        if type(item) is not str or "\x00" in item:
            raise InvalidInput(
                f"value for {key!r} must be a string without NUL", field="filter.labels"
            )
    return tuple(sorted(value.items()))


def check_run_filter(filter: object) -> RunQuery:
    """Validate a ``RunFilter`` (``None``: every run) into a ``RunQuery`` with default order."""
    if filter is None:
        filter = RunFilter()
    if not isinstance(filter, RunFilter):
        raise InvalidInput(f"must be a RunFilter, got {type(filter).__name__}", field="filter")
    statuses = _statuses(filter.statuses, "filter.statuses")
    excluded = _statuses(filter.exclude_statuses, "filter.exclude_statuses")
    check_identifier(filter.workflow, "filter.workflow", optional=True)
    check_identifier(filter.tenant_id, "filter.tenant_id", optional=True)
    check_identifier(filter.run_id_prefix, "filter.run_id_prefix", optional=True)
    check_aware_datetime(filter.created_after, "filter.created_after", optional=True)
    check_aware_datetime(filter.created_before, "filter.created_before", optional=True)
    return RunQuery(
        statuses=tuple(s for s in statuses if s not in excluded) if statuses else None,
        exclude_statuses=excluded,
        workflow=filter.workflow,
        tenant_id=filter.tenant_id,
        labels=_labels(filter.labels),
        created_after=_utc(filter.created_after),
        created_before=_utc(filter.created_before),
        run_id_prefix=filter.run_id_prefix,
    )


def check_run_query(
    filter: object, order_by: object, descending: object, limit: object, cursor: object
) -> RunQuery:
    """Validate the arguments of ``query_runs``, its cursor included."""
    query = check_run_filter(filter)
    if order_by not in ORDERS or type(order_by) is not str:
        raise InvalidInput(
            f"must be one of {', '.join(ORDERS)}, got {order_by!r}", field="order_by"
        )
    if type(descending) is not bool:
        raise InvalidInput(f"must be a bool, got {descending!r}", field="descending")
    check_count(limit, "limit", minimum=1)
    if limit > MAX_QUERY_LIMIT:  # type: ignore[operator]
        raise InvalidInput(f"must be at most {MAX_QUERY_LIMIT}, got {limit!r}", field="limit")
    query = RunQuery(
        **{name: getattr(query, name) for name in _FILTER_FIELDS},
        order_by=order_by,
        descending=descending,
        limit=limit,  # type: ignore[arg-type]
    )
    if cursor is None:
        return query
    return RunQuery(
        **{name: getattr(query, name) for name in _FILTER_FIELDS},
        order_by=query.order_by,
        descending=query.descending,
        limit=query.limit,
        after=_decode_cursor(cursor, query),
    )


_FILTER_FIELDS = (
    "statuses",
    "exclude_statuses",
    "workflow",
    "tenant_id",
    "labels",
    "created_after",
    "created_before",
    "run_id_prefix",
)


def check_dead_letter_page(run_id: object, limit: object, after_outbox_id: object) -> None:
    """Validate the arguments of ``list_dead_letters``."""
    check_identifier(run_id, "run_id", optional=True)
    check_count(limit, "limit")
    check_count(after_outbox_id, "after_outbox_id", optional=True)


# -- cursors ------------------------------------------------------------------------------


def _micros(value: datetime | None) -> int | None:
    if value is None:
        return None
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def next_cursor(query: RunQuery, last: RunSummary) -> str:
    """The cursor after ``last``, the final run of a full page."""
    key = order_value(last, query.order_by)
    if isinstance(key, datetime):
        key = _micros(key)
    text = json.dumps(
        [_CURSOR_VERSION, query.fingerprint(), key, last.metadata.run_id],
        ensure_ascii=True,
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: object, query: RunQuery) -> tuple[Any, str]:
    if type(cursor) is not str or not cursor or len(cursor) > 4096:
        raise InvalidInput("not a cursor of query_runs", field="cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, fingerprint, key, run_id = json.loads(raw)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidInput("not a cursor of query_runs", field="cursor") from None
    if version != _CURSOR_VERSION or type(run_id) is not str:
        raise InvalidInput("not a cursor of query_runs", field="cursor")
    if fingerprint != query.fingerprint():
        raise InvalidInput(
            "the cursor belongs to another filter or order; start again without it",
            field="cursor",
        )
    if query.order_by in ("created_at", "updated_at"):
        if type(key) is not int:
            raise InvalidInput("not a cursor of query_runs", field="cursor")
        try:
            return (_EPOCH + timedelta(microseconds=key), run_id)
        except OverflowError:
            raise InvalidInput("not a cursor of query_runs", field="cursor") from None
    if type(key) is not str:
        raise InvalidInput("not a cursor of query_runs", field="cursor")
    return (key, run_id)


def page_of(query: RunQuery, rows: list[RunSummary]) -> tuple[tuple[RunSummary, ...], str | None]:
    """Cut ``rows`` (at most ``limit + 1``, in order) into a page and its next cursor."""
    if len(rows) > query.limit:
        runs = tuple(rows[: query.limit])
        return runs, next_cursor(query, runs[-1])
    return tuple(rows), None


def count_template() -> dict[str, int]:
    """A count of 0 for every status, in lifecycle order."""
    return dict.fromkeys(STATUSES, 0)

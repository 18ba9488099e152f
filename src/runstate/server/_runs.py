"""Listing runs with their status, and the JSON of a projected run state.

``list_run_page`` is the one place that decides how a filtered run listing is read: today it
projects each run from its events (as ``runstate runs list --status`` does); an indexed per-run
summary can replace it without touching the routes or the cursor format's users.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..engine import RunState, RunStatus, project
from ..errors import InvalidInput
from ..store import RunCatalog, RunStateStore
from ..types import RunSummary
from ..wire.values import format_time, metadata_json

_SCAN_CHUNK = 200


@dataclass(frozen=True, kw_only=True, slots=True)
class RunFilters:
    """What a run listing keeps: statuses (any of), workflow, tenant, created after."""

    statuses: frozenset[RunStatus]
    workflow: str | None
    tenant_id: str | None
    created_after: datetime | None

    def fingerprint(self) -> str:
        """A short digest of the filters, bound into cursors so they cannot be mixed up."""
        text = json.dumps(
            [
                sorted(self.statuses),
                self.workflow,
                self.tenant_id,
                None if self.created_after is None else self.created_after.isoformat(),
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def encode_cursor(filters: RunFilters, offset: int) -> str:
    """An opaque cursor: where the scan goes on, for these filters."""
    raw = json.dumps({"o": offset, "f": filters.fingerprint()}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, filters: RunFilters) -> int:
    """Return the scan offset a cursor stands for; refuse cursors of other filters."""
    if cursor is None:
        return 0
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        document = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        offset, fingerprint = document["o"], document["f"]
    except (ValueError, binascii.Error, KeyError, TypeError, UnicodeEncodeError):
        raise InvalidInput("not a cursor of this listing", field="cursor") from None
    if type(offset) is not int or not 0 <= offset < 2**63 or fingerprint != filters.fingerprint():
        raise InvalidInput("not a cursor of this listing (or of other filters)", field="cursor")
    return offset


async def list_run_page(
    store: RunStateStore, catalog: RunCatalog, filters: RunFilters, start: int, limit: int
) -> tuple[list[tuple[RunSummary, RunState]], int | None]:
    """Return up to ``limit`` matching runs from scan offset ``start``, and the next offset."""
    rows: list[tuple[RunSummary, RunState]] = []
    offset = start
    while len(rows) < limit:
        chunk = await catalog.list_runs(
            workflow=filters.workflow,
            tenant_id=filters.tenant_id,
            created_after=filters.created_after,
            limit=_SCAN_CHUNK,
            offset=offset,
        )
        for index, summary in enumerate(chunk):
            state = project(summary.metadata, await store.list_events(summary.metadata.run_id))
            if filters.statuses and state.status not in filters.statuses:
                continue
            rows.append((summary, state))
            if len(rows) == limit:
                return rows, offset + index + 1
        if len(chunk) < _SCAN_CHUNK:
            return rows, None
        offset += len(chunk)
    return rows, offset


def listed_run_json(summary: RunSummary, state: RunState) -> dict[str, Any]:
    """One entry of ``GET /v1/runs``."""
    return {
        "metadata": metadata_json(summary.metadata),
        "last_seq": summary.last_seq,
        "updated_at": summary.updated_at.isoformat(),
        "status": state.status.value,
        "attempt": state.attempt,
        "started_at": format_time(state.started_at),
        "finished_at": format_time(state.finished_at),
    }


_STATE_TIMES = (
    "created_at",
    "updated_at",
    "queued_at",
    "started_at",
    "last_started_at",
    "paused_at",
    "resumed_at",
    "cancel_requested_at",
    "finished_at",
)
_STATE_VALUES = (
    "run_id",
    "workflow",
    "workflow_version",
    "tenant_id",
    "parent_run_id",
    "input",
    "attempt",
    "last_seq",
    "cancel_requested",
    "cancel_reason",
    "output",
    "error",
    "last_error",
    "current_step",
    "steps_started",
    "steps_succeeded",
    "steps_failed",
)


def state_json(state: RunState) -> dict[str, Any]:
    """A projected run state: every field, with counts for the unknown events and fields."""
    document: dict[str, Any] = {name: getattr(state, name) for name in _STATE_VALUES}
    document["labels"] = dict(state.labels)
    document["status"] = state.status.value
    document["is_terminal"] = state.is_terminal
    for name in _STATE_TIMES:
        document[name] = format_time(getattr(state, name))
    document["unknown_event_count"] = state.unknown_event_count
    document["unknown_field_count"] = state.unknown_field_count
    document["anomalies"] = [
        {
            "seq": a.seq,
            "event_id": a.event_id,
            "event_type": a.event_type,
            "from_status": a.from_status.value,
            "kind": a.kind,
            "detail": a.detail,
        }
        for a in state.anomalies
    ]
    return document


def parse_statuses(values: Sequence[str]) -> frozenset[RunStatus]:
    """Parse ``status`` query values (repeated or comma-separated)."""
    statuses: set[RunStatus] = set()
    for value in values:
        for name in value.split(","):
            try:
                statuses.add(RunStatus(name.strip().upper()))
            except ValueError:
                known = ", ".join(s.value for s in RunStatus)
                raise InvalidInput(
                    f"unknown status {name[:40]!r} (one of {known})", field="status"
                ) from None
    return frozenset(statuses)

"""Listing runs from the stores' run summaries, and the JSON of a projected run state.

``GET /v1/runs`` reads ``RunCatalog.query_runs``: the summaries are kept by every adapter in
the transaction of each write, so a filtered listing never projects a run's events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.datastructures import QueryParams

from ..engine import RunState, RunStatus
from ..errors import InvalidInput
from ..types import RunFilter
from ..wire.values import format_time
from ._http import str_param, time_param

#: The query parameters of ``GET /v1/runs`` (``tenant_id`` and ``since``: earlier spellings).
RUN_QUERY_PARAMS = frozenset(
    {
        "status",
        "exclude_status",
        "workflow",
        "tenant",
        "tenant_id",
        "label",
        "created_after",
        "since",
        "created_before",
        "run_id_prefix",
        "order_by",
        "descending",
        "limit",
        "cursor",
    }
)
RUN_FILTER_REPEATABLE = frozenset({"status", "exclude_status", "label"})


def _one_of(params: QueryParams, *names: str) -> str | None:
    given = [name for name in names if name in params]
    if len(given) > 1:
        raise InvalidInput(f"give one of {' or '.join(given)}", field=given[-1])
    return params.get(given[0]) if given else None


def run_filter_from_params(params: QueryParams) -> RunFilter:
    """Parse the filter of a run listing from its query parameters."""
    labels: dict[str, str] = {}
    for item in params.getlist("label"):
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput("must be key=value", field="label")
        if key in labels:
            raise InvalidInput(f"label {key[:40]!r} given twice", field="label")
        labels[key] = value
    created_after = time_param(params, "created_after") or time_param(params, "since")
    if "created_after" in params and "since" in params:
        raise InvalidInput("give one of created_after or since", field="since")
    return RunFilter(
        statuses=frozenset(parse_statuses(params.getlist("status"))),
        exclude_statuses=frozenset(
            parse_statuses(params.getlist("exclude_status"), "exclude_status")
        ),
        workflow=str_param(params, "workflow"),
        tenant_id=_one_of(params, "tenant", "tenant_id"),
        labels=labels,
        created_after=created_after,
        created_before=time_param(params, "created_before"),
        run_id_prefix=str_param(params, "run_id_prefix"),
    )


def descending_param(params: QueryParams) -> bool:
    """Parse ``descending``: ``true`` (the default) or ``false``."""
    text = params.get("descending", "true")
    if text not in ("true", "false"):
        raise InvalidInput("must be true or false", field="descending")
    return text == "true"


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


def parse_statuses(values: Sequence[str], field: str = "status") -> frozenset[RunStatus]:
    """Parse ``status`` query values (repeated or comma-separated)."""
    statuses: set[RunStatus] = set()
    for value in values:
        for name in value.split(","):
            try:
                statuses.add(RunStatus(name.strip().upper()))
            except ValueError:
                known = ", ".join(s.value for s in RunStatus)
                raise InvalidInput(
                    f"unknown status {name[:40]!r} (one of {known})", field=field
                ) from None
    return frozenset(statuses)

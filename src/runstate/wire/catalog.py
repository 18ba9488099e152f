"""The wire form of run queries, shared by the server and the ``runstate+http`` adapter: a
``RunFilter`` and its order as ``GET /v1/runs`` query parameters, and dead letters as JSON.

Query parameters: ``status`` and ``exclude_status`` (repeatable, or comma-separated),
``workflow``, ``tenant``, ``label`` (repeatable, ``key=value``), ``created_after``
(inclusive), ``created_before`` (exclusive), ``run_id_prefix``, ``order_by``, ``descending``
(``true`` or ``false``), ``limit`` and ``cursor``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..types import DeadLetter, RunFilter
from .values import format_time, persisted_from_json, persisted_json


def run_filter_params(filter: RunFilter | None) -> list[tuple[str, str]]:
    """The query parameters of a run filter (values as given; the store validates them)."""
    if filter is None:
        return []
    params: list[tuple[str, str]] = []
    params += [("status", status) for status in sorted(filter.statuses)]
    params += [("exclude_status", status) for status in sorted(filter.exclude_statuses)]
    for name, value in (
        ("workflow", filter.workflow),
        ("tenant", filter.tenant_id),
        ("run_id_prefix", filter.run_id_prefix),
    ):
        if value is not None:
            params.append((name, value))
    params += [("label", f"{key}={value}") for key, value in sorted(filter.labels.items())]
    for name, when in (
        ("created_after", filter.created_after),
        ("created_before", filter.created_before),
    ):
        if when is not None:
            params.append((name, when.isoformat()))
    return params


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    """Encode a dead letter."""
    return {
        "outbox_id": letter.outbox_id,
        "event": persisted_json(letter.event),
        "workflow": letter.workflow,
        "attempts": letter.attempts,
        "last_error": letter.last_error,
        "dead_at": format_time(letter.dead_at),
    }


def dead_letter_from_json(value: Mapping[str, Any]) -> DeadLetter:
    """Decode a dead letter sent by the server."""
    dead_at = value["dead_at"]
    return DeadLetter(
        outbox_id=value["outbox_id"],
        event=persisted_from_json(value["event"]),
        workflow=value["workflow"],
        attempts=value["attempts"],
        last_error=value["last_error"],
        dead_at=None if dead_at is None else datetime.fromisoformat(dead_at),
    )

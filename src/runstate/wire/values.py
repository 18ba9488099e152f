"""The JSON wire format of the HTTP API, shared by the server and the ``runstate+http`` adapter.

Decoders only check the shape of a document (an object, its known fields, datetimes that parse)
and hand the values on unchanged: the store validates their content, so a request through HTTP
is refused with the same ``InvalidInput`` (same field, same message) as the direct call.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .._json import compact
from ..errors import InvalidInput
from ..types import (
    JSON,
    AppendResult,
    FeedPage,
    OutboxRecord,
    OutboxStats,
    RunBootstrapInput,
    RunEventInput,
    RunEventPersisted,
    RunMetadata,
    RunSummary,
    new_append_result,
    new_event_id,
    new_persisted_event,
    new_run_metadata,
)

MAX_WIRE_INT = 2**63 - 1
"""The largest seq, position, offset or id the API accepts: what a database bigint holds."""

# RFC 3339 date-time: a date, a time, optional fraction, and a mandatory zone.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})\Z"
)

METADATA_FIELDS = frozenset(
    {
        "run_id",
        "workflow",
        "workflow_version",
        "tenant_id",
        "parent_run_id",
        "input",
        "labels",
        "created_at",
        "schema_version",
    }
)
EVENT_INPUT_FIELDS = frozenset({"type", "payload", "event_id", "schema_version", "occurred_at"})


def dumps(value: object) -> bytes:
    """Encode a JSON document compactly as UTF-8 (no NaN, no ASCII escaping)."""
    return compact(value).encode("utf-8")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def loads(body: bytes | str, field: str = "body") -> object:
    """Decode a JSON document; anything that is not strict JSON is ``InvalidInput``.

    Big integers stay exact ints (``json`` keeps them); NaN and Infinity literals, invalid
    UTF-8, integers too long to convert and nesting too deep to parse are refused.
    """
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidInput("JSON nests too deeply", field=field) from None
    except (ValueError, UnicodeDecodeError) as exc:
        # JSONDecodeError is a ValueError; so are int conversions past the digit limit.
        raise InvalidInput(f"malformed JSON: {_short(str(exc))}", field=field) from None


def _short(text: str, width: int = 120) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# -- encoding: store values to JSON documents --------------------------------------------


def format_time(value: datetime | None) -> str | None:
    """Render a datetime as RFC 3339 (its own offset kept; naive ones stay naive)."""
    return None if value is None else value.isoformat()


def metadata_json(metadata: RunMetadata) -> dict[str, Any]:
    """Encode run metadata."""
    return {
        "run_id": metadata.run_id,
        "workflow": metadata.workflow,
        "workflow_version": metadata.workflow_version,
        "tenant_id": metadata.tenant_id,
        "parent_run_id": metadata.parent_run_id,
        "input": metadata.input,
        "labels": dict(metadata.labels),
        "created_at": metadata.created_at.isoformat(),
        "schema_version": metadata.schema_version,
    }


def event_input_json(event: RunEventInput) -> dict[str, Any]:
    """Encode an event to append."""
    return {
        "type": event.type,
        "payload": event.payload,
        "event_id": event.event_id,
        "schema_version": event.schema_version,
        "occurred_at": format_time(event.occurred_at),
    }


def persisted_json(event: RunEventPersisted) -> dict[str, Any]:
    """Encode a stored event."""
    return {
        "run_id": event.run_id,
        "seq": event.seq,
        "position": event.position,
        "type": event.type,
        "payload": event.payload,
        "event_id": event.event_id,
        "schema_version": event.schema_version,
        "occurred_at": format_time(event.occurred_at),
        "recorded_at": event.recorded_at.isoformat(),
    }


def append_result_json(result: AppendResult) -> dict[str, Any]:
    """Encode what a write did."""
    return {
        "run_id": result.run_id,
        "appended": [persisted_json(e) for e in result.appended],
        "deduplicated": list(result.deduplicated),
        "last_seq": result.last_seq,
    }


def summary_json(summary: RunSummary) -> dict[str, Any]:
    """Encode a catalog entry."""
    return {
        "metadata": metadata_json(summary.metadata),
        "last_seq": summary.last_seq,
        "updated_at": summary.updated_at.isoformat(),
        "status": summary.status,
        "attempt": summary.attempt,
        "started_at": format_time(summary.started_at),
        "finished_at": format_time(summary.finished_at),
    }


def feed_page_json(page: FeedPage) -> dict[str, Any]:
    """Encode a page of the store-wide feed."""
    return {"events": [persisted_json(e) for e in page.events], "cursor": page.cursor}


def outbox_record_json(record: OutboxRecord) -> dict[str, Any]:
    """Encode a claimed outbox record."""
    return {
        "outbox_id": record.outbox_id,
        "event": persisted_json(record.event),
        "workflow": record.workflow,
        "attempts": record.attempts,
        "lease_owner": record.lease_owner,
        "lease_expires_at": format_time(record.lease_expires_at),
        "message_id": record.message_id,
    }


def outbox_stats_json(stats: OutboxStats) -> dict[str, Any]:
    """Encode the outbox summary."""
    return {
        "pending": stats.pending,
        "in_flight": stats.in_flight,
        "dead": stats.dead,
        "delivered": stats.delivered,
        "oldest_pending_at": format_time(stats.oldest_pending_at),
    }


# -- decoding: JSON documents to store values ----------------------------------------------


def expect_object(value: object, field: str, known: frozenset[str]) -> dict[str, Any]:
    """Return ``value`` as a JSON object, refusing other types and unknown fields."""
    if type(value) is not dict:
        raise InvalidInput(f"must be a JSON object, got {json_type(value)}", field=field)
    unknown = value.keys() - known
    if unknown:
        names = ", ".join(sorted(repr(name) for name in unknown)[:5])
        raise InvalidInput(f"unknown field(s) {names}", field=field)
    return value


def require(document: Mapping[str, Any], name: str, field: str) -> Any:
    """Return a required field of a decoded object."""
    if name not in document:
        raise InvalidInput("is required", field=f"{field}.{name}" if field else name)
    return document[name]


def json_type(value: object) -> str:
    """Name a decoded JSON value's type as JSON does."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def parse_time(value: object, field: str, *, optional: bool = False) -> datetime | None:
    """Parse an RFC 3339 date-time; a missing zone is kept naive for the store to refuse."""
    if value is None and optional:
        return None
    if type(value) is not str:
        raise InvalidInput(
            f"must be an RFC 3339 date-time string, got {json_type(value)}", field=field
        )
    if not _RFC3339.match(value):
        naive = re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?", value)
        if naive is None:
            raise InvalidInput(f"not an RFC 3339 date-time: {_short(value, 40)!r}", field=field)
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(f"not a valid date-time: {exc}", field=field) from None


def parse_required_time(value: object, field: str) -> datetime:
    """Parse a required RFC 3339 date-time."""
    parsed = parse_time(value, field)
    if parsed is None:  # pragma: no cover - parse_time returns None only when optional
        raise InvalidInput("is required", field=field)
    return parsed


def parse_wire_int(value: object, field: str, *, minimum: int = 0) -> int:
    """Return a JSON integer within ``minimum``..``MAX_WIRE_INT``."""
    if type(value) is not int or not minimum <= value <= MAX_WIRE_INT:
        raise InvalidInput(f"must be an integer from {minimum} to {MAX_WIRE_INT}", field=field)
    return value


def parse_number(value: object, field: str) -> float:
    """Return a finite JSON number."""
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        raise InvalidInput(f"must be a finite number, got {json_type(value)}", field=field)
    return float(value)  # type: ignore[arg-type]


def _string(value: object, field: str, *, optional: bool = False) -> Any:
    if type(value) is str or (value is None and optional):
        return value
    kind = "a string or null" if optional else "a string"
    raise InvalidInput(f"must be {kind}, got {json_type(value)}", field=field)


def _version(value: object, field: str) -> int:
    # The store checks the range; the engine compares versions before it gets there.
    if type(value) is not int:
        raise InvalidInput(f"must be a positive int, got {json_type(value)}", field=field)
    return value


def metadata_from_json(value: object, field: str = "metadata") -> RunMetadata:
    """Decode run metadata; defaults as in ``RunMetadata``.

    Types are checked here (the engine compares metadata before the store validates it);
    contents (lengths, characters, JSON rules) are left to the store.
    """
    document = expect_object(value, field, METADATA_FIELDS)
    values: dict[str, Any] = {
        "run_id": _string(require(document, "run_id", field), f"{field}.run_id"),
        "workflow": _string(require(document, "workflow", field), f"{field}.workflow"),
    }
    for name in ("workflow_version", "tenant_id", "parent_run_id"):
        if name in document:
            values[name] = _string(document[name], f"{field}.{name}", optional=True)
    if "input" in document:
        values["input"] = document["input"]
    if "schema_version" in document:
        values["schema_version"] = _version(document["schema_version"], f"{field}.schema_version")
    if "labels" in document:
        labels = document["labels"]
        if type(labels) is not dict or any(type(v) is not str for v in labels.values()):
            raise InvalidInput("must be an object of strings", field=f"{field}.labels")
        values["labels"] = labels
    if "created_at" in document:
        values["created_at"] = parse_time(document["created_at"], f"{field}.created_at")
    return RunMetadata(**values)


def event_input_from_json(value: object, field: str) -> RunEventInput:
    """Decode an event to append; a missing ``event_id`` gets a fresh UUID."""
    document = expect_object(value, field, EVENT_INPUT_FIELDS)
    payload = document.get("payload", {})
    if type(payload) is not dict:
        raise InvalidInput(f"must be an object, got {json_type(payload)}", field=f"{field}.payload")
    return RunEventInput(
        type=_string(require(document, "type", field), f"{field}.type"),
        payload=payload,
        event_id=_string(document["event_id"], f"{field}.event_id")
        if "event_id" in document
        else new_event_id(),
        schema_version=_version(document.get("schema_version", 1), f"{field}.schema_version"),
        occurred_at=parse_time(document.get("occurred_at"), f"{field}.occurred_at", optional=True),
    )


def events_from_json(value: object, field: str) -> list[RunEventInput]:
    """Decode a JSON array of events to append."""
    if type(value) is not list:
        raise InvalidInput(f"must be an array of events, got {json_type(value)}", field=field)
    return [event_input_from_json(item, f"{field}[{i}]") for i, item in enumerate(value)]


def bootstrap_from_json(value: object) -> RunBootstrapInput:
    """Decode the body of a bootstrap request."""
    document = expect_object(value, "body", frozenset({"metadata", "first_events"}))
    return RunBootstrapInput(
        metadata=metadata_from_json(require(document, "metadata", "")),
        first_events=events_from_json(require(document, "first_events", ""), "first_events"),
    )


def persisted_from_json(value: Mapping[str, Any]) -> RunEventPersisted:
    """Decode a stored event sent by the server."""
    occurred = value["occurred_at"]
    return new_persisted_event(
        value["run_id"],
        value["seq"],
        value["position"],
        value["type"],
        value["payload"],
        value["event_id"],
        value["schema_version"],
        None if occurred is None else datetime.fromisoformat(occurred),
        datetime.fromisoformat(value["recorded_at"]),
    )


def stored_metadata_from_json(value: Mapping[str, Any]) -> RunMetadata:
    """Decode run metadata sent by the server (complete, already validated)."""
    return new_run_metadata(
        value["run_id"],
        value["workflow"],
        value["workflow_version"],
        value["tenant_id"],
        value["parent_run_id"],
        value["input"],
        value["labels"],
        datetime.fromisoformat(value["created_at"]),
        value["schema_version"],
    )


def append_result_from_json(value: Mapping[str, Any]) -> AppendResult:
    """Decode what a write did, as sent by the server."""
    return new_append_result(
        value["run_id"],
        tuple(persisted_from_json(e) for e in value["appended"]),
        tuple(value["deduplicated"]),
        value["last_seq"],
    )


def summary_from_json(value: Mapping[str, Any]) -> RunSummary:
    """Decode a catalog entry sent by the server."""
    started, finished = value["started_at"], value["finished_at"]
    return RunSummary(
        metadata=stored_metadata_from_json(value["metadata"]),
        last_seq=value["last_seq"],
        updated_at=datetime.fromisoformat(value["updated_at"]),
        status=value["status"],
        attempt=value["attempt"],
        started_at=None if started is None else datetime.fromisoformat(started),
        finished_at=None if finished is None else datetime.fromisoformat(finished),
    )


def feed_page_from_json(value: Mapping[str, Any]) -> FeedPage:
    """Decode a feed page sent by the server."""
    return FeedPage(
        events=tuple(persisted_from_json(e) for e in value["events"]), cursor=value["cursor"]
    )


def outbox_record_from_json(value: Mapping[str, Any]) -> OutboxRecord:
    """Decode a claimed outbox record sent by the server."""
    expires = value["lease_expires_at"]
    return OutboxRecord(
        outbox_id=value["outbox_id"],
        event=persisted_from_json(value["event"]),
        workflow=value["workflow"],
        attempts=value["attempts"],
        lease_owner=value["lease_owner"],
        lease_expires_at=None if expires is None else datetime.fromisoformat(expires),
    )


def outbox_stats_from_json(value: Mapping[str, Any]) -> OutboxStats:
    """Decode the outbox summary sent by the server."""
    oldest = value["oldest_pending_at"]
    return OutboxStats(
        pending=value["pending"],
        in_flight=value["in_flight"],
        dead=value["dead"],
        delivered=value["delivered"],
        oldest_pending_at=None if oldest is None else datetime.fromisoformat(oldest),
    )


def plain_json(value: object, field: str) -> JSON:
    """Refuse, before sending, what JSON cannot carry exactly (the store's rules).

    ``json.dumps`` would quietly turn tuples into arrays and int keys into strings, and
    write NaN: the store refuses those, so the adapter must too, before anything is sent.
    """
    _walk_plain(value, field, 0)
    return value  # type: ignore[return-value]


def _walk_plain(value: object, field: str, depth: int) -> None:
    # The store caps nesting at 100 levels; 200 keeps this walk far from the recursion limit
    # and leaves the exact refusal (and its message) to the store.
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise InvalidInput(f"{value!r} is not JSON", field=field)
        return
    if depth > 200:
        raise InvalidInput("nests deeper than 100 levels", field=field)
    if kind is list:
        for item in value:  # type: ignore[attr-defined]
            _walk_plain(item, field, depth + 1)
        return
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise InvalidInput(
                    f"object keys must be strings, got {type(key).__name__}", field=field
                )
            _walk_plain(item, field, depth + 1)
        return
    raise InvalidInput(f"{kind.__name__} is not a JSON value", field=field)

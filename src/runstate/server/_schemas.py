"""JSON Schemas (2020-12, as OpenAPI 3.1 uses) of every document the API reads or writes."""

from __future__ import annotations

from typing import Any

from ..engine import RunStatus
from ..wire.problems import PROBLEM_CODES
from ..wire.values import MAX_WIRE_INT
from ._routes_engine import COMMAND_FIELDS

Schema = dict[str, Any]

# Printable text: no control characters (C0, DEL, C1), as the store requires of ids.
_PRINTABLE = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
_ID: Schema = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": _PRINTABLE}
_OPTIONAL_ID: Schema = {**_ID, "type": ["string", "null"]}
_TIME: Schema = {"type": "string", "format": "date-time"}
_OPTIONAL_TIME: Schema = {"type": ["string", "null"], "format": "date-time"}
_SEQ: Schema = {"type": "integer", "minimum": 0, "maximum": MAX_WIRE_INT}
_COUNT: Schema = {"type": "integer", "minimum": 0}
_ANY: Schema = {"description": "Any JSON value."}
_VERSION: Schema = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
        **extra,
    }


_METADATA_INPUT = {
    "workflow": _ID,
    "workflow_version": _OPTIONAL_ID,
    "tenant_id": _OPTIONAL_ID,
    "parent_run_id": _OPTIONAL_ID,
    "input": _ANY,
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "created_at": {**_TIME, "description": "Default: now. A time zone is required."},
    "schema_version": _VERSION,
}

_EVENT_FIELDS = {
    "type": _ID,
    "payload": {"type": "object", "description": "A JSON object (default: empty)."},
    "event_id": {**_ID, "description": "The idempotency key inside the run (default: a UUID)."},
    "schema_version": _VERSION,
    "occurred_at": _OPTIONAL_TIME,
}

_PERSISTED = _object(
    {
        "run_id": _ID,
        "seq": {"type": "integer", "minimum": 1},
        "position": {"type": "integer"},
        "type": _ID,
        "payload": {"type": "object"},
        "event_id": _ID,
        "schema_version": _VERSION,
        "occurred_at": _OPTIONAL_TIME,
        "recorded_at": _TIME,
    },
    (
        "run_id",
        "seq",
        "position",
        "type",
        "payload",
        "event_id",
        "schema_version",
        "occurred_at",
        "recorded_at",
    ),
)

_STATE_PROPERTIES: dict[str, Schema] = {
    "run_id": _ID,
    "workflow": _ID,
    "workflow_version": _OPTIONAL_ID,
    "tenant_id": _OPTIONAL_ID,
    "parent_run_id": _OPTIONAL_ID,
    "input": _ANY,
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "status": _ref("RunStatus"),
    "is_terminal": {"type": "boolean"},
    "attempt": {"type": "integer", "minimum": 1},
    "last_seq": _SEQ,
    "created_at": _TIME,
    "updated_at": _TIME,
    **dict.fromkeys(
        (
            "queued_at",
            "started_at",
            "last_started_at",
            "paused_at",
            "resumed_at",
            "cancel_requested_at",
            "finished_at",
        ),
        _OPTIONAL_TIME,
    ),
    "cancel_requested": {"type": "boolean"},
    "cancel_reason": _ANY,
    "output": _ANY,
    "error": _ANY,
    "last_error": _ANY,
    "current_step": {"type": ["string", "null"]},
    "steps_started": _COUNT,
    "steps_succeeded": _COUNT,
    "steps_failed": _COUNT,
    "unknown_event_count": _COUNT,
    "unknown_field_count": _COUNT,
    "anomalies": {
        "type": "array",
        "items": _object(
            {
                "seq": {"type": "integer"},
                "event_id": {"type": "string"},
                "event_type": {"type": "string"},
                "from_status": _ref("RunStatus"),
                "kind": {"type": "string"},
                "detail": {"type": "string"},
            },
            ("seq", "event_id", "event_type", "from_status", "kind", "detail"),
        ),
    },
}

_COMMAND_PROPERTIES: dict[str, Schema] = {
    "worker": {"type": ["string", "null"]},
    "reason": {"type": ["string", "null"]},
    "error": _ANY,
    "output": _ANY,
}

_PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details, with the stable code and the error's fields.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "code": {"type": "string", "enum": list(PROBLEM_CODES)},
        "run_id": {"type": "string"},
        "same_request": {"type": ["boolean", "null"]},
        "expected_seq": {"type": "integer"},
        "actual_seq": {"type": "integer"},
        "from_status": {"type": "string"},
        "event_type": {"type": "string"},
        "field": {"type": ["string", "null"]},
        "retryable": {"type": "boolean"},
    },
    "required": ["type", "title", "status", "code", "detail"],
}


def component_schemas() -> dict[str, Schema]:
    """Every named schema of the OpenAPI document."""
    schemas = {**_store_schemas(), **_view_schemas(), **_outbox_schemas()}
    for name, fields in COMMAND_FIELDS.items():
        schemas[f"Command_{name}"] = _object({f: _COMMAND_PROPERTIES[f] for f in sorted(fields)})
    return schemas


def _store_schemas() -> dict[str, Schema]:
    metadata_required = ("run_id", "workflow")
    return {
        "Problem": _PROBLEM,
        "RunStatus": {"type": "string", "enum": [s.value for s in RunStatus]},
        "RunMetadataInput": _object({"run_id": _ID, **_METADATA_INPUT}, metadata_required),
        "RunMetadata": _object(
            {"run_id": _ID, **_METADATA_INPUT},
            ("run_id", *_METADATA_INPUT),
        ),
        "RunEventInput": _object(_EVENT_FIELDS, ("type",)),
        "RunEventPersisted": _PERSISTED,
        "RunBootstrapInput": _object(
            {
                "metadata": _ref("RunMetadataInput"),
                "first_events": {"type": "array", "items": _ref("RunEventInput"), "minItems": 1},
            },
            ("metadata", "first_events"),
        ),
        "AppendInput": _object(
            {
                "events": {"type": "array", "items": _ref("RunEventInput")},
                "expected_seq": {**_SEQ, "type": ["integer", "null"]},
            },
            ("events",),
        ),
        "AppendResult": _object(
            {
                "run_id": _ID,
                "appended": {"type": "array", "items": _ref("RunEventPersisted")},
                "deduplicated": {"type": "array", "items": {"type": "string"}},
                "last_seq": _SEQ,
            },
            ("run_id", "appended", "deduplicated", "last_seq"),
        ),
        "EventList": _object(
            {"events": {"type": "array", "items": _ref("RunEventPersisted")}}, ("events",)
        ),
        "CreateRunInput": _object(
            {**_METADATA_INPUT, "mode": {"type": "string", "enum": ["queued", "sync"]}},
            ("workflow",),
        ),
    }


def _view_schemas() -> dict[str, Schema]:
    return {
        "RunState": _object(_STATE_PROPERTIES, tuple(_STATE_PROPERTIES)),
        "RunView": _object(
            {"metadata": _ref("RunMetadata"), "state": _ref("RunState")}, ("metadata", "state")
        ),
        "RunList": _object(
            {
                "runs": {"type": "array", "items": _ref("ListedRun")},
                "next_cursor": {"type": ["string", "null"]},
            },
            ("runs", "next_cursor"),
        ),
        "ListedRun": _ref("RunSummary"),
        "RunSummary": _object(
            {
                "metadata": _ref("RunMetadata"),
                "last_seq": _SEQ,
                "updated_at": _TIME,
                "status": _ref("RunStatus"),
                "attempt": {"type": "integer", "minimum": 1},
                "started_at": _OPTIONAL_TIME,
                "finished_at": _OPTIONAL_TIME,
            },
            (
                "metadata",
                "last_seq",
                "updated_at",
                "status",
                "attempt",
                "started_at",
                "finished_at",
            ),
        ),
        "RunCounts": _object(
            {
                "counts": _object(
                    {status.value: _COUNT for status in RunStatus},
                    tuple(status.value for status in RunStatus),
                )
            },
            ("counts",),
        ),
        "RunSummaryList": _object(
            {"runs": {"type": "array", "items": _ref("RunSummary")}}, ("runs",)
        ),
        "FeedPage": _object(
            {
                "events": {"type": "array", "items": _ref("RunEventPersisted")},
                "cursor": {"type": "string"},
            },
            ("events", "cursor"),
        ),
        "FeedCursor": _object({"cursor": {"type": "string"}}, ("cursor",)),
        "SseStream": {
            "type": "string",
            "description": "text/event-stream: each data line is a RunEventPersisted.",
        },
    }


def _outbox_schemas() -> dict[str, Schema]:
    ids = {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": MAX_WIRE_INT}}
    record = _object(
        {
            "outbox_id": {"type": "integer"},
            "event": _ref("RunEventPersisted"),
            "workflow": {"type": "string"},
            "attempts": _COUNT,
            "lease_owner": {"type": ["string", "null"]},
            "lease_expires_at": _OPTIONAL_TIME,
            "message_id": {"type": "string"},
        },
        ("outbox_id", "event", "workflow", "attempts", "lease_owner", "lease_expires_at"),
    )
    return {
        "OutboxStats": _object(
            {
                "pending": _COUNT,
                "in_flight": _COUNT,
                "dead": _COUNT,
                "delivered": _COUNT,
                "oldest_pending_at": _OPTIONAL_TIME,
            },
            ("pending", "in_flight", "dead", "delivered", "oldest_pending_at"),
        ),
        "OutboxRecord": record,
        "DeadLetter": _object(
            {
                "outbox_id": {"type": "integer", "minimum": 1},
                "event": _ref("RunEventPersisted"),
                "workflow": {"type": "string"},
                "attempts": _COUNT,
                "last_error": {"type": ["string", "null"]},
                "dead_at": _OPTIONAL_TIME,
            },
            ("outbox_id", "event", "workflow", "attempts", "last_error", "dead_at"),
        ),
        "DeadLetterList": _object(
            {"dead_letters": {"type": "array", "items": _ref("DeadLetter")}}, ("dead_letters",)
        ),
        "ClaimInput": _object(
            {
                "owner": {"type": "string"},
                "limit": {"type": "integer", "minimum": 0, "maximum": 10_000},
                "lease_seconds": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "exclusiveMaximum": 1_000_000_000,
                },
            },
            ("owner", "limit", "lease_seconds"),
        ),
        "ClaimResult": _object(
            {"records": {"type": "array", "items": _ref("OutboxRecord")}}, ("records",)
        ),
        "LeasedIds": _object(
            {"owner": {"type": "string"}, "outbox_ids": ids}, ("owner", "outbox_ids")
        ),
        "UpdatedCount": _object({"updated": _COUNT}, ("updated",)),
        "FailedInput": _object(
            {
                "owner": {"type": "string"},
                "outbox_id": {"type": "integer", "minimum": 1, "maximum": MAX_WIRE_INT},
                "error": {"type": "string"},
                "retry_at": _OPTIONAL_TIME,
            },
            ("owner", "outbox_id", "error"),
        ),
        "RedriveInput": _object({"run_id": _OPTIONAL_ID}),
        "RedriveResult": _object({"redriven": _COUNT}, ("redriven",)),
        "StoreIdentity": _object({"store_id": {"type": "string", "minLength": 1}}, ("store_id",)),
        "PurgeInput": _object(
            {"older_than": _TIME, "limit": {"type": "integer", "minimum": 1}}, ("older_than",)
        ),
        "PurgeResult": _object({"purged": _COUNT}, ("purged",)),
        "WaitInput": _object(
            {"timeout": {"type": "number", "minimum": 0, "maximum": 60}}, ("timeout",)
        ),
        "Health": _object({"status": {"type": "string"}}, ("status",)),
    }

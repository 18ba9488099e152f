"""CloudEvents 1.0 structured-mode envelopes for outbox records: what every sink sends.

``source`` names the deployment: CloudEvents requires ``source`` + ``id`` to be unique, and
the id (``<run_id>:<seq>``) repeats across stores, so the relay gives each sink the source of
its store (``store_source``) unless one is configured. ``SOURCE`` is only the fallback of a
sink used outside a relay with no source of its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

from .._json import compact
from ..errors import InvalidInput
from ..types import OutboxRecord

SPEC_VERSION = "1.0"
SOURCE = "runstate"
STORE_SOURCE_PREFIX = "runstate://"
MAX_SOURCE_LENGTH = 1024
CONTENT_TYPE = "application/cloudevents+json"
DATA_CONTENT_TYPE = "application/json"


def format_time(value: datetime) -> str:
    """Render an aware datetime as RFC 3339 in UTC with a ``Z`` suffix."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds").removesuffix("+00:00") + "Z"


def store_source(store_id: str) -> str:
    """The default ``source`` of a store's events: ``runstate://<store id>``."""
    return STORE_SOURCE_PREFIX + store_id


def check_source(value: object) -> str | None:
    """Validate a configured ``source``: a non-empty URI reference without spaces, or None."""
    if value is None:
        return None
    if (
        type(value) is not str
        or not value
        or len(value) > MAX_SOURCE_LENGTH
        or not value.isprintable()
        or any(c.isspace() for c in value)
    ):
        raise InvalidInput(
            f"must be a non-empty URI reference of at most {MAX_SOURCE_LENGTH} characters "
            "without spaces, e.g. runstate://billing-eu",
            field="source",
        )
    return value


def to_cloudevent(record: OutboxRecord, source: str = SOURCE) -> dict[str, Any]:
    """Build the CloudEvents 1.0 JSON object for one outbox record.

    A record written under a trace carries it in the distributed-tracing extension's
    ``traceparent`` and ``tracestate`` attributes. ``data`` is a copy: the caller may
    change the object without touching the record.
    """
    envelope = _envelope(record, source)
    envelope["data"] = dict(record.event.payload)
    return envelope


def _envelope(record: OutboxRecord, source: str) -> dict[str, Any]:
    event = record.event
    envelope = {
        "specversion": SPEC_VERSION,
        "id": record.message_id,
        "source": source,
        "type": event.type,
        "subject": event.run_id,
        "time": format_time(event.recorded_at),
        "datacontenttype": DATA_CONTENT_TYPE,
        "data": event.payload,
        "seq": event.seq,
        "eventid": event.event_id,
        "workflow": record.workflow,
    }
    if record.traceparent is not None:
        envelope.update(trace_headers(record))
    return envelope


def trace_headers(record: OutboxRecord) -> dict[str, str]:
    """The W3C ``traceparent``/``tracestate`` stored with the record: headers for any protocol."""
    if record.traceparent is None:
        return {}
    if record.tracestate is None:
        return {"traceparent": record.traceparent}
    return {"traceparent": record.traceparent, "tracestate": record.tracestate}


def dumps(value: object) -> bytes:
    """Encode JSON compactly as UTF-8: the bytes every sink sends."""
    return compact(value).encode()


def encode_cloudevent(record: OutboxRecord, source: str = SOURCE) -> bytes:
    """Return the compact JSON bytes of the record's CloudEvent."""
    # The same bytes as encoding _envelope()'s object, written out directly: every relayed
    # record passes here, and building the object to encode it cost half of the time.
    event = record.event
    text = (
        f'{{"specversion":"{SPEC_VERSION}","id":{_string(record.message_id)}'
        f',"source":{_string(source)},"type":{_string(event.type)}'
        f',"subject":{_string(event.run_id)},"time":"{format_time(event.recorded_at)}"'
        f',"datacontenttype":"{DATA_CONTENT_TYPE}","data":{compact(event.payload)}'
        f',"seq":{int(event.seq)},"eventid":{_string(event.event_id)}'
        f',"workflow":{_string(record.workflow)}'
    )
    if record.traceparent is not None:
        text += f',"traceparent":{_string(record.traceparent)}'
        if record.tracestate is not None:
            text += f',"tracestate":{_string(record.tracestate)}'
    return (text + "}").encode()


#: JSON string literals as ``compact`` writes them (non-ASCII kept as is).
_string = encode_basestring

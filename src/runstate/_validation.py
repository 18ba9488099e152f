"""Input validation shared by every adapter: runs before anything is written."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from .errors import InvalidInput
from .types import RunBootstrapInput, RunEventInput, RunMetadata

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_ID_LENGTH = 255
MAX_JSON_DEPTH = 100

# Control characters (C0, DEL, C1) and lone surrogates, which no database can store as text.
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Inside JSON strings only NUL and lone surrogates are refused: PostgreSQL text and jsonb reject
# NUL, and no UTF-8 encoder accepts a lone surrogate.
_FORBIDDEN_JSON_CHARS = re.compile(r"[\x00\ud800-\udfff]")
_JSON_SCALARS = (str, int, float, bool, type(None))

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckedEvent:
    """An event that passed validation, with its payload already encoded as JSON text."""

    event: RunEventInput
    payload_json: str


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckedMetadata:
    """Metadata that passed validation, with its input and labels encoded as JSON text."""

    metadata: RunMetadata
    input_json: str
    labels_json: str


def check_identifier(value: object, field: str, *, optional: bool = False) -> None:
    """Refuse ids and names that are not 1-255 characters of printable text."""
    if value is None and optional:
        return
    if type(value) is not str:
        raise InvalidInput(f"must be a string, got {type(value).__name__}", field=field)
    if not value:
        raise InvalidInput("must not be empty", field=field)
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(
            f"must be at most {MAX_ID_LENGTH} characters, got {len(value)}", field=field
        )
    if _FORBIDDEN_CHARS.search(value):
        raise InvalidInput("must not contain control characters or surrogates", field=field)


def check_aware_datetime(value: object, field: str, *, optional: bool = False) -> None:
    """Refuse datetimes without a time zone: a stored instant must be unambiguous."""
    if value is None and optional:
        return
    if not isinstance(value, datetime):
        raise InvalidInput(f"must be a datetime, got {type(value).__name__}", field=field)
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput("must be timezone-aware", field=field)


def check_schema_version(value: object, field: str) -> None:
    """Refuse schema versions that are not positive ints."""
    if type(value) is not int or not 1 <= value <= 2**31 - 1:
        raise InvalidInput(f"must be a positive int, got {value!r}", field=field)


def encode_json(value: object, field: str, *, max_bytes: int | None = None) -> str:
    """Check that ``value`` is plain JSON that round-trips exactly, and return its text."""
    _check_json_tree(value, field)
    text = _encoder.encode(value)
    if max_bytes is not None and len(text) > max_bytes // 4:
        size = len(text.encode("utf-8"))
        if size > max_bytes:
            raise InvalidInput(
                f"is {size} bytes of JSON, over the limit of {max_bytes}", field=field
            )
    return text


def _check_json_tree(root: object, field: str) -> None:
    # Iterative walk: deep documents must give InvalidInput, never a RecursionError.
    stack: list[tuple[object, int]] = [(root, 0)]
    while stack:
        value, depth = stack.pop()
        kind = type(value)
        if kind is str:
            if _FORBIDDEN_JSON_CHARS.search(value):  # type: ignore[call-overload]
                raise InvalidInput("strings must not contain NUL or lone surrogates", field=field)
        elif kind is float:
            if not math.isfinite(value):  # type: ignore[arg-type]
                raise InvalidInput(f"{value!r} is not JSON", field=field)
        elif kind is dict or kind is list:
            if depth >= MAX_JSON_DEPTH:
                raise InvalidInput(f"nests deeper than {MAX_JSON_DEPTH} levels", field=field)
            if kind is dict:
                for key, item in value.items():  # type: ignore[attr-defined]
                    if type(key) is not str:
                        raise InvalidInput(
                            f"object keys must be strings, got {type(key).__name__}", field=field
                        )
                    if _FORBIDDEN_JSON_CHARS.search(key):
                        raise InvalidInput(
                            "keys must not contain NUL or lone surrogates", field=field
                        )
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)  # type: ignore[attr-defined]
        elif kind is not int and kind is not bool and value is not None:
            raise InvalidInput(f"{kind.__name__} is not a JSON value", field=field)


def check_event(event: object, index: int, max_payload_bytes: int) -> CheckedEvent:
    """Validate one event input and encode its payload."""
    where = f"events[{index}]"
    if not isinstance(event, RunEventInput):
        raise InvalidInput(f"must be a RunEventInput, got {type(event).__name__}", field=where)
    check_identifier(event.type, f"{where}.type")
    check_identifier(event.event_id, f"{where}.event_id")
    check_schema_version(event.schema_version, f"{where}.schema_version")
    check_aware_datetime(event.occurred_at, f"{where}.occurred_at", optional=True)
    if type(event.payload) is not dict:
        raise InvalidInput(
            f"must be a dict, got {type(event.payload).__name__}", field=f"{where}.payload"
        )
    payload_json = encode_json(event.payload, f"{where}.payload", max_bytes=max_payload_bytes)
    return CheckedEvent(event=event, payload_json=payload_json)


def check_events(
    events: object, max_payload_bytes: int, *, allow_empty: bool = True
) -> list[CheckedEvent]:
    """Validate a batch of event inputs."""
    if isinstance(events, (str, bytes, Mapping)) or not isinstance(events, Sequence):
        raise InvalidInput(
            f"must be a sequence of RunEventInput, got {type(events).__name__}", field="events"
        )
    if not events and not allow_empty:
        raise InvalidInput("at least one first event is required", field="first_events")
    return [check_event(event, i, max_payload_bytes) for i, event in enumerate(events)]


def check_metadata(metadata: object, max_payload_bytes: int) -> CheckedMetadata:
    """Validate run metadata and encode its JSON parts."""
    if not isinstance(metadata, RunMetadata):
        raise InvalidInput(
            f"must be a RunMetadata, got {type(metadata).__name__}", field="metadata"
        )
    check_identifier(metadata.run_id, "metadata.run_id")
    check_identifier(metadata.workflow, "metadata.workflow")
    check_identifier(metadata.workflow_version, "metadata.workflow_version", optional=True)
    check_identifier(metadata.tenant_id, "metadata.tenant_id", optional=True)
    check_identifier(metadata.parent_run_id, "metadata.parent_run_id", optional=True)
    check_aware_datetime(metadata.created_at, "metadata.created_at")
    check_schema_version(metadata.schema_version, "metadata.schema_version")
    if not isinstance(metadata.labels, Mapping):
        raise InvalidInput("must be a mapping of str to str", field="metadata.labels")
    labels = dict(metadata.labels)
    for key, value in labels.items():
        check_identifier(key, "metadata.labels key")
        if type(value) is not str or _FORBIDDEN_JSON_CHARS.search(value):
            raise InvalidInput(
                f"value for {key!r} must be a string without NUL", field="metadata.labels"
            )
    input_json = encode_json(metadata.input, "metadata.input", max_bytes=max_payload_bytes)
    labels_json = _encoder.encode(labels)
    return CheckedMetadata(metadata=metadata, input_json=input_json, labels_json=labels_json)


def check_bootstrap(
    bootstrap: object, max_payload_bytes: int
) -> tuple[CheckedMetadata, list[CheckedEvent]]:
    """Validate a whole bootstrap input."""
    if not isinstance(bootstrap, RunBootstrapInput):
        raise InvalidInput(
            f"must be a RunBootstrapInput, got {type(bootstrap).__name__}", field="input"
        )
    metadata = check_metadata(bootstrap.metadata, max_payload_bytes)
    events = check_events(bootstrap.first_events, max_payload_bytes, allow_empty=False)
    return metadata, events


def check_append(
    run_id: object, events: object, expected_seq: object, max_payload_bytes: int
) -> list[CheckedEvent]:
    """Validate the arguments of ``append_and_enqueue_tx``."""
    check_identifier(run_id, "run_id")
    if expected_seq is not None and (type(expected_seq) is not int or expected_seq < 0):
        raise InvalidInput(
            f"must be a non-negative int or None, got {expected_seq!r}", field="expected_seq"
        )
    return check_events(events, max_payload_bytes)


def check_page(after_seq: object, limit: object) -> None:
    """Validate the paging arguments of ``list_events``."""
    if type(after_seq) is not int or after_seq < 0:
        raise InvalidInput(f"must be a non-negative int, got {after_seq!r}", field="after_seq")
    if limit is not None and (type(limit) is not int or limit < 0):
        raise InvalidInput(f"must be a non-negative int or None, got {limit!r}", field="limit")


def check_max_payload_bytes(value: object) -> int:
    """Validate the ``max_payload_bytes`` option of ``open_store``."""
    if type(value) is not int or value <= 0:
        raise InvalidInput(f"must be a positive int, got {value!r}", field="max_payload_bytes")
    return value

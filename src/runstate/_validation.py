"""Input validation shared by every adapter: runs before anything is written."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import cast

from ._json import compact
from .errors import InvalidInput
from .types import JSON, RunBootstrapInput, RunEventInput, RunMetadata

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_ID_LENGTH = 255
MAX_JSON_DEPTH = 100
#: The largest seq, position, limit or offset: what every adapter stores as a signed 64-bit int.
MAX_INT64 = 2**63 - 1
#: The first and last instants every adapter stores and reads back exactly. Python's datetime
#: spans 0001-01-01 to 9999-12-31 in the time zone of each value; one day less at each end
#: keeps every stored instant representable in every time zone (offsets are under 24 hours),
#: so converting it to UTC on write, or to local time after reading, never overflows. Both
#: SQLite's integer microseconds and PostgreSQL's timestamptz hold far more; the driver for
#: PostgreSQL spells exactly 0001-01-01T00:00Z and 9999-12-31T23:59:59.999999Z as -infinity and
#: infinity, which this range keeps out too.
MIN_DATETIME = datetime(1, 1, 2, tzinfo=UTC)
MAX_DATETIME = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
# Ints up to this many bits always convert to decimal text: Python's int/str digit limit
# (sys.get_int_max_str_digits) is 0 (none) or at least 640 digits, over 2,126 bits.
_ALWAYS_DECIMAL_BITS = 2100
_powers_of_ten: dict[int, int] = {}

# Control characters (C0, DEL, C1) and lone surrogates, which no database can store as text.
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Inside JSON strings only NUL and lone surrogates are refused: PostgreSQL text and jsonb reject
# NUL, and no UTF-8 encoder accepts a lone surrogate.
_FORBIDDEN_JSON_CHARS = re.compile(r"[\x00\ud800-\udfff]")


class CheckedEvent:
    """An event that passed validation: a private copy of its payload, and its JSON text.

    The JSON text is encoded on first use, so adapters that keep Python objects (memory)
    never pay for it, and SQL adapters pay once.
    """

    __slots__ = ("_payload_json", "event", "occurred_at", "payload")

    def __init__(self, event: RunEventInput, payload: dict[str, JSON], payload_json: str | None):
        self.event = event
        self.payload = payload
        self._payload_json = payload_json
        # In UTC, as every adapter stores and returns it; the range check made this safe.
        occurred_at = event.occurred_at
        self.occurred_at = None if occurred_at is None else occurred_at.astimezone(UTC)

    @property
    def payload_json(self) -> str:
        """The payload as compact JSON text."""
        if self._payload_json is None:
            self._payload_json = compact(self.payload)
        return self._payload_json


class CheckedMetadata:
    """Metadata that passed validation: private copies of its input and labels, and their
    JSON text, encoded on first use."""

    __slots__ = ("_input_json", "created_at", "input", "labels", "metadata")

    def __init__(
        self,
        metadata: RunMetadata,
        input: JSON,
        labels: dict[str, str],
        input_json: str | None,
    ) -> None:
        self.metadata = metadata
        self.input = input
        self.labels = labels
        self._input_json = input_json
        # In UTC, as every adapter stores and returns it; the range check made this safe.
        created_at = metadata.created_at
        self.created_at = created_at if created_at.tzinfo is UTC else created_at.astimezone(UTC)

    @property
    def input_json(self) -> str:
        """The run input as compact JSON text."""
        if self._input_json is None:
            self._input_json = compact(self.input)
        return self._input_json

    @property
    def labels_json(self) -> str:
        """The labels as compact JSON text."""
        return compact(self.labels) if self.labels else "{}"


def _is_plain_identifier(value: object) -> bool:
    # Fast path: printable strings hold no control characters or surrogates.
    return type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable()


def check_identifier(value: object, field: str, *, optional: bool = False) -> None:
    """Refuse ids and names that are not 1-255 characters of printable text."""
    if _is_plain_identifier(value) or (value is None and optional):
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
    """Refuse datetimes without a time zone or outside ``MIN_DATETIME``..``MAX_DATETIME``.

    A stored instant must be unambiguous, and every adapter must read it back exactly.
    """
    if value is None and optional:
        return
    if not isinstance(value, datetime):
        raise InvalidInput(f"must be a datetime, got {type(value).__name__}", field=field)
    try:
        offset = value.utcoffset()
    except Exception as exc:  # a tzinfo of the caller's that fails, or an offset of >= 24h
        raise InvalidInput(f"its time zone has no usable offset ({exc})", field=field) from None
    if offset is None:
        raise InvalidInput("must be timezone-aware", field=field)
    if not MIN_DATETIME <= value <= MAX_DATETIME:
        raise InvalidInput(
            f"must be between {MIN_DATETIME.isoformat()} and {MAX_DATETIME.isoformat()} "
            f"(UTC), got {value.isoformat()}",
            field=field,
        )


def check_schema_version(value: object, field: str) -> None:
    """Refuse schema versions that are not positive ints."""
    if type(value) is not int or not 1 <= value <= 2**31 - 1:
        raise InvalidInput(f"must be a positive int, got {value!r}", field=field)


def _check_size(text: str, field: str, max_bytes: int) -> None:
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise InvalidInput(f"is {size} bytes of JSON, over the limit of {max_bytes}", field=field)


def checked_json_copy(value: object, field: str) -> tuple[JSON, int]:
    """Return a private deep copy of plain JSON and an upper bound of its encoded size.

    Refuses NaN/Infinity, non-string keys, tuples, bytes and any other object, strings with
    NUL or lone surrogates, and nesting deeper than ``MAX_JSON_DEPTH``.
    """
    bound = [0]
    copy = _copy_json(value, 0, field, bound)
    return copy, bound[0]


def _copy_json(value: object, depth: int, field: str, bound: list[int]) -> JSON:
    # Recursion is safe: depth is capped at MAX_JSON_DEPTH, far below Python's limit.
    kind = type(value)
    if kind is str:
        _check_json_string(value, field)  # type: ignore[arg-type]
        # 6 bytes per character covers both \uXXXX escapes and 4-byte UTF-8.
        bound[0] += 6 * len(value) + 3  # type: ignore[arg-type]
        return value  # type: ignore[return-value]
    if kind is int:
        bits = value.bit_length()  # type: ignore[attr-defined]
        if bits > _ALWAYS_DECIMAL_BITS:
            _check_int_digits(value, field)  # type: ignore[arg-type]
        bound[0] += bits // 3 + 3
        return value  # type: ignore[return-value]
    if kind is dict or kind is list:
        if depth >= MAX_JSON_DEPTH:
            raise InvalidInput(f"nests deeper than {MAX_JSON_DEPTH} levels", field=field)
        bound[0] += 2
        if kind is list:
            return [_copy_json(item, depth + 1, field, bound) for item in value]  # type: ignore[attr-defined]
        copied: dict[str, JSON] = {}
        size = 0
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise InvalidInput(
                    f"object keys must be strings, got {type(key).__name__}", field=field
                )
            if not key.isprintable():
                _check_json_string(key, field)
            if type(item) is str and item.isprintable():
                # The common flat payload: a printable string needs no call of its own.
                size += 6 * (len(key) + len(item)) + 7
                copied[key] = item
                continue
            size += 6 * len(key) + 4
            copied[key] = _copy_json(item, depth + 1, field, bound)
        bound[0] += size
        return copied
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise InvalidInput(f"{value!r} is not JSON", field=field)
        bound[0] += 26
        return value  # type: ignore[return-value]
    if kind is bool or value is None:
        bound[0] += 6
        return value  # type: ignore[return-value]
    raise InvalidInput(f"{kind.__name__} is not a JSON value", field=field)


def _check_int_digits(value: int, field: str) -> None:
    # JSON holds an int as decimal text, and Python refuses to convert ints longer than
    # sys.get_int_max_str_digits() (4,300 by default) either way: such an int could be
    # neither written nor read back.
    limit = sys.get_int_max_str_digits()
    if not limit:
        return
    power = _powers_of_ten.get(limit)
    if power is None:
        power = _powers_of_ten[limit] = 10**limit
    if abs(value) >= power:
        raise InvalidInput(
            f"integers must have at most {limit:,} digits (Python's int/str conversion limit, "
            f"sys.get_int_max_str_digits()), got {_short(value)}",
            field=field,
        )


def _check_json_string(value: str, field: str) -> None:
    if not value.isprintable() and _FORBIDDEN_JSON_CHARS.search(value):
        raise InvalidInput("strings must not contain NUL or lone surrogates", field=field)


def check_event(event: object, index: int, max_payload_bytes: int) -> CheckedEvent:
    """Validate one event input and copy its payload."""
    if type(event) is not RunEventInput and not isinstance(event, RunEventInput):
        raise InvalidInput(
            f"must be a RunEventInput, got {type(event).__name__}", field=f"events[{index}]"
        )
    if not (_is_plain_identifier(event.type) and _is_plain_identifier(event.event_id)):
        check_identifier(event.type, f"events[{index}].type")
        check_identifier(event.event_id, f"events[{index}].event_id")
    if type(event.schema_version) is not int or event.schema_version != 1:
        check_schema_version(event.schema_version, f"events[{index}].schema_version")
    if event.occurred_at is not None:
        check_aware_datetime(event.occurred_at, f"events[{index}].occurred_at")
    field = f"events[{index}].payload"
    if type(event.payload) is not dict:
        raise InvalidInput(f"must be a dict, got {type(event.payload).__name__}", field=field)
    payload, bound = checked_json_copy(event.payload, field)
    payload_json = None
    if bound > max_payload_bytes:
        payload_json = compact(payload)
        _check_size(payload_json, field, max_payload_bytes)
    return CheckedEvent(event, payload, payload_json)  # type: ignore[arg-type]


def check_events(
    events: object, max_payload_bytes: int, *, allow_empty: bool = True
) -> list[CheckedEvent]:
    """Validate a batch of event inputs."""
    kind = type(events)
    if (
        kind is not list
        and kind is not tuple
        and (isinstance(events, (str, bytes, Mapping)) or not isinstance(events, Sequence))
    ):
        raise InvalidInput(
            f"must be a sequence of RunEventInput, got {type(events).__name__}", field="events"
        )
    if not events and not allow_empty:
        raise InvalidInput("at least one first event is required", field="first_events")
    items = cast(Sequence[object], events)
    return [check_event(event, i, max_payload_bytes) for i, event in enumerate(items)]


def check_metadata(metadata: object, max_payload_bytes: int) -> CheckedMetadata:
    """Validate run metadata and encode its JSON parts."""
    if type(metadata) is not RunMetadata and not isinstance(metadata, RunMetadata):
        raise InvalidInput(
            f"must be a RunMetadata, got {type(metadata).__name__}", field="metadata"
        )
    if not (
        _is_plain_identifier(metadata.run_id)
        and _is_plain_identifier(metadata.workflow)
        and metadata.workflow_version is None
        and metadata.tenant_id is None
        and metadata.parent_run_id is None
    ):
        # Only metadata with optional ids (or a bad one) pays for the detailed checks.
        check_identifier(metadata.run_id, "metadata.run_id")
        check_identifier(metadata.workflow, "metadata.workflow")
        check_identifier(metadata.workflow_version, "metadata.workflow_version", optional=True)
        check_identifier(metadata.tenant_id, "metadata.tenant_id", optional=True)
        check_identifier(metadata.parent_run_id, "metadata.parent_run_id", optional=True)
    created_at = metadata.created_at
    if not (
        type(created_at) is datetime
        and created_at.tzinfo is UTC
        and MIN_DATETIME <= created_at <= MAX_DATETIME
    ):
        check_aware_datetime(created_at, "metadata.created_at")
    if type(metadata.schema_version) is not int or metadata.schema_version != 1:
        check_schema_version(metadata.schema_version, "metadata.schema_version")
    if type(metadata.labels) is not dict and not isinstance(metadata.labels, Mapping):
        raise InvalidInput("must be a mapping of str to str", field="metadata.labels")
    labels = dict(metadata.labels)
    for key, value in labels.items():
        check_identifier(key, "metadata.labels key")
        if type(value) is not str or _FORBIDDEN_JSON_CHARS.search(value):
            raise InvalidInput(
                f"value for {key!r} must be a string without NUL", field="metadata.labels"
            )
    input_copy, bound = checked_json_copy(metadata.input, "metadata.input")
    input_json = None
    if bound > max_payload_bytes:
        input_json = compact(input_copy)
        _check_size(input_json, "metadata.input", max_payload_bytes)
    return CheckedMetadata(metadata, input_copy, labels, input_json)


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


def check_count(value: object, field: str, *, minimum: int = 0, optional: bool = False) -> None:
    """Refuse a seq, limit or offset that is not an int from ``minimum`` to ``MAX_INT64``."""
    if value is None and optional:
        return
    if type(value) is not int or not minimum <= value <= MAX_INT64:
        none = " or None" if optional else ""
        raise InvalidInput(
            f"must be an int from {minimum} to 2**63 - 1{none}, got {_short(value)}", field=field
        )


def _short(value: object) -> str:
    # A huge int's repr is thousands of digits (and refused past 4,300): say how big instead.
    if type(value) is int and value.bit_length() > 100:
        return f"an int of about {int(value.bit_length() * 0.30103) + 1} digits"
    return repr(value)


def check_append(
    run_id: object, events: object, expected_seq: object, max_payload_bytes: int
) -> list[CheckedEvent]:
    """Validate the arguments of ``append_and_enqueue_tx``."""
    check_identifier(run_id, "run_id")
    check_count(expected_seq, "expected_seq", optional=True)
    return check_events(events, max_payload_bytes)


def check_page(after_seq: object, limit: object) -> None:
    """Validate the paging arguments of ``list_events``."""
    check_count(after_seq, "after_seq")
    check_count(limit, "limit", optional=True)


def check_run_filters(
    workflow: object, tenant_id: object, created_after: object, limit: object, offset: object
) -> None:
    """Validate the filters of ``list_runs``."""
    check_identifier(workflow, "workflow", optional=True)
    check_identifier(tenant_id, "tenant_id", optional=True)
    check_aware_datetime(created_after, "created_after", optional=True)
    check_count(limit, "limit")
    check_count(offset, "offset")


def check_feed_limit(limit: object) -> None:
    """Validate the ``limit`` of ``read_feed``: a non-negative int."""
    check_count(limit, "limit")


def parse_position_cursor(cursor: object, limit: object) -> int:
    """Validate a feed cursor of stores that commit in position order; return the position."""
    check_feed_limit(limit)
    if cursor is None:
        return 0
    if (
        type(cursor) is not str
        or not cursor.isascii()
        or not cursor.isdigit()
        or len(cursor) > 19
        or int(cursor) > MAX_INT64
    ):
        raise InvalidInput(f"not a cursor of this store: {cursor!r}", field="cursor")
    return int(cursor)


# -- the outbox ---------------------------------------------------------------------------

#: The longest lease a claim may ask for, in seconds (about 31 years).
MAX_LEASE_SECONDS = 10**9
#: How much of a delivery error the outbox keeps; the rest is cut.
MAX_DELIVERY_ERROR_TEXT = 10_000
_MAX_OUTBOX_ID = 2**63 - 1


def check_claim(owner: object, limit: object, lease_seconds: object) -> None:
    """Validate the arguments of ``claim_outbox_batch``; ``limit`` 0 claims nothing."""
    check_identifier(owner, "owner")
    check_count(limit, "limit")
    if (
        type(lease_seconds) not in (int, float) or not 0 < lease_seconds < MAX_LEASE_SECONDS  # type: ignore[operator]
    ):
        raise InvalidInput(
            f"must be a positive number of seconds below {MAX_LEASE_SECONDS:,}, "
            f"got {lease_seconds!r}",
            field="lease_seconds",
        )


def check_outbox_ids(outbox_ids: object, owner: object) -> list[int]:
    """Validate the record ids and lease owner of ``mark_delivered`` / ``release_outbox``."""
    check_identifier(owner, "owner")
    if isinstance(outbox_ids, (str, bytes)) or not isinstance(outbox_ids, Sequence):
        raise InvalidInput(
            f"must be a sequence of ints, got {type(outbox_ids).__name__}", field="outbox_ids"
        )
    ids = list(outbox_ids)
    for value in ids:
        if type(value) is not int or not 0 < value <= _MAX_OUTBOX_ID:
            raise InvalidInput(f"must be positive 64-bit ints, got {value!r}", field="outbox_ids")
    return ids


def check_failure(outbox_id: object, owner: object, error: object, retry_at: object) -> str:
    """Validate the arguments of ``mark_failed``; return the error text as the outbox keeps it.

    The text is diagnostics: NUL (which no SQL text column stores) is spelled ``\\0`` and
    anything past ``MAX_DELIVERY_ERROR_TEXT`` characters is cut, on every adapter alike.
    """
    check_outbox_ids([outbox_id], owner)
    if not isinstance(error, str):
        raise InvalidInput(f"must be a string, got {type(error).__name__}", field="error")
    check_aware_datetime(retry_at, "retry_at", optional=True)
    return error.replace("\x00", "\\0")[:MAX_DELIVERY_ERROR_TEXT]


def check_wait_timeout(timeout: object) -> float:
    """Validate the ``timeout`` of ``wait_for_outbox``: a finite number of seconds, >= 0."""
    if type(timeout) not in (int, float) or not 0 <= timeout < MAX_LEASE_SECONDS:  # type: ignore[operator]
        raise InvalidInput(
            f"must be a non-negative number of seconds, got {timeout!r}", field="timeout"
        )
    return float(timeout)  # type: ignore[arg-type]


def check_purge(older_than: object, limit: object) -> None:
    """Validate the arguments of ``purge_delivered``."""
    check_aware_datetime(older_than, "older_than")
    check_count(limit, "limit", minimum=1)


def check_max_payload_bytes(value: object) -> int:
    """Validate the ``max_payload_bytes`` option of ``open_store``."""
    if type(value) is not int or value <= 0:
        raise InvalidInput(f"must be a positive int, got {value!r}", field="max_payload_bytes")
    return value

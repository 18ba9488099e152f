"""The CloudEvents envelope of CONTRACT section 4."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from runstate.sinks.cloudevents import encode_cloudevent, format_time, to_cloudevent
from runstate.types import OutboxRecord, RunEventPersisted


def _record() -> OutboxRecord:
    event = RunEventPersisted(
        run_id="run-1",
        seq=3,
        position=42,
        type="StepStarted",
        payload={"step": "fetch", "n": [1, 2.5, None], "ü": "ß"},
        event_id="ev-3",
        schema_version=1,
        occurred_at=None,
        recorded_at=datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    )
    return OutboxRecord(outbox_id=42, event=event, workflow="billing", attempts=0)


def test_envelope_has_exactly_the_contract_fields() -> None:
    assert to_cloudevent(_record()) == {
        "specversion": "1.0",
        "id": "run-1:3",
        "source": "runstate",
        "type": "StepStarted",
        "subject": "run-1",
        "time": "2025-01-02T03:04:05.678901Z",
        "datacontenttype": "application/json",
        "data": {"step": "fetch", "n": [1, 2.5, None], "ü": "ß"},
        "seq": 3,
        "eventid": "ev-3",
        "workflow": "billing",
    }


def test_id_is_the_record_message_id() -> None:
    record = _record()
    assert to_cloudevent(record)["id"] == record.message_id


def test_encoding_is_compact_utf8_json() -> None:
    data = encode_cloudevent(_record())
    assert b", " not in data
    assert b": " not in data
    assert "ß".encode() in data
    assert json.loads(data) == to_cloudevent(_record())


def test_time_is_rfc3339_utc_with_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert format_time(datetime(2025, 1, 1, 2, 0, tzinfo=plus_two)) == (
        "2025-01-01T00:00:00.000000Z"
    )


def _odd_record(*, traceparent: str | None, tracestate: str | None) -> OutboxRecord:
    # Every string field with characters JSON must escape, and a time not in UTC.
    event = RunEventPersisted(
        run_id='run "1"\n\\',
        seq=2**63 - 1,
        position=7,
        type="Step\u2028Started\x1f",
        payload={"ü": ["\ud7ff", {"deep": [True, False, None, -0.5, 10**20]}], "": ""},
        event_id="ev\t<>&'",
        schema_version=3,
        occurred_at=None,
        recorded_at=datetime(2025, 6, 30, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=-7))),
    )
    return OutboxRecord(
        outbox_id=7,
        event=event,
        workflow="w/ß\r",
        attempts=2,
        traceparent=traceparent,
        tracestate=tracestate,
    )


@pytest.mark.parametrize(
    ("traceparent", "tracestate"),
    [(None, None), ("00-" + "a" * 32 + "-" + "b" * 16 + "-01", None), ("00-x", 'v="1",w=2')],
)
def test_encoded_bytes_are_the_envelope_object_encoded_compactly(
    traceparent: str | None, tracestate: str | None
) -> None:
    # encode_cloudevent writes the envelope out directly: it must stay byte for byte what
    # encoding to_cloudevent's object gives, key order included.
    record = _odd_record(traceparent=traceparent, tracestate=tracestate)
    expected = json.dumps(
        to_cloudevent(record, 'runstate://ü "x"'),
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode()
    assert encode_cloudevent(record, 'runstate://ü "x"') == expected

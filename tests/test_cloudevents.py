"""The CloudEvents envelope of CONTRACT section 4."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

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

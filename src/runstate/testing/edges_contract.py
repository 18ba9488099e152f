"""The edges of every input: the datetime range, integers at and past int64 and the JSON digit
limit, failed writes that leave no trace, and values handed out that the caller may change."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from .._validation import MAX_DATETIME, MAX_INT64, MIN_DATETIME
from ..errors import ConcurrencyConflict, InvalidInput
from ..store import RunStateStore
from ..types import RunBootstrapInput, RunEventInput, RunMetadata
from ._support import ContractBase, as_catalog, as_outbox, bootstrap_input, drain_outbox, new_run_id

_PLUS_5 = timezone(timedelta(hours=5))
_MINUS_5 = timezone(timedelta(hours=-5))
_ALMOST_A_DAY = timezone(timedelta(hours=23, minutes=59))
_MICROSECOND = timedelta(microseconds=1)

#: Instants at the edges of the range, each with the outcome the contract demands.
EDGE_DATETIMES: list[tuple[str, datetime, bool]] = [
    ("first instant", MIN_DATETIME, True),
    ("last instant", MAX_DATETIME, True),
    ("first instant, +23:59", MIN_DATETIME.astimezone(_ALMOST_A_DAY), True),
    ("last instant, -05:00", MAX_DATETIME.astimezone(_MINUS_5), True),
    ("one microsecond early", MIN_DATETIME - _MICROSECOND, False),
    ("one microsecond late", MAX_DATETIME + _MICROSECOND, False),
    ("year 1 UTC", datetime(1, 1, 1, tzinfo=UTC), False),
    ("year 1 +05:00", datetime(1, 1, 1, 1, tzinfo=_PLUS_5), False),
    ("year 1, Jan 2, +05:00", datetime(1, 1, 2, 1, tzinfo=_PLUS_5), False),
    ("datetime.max UTC", datetime.max.replace(tzinfo=UTC), False),
    ("year 9999 -05:00", datetime(9999, 12, 31, 23, tzinfo=_MINUS_5), False),
    ("year 9999, Dec 30, -05:00", datetime(9999, 12, 30, 23, tzinfo=_MINUS_5), False),
]
_IDS = [label for label, _, _ in EDGE_DATETIMES]


def _digits(count: int) -> int:
    return int("9" * count)


class EdgesContract(ContractBase):
    """Every input at the edge of its range is stored exactly or refused with nothing written."""

    # -- datetimes ---------------------------------------------------------------------------

    @pytest.mark.parametrize(("label", "value", "ok"), EDGE_DATETIMES, ids=_IDS)
    async def test_edge_created_at_is_stored_exactly_or_refused(
        self, store: RunStateStore, label: str, value: datetime, ok: bool
    ) -> None:
        run_id = new_run_id()
        request = bootstrap_input(run_id, created_at=value)
        if not ok:
            with pytest.raises(InvalidInput) as caught:
                await store.bootstrap_run_tx(request)
            assert caught.value.field == "metadata.created_at"
            assert "between" in str(caught.value)
            await self._assert_no_trace(store, run_id)
            return
        await store.bootstrap_run_tx(request)
        stored = await store.get_run_metadata_by_run_id(run_id)
        assert stored is not None
        assert stored.created_at == value
        assert stored.created_at.utcoffset() == timedelta(0)
        # A run at the edge of time never breaks a listing of the whole store.
        listed = await as_catalog(store).list_runs(limit=1_000_000)
        assert run_id in {summary.metadata.run_id for summary in listed}

    @pytest.mark.parametrize(("label", "value", "ok"), EDGE_DATETIMES, ids=_IDS)
    async def test_edge_occurred_at_is_stored_exactly_or_refused(
        self, store: RunStateStore, label: str, value: datetime, ok: bool
    ) -> None:
        run_id = new_run_id()
        request = RunBootstrapInput(
            metadata=RunMetadata(run_id=run_id, workflow="wf"),
            first_events=[
                RunEventInput(type="RunQueued"),
                RunEventInput(type="E", occurred_at=value),
            ],
        )
        if not ok:
            with pytest.raises(InvalidInput) as caught:
                await store.bootstrap_run_tx(request)
            assert caught.value.field == "events[1].occurred_at"
            await self._assert_no_trace(store, run_id)
            return
        await store.bootstrap_run_tx(request)
        events = await store.list_events(run_id)
        assert events[1].occurred_at == value
        feed = await as_catalog(store).read_feed(limit=1_000_000)
        assert (run_id, 2) in {(e.run_id, e.seq) for e in feed.events}
        assert (run_id, 2) in set(await drain_outbox(store))

    @pytest.mark.parametrize(("label", "value", "ok"), EDGE_DATETIMES, ids=_IDS)
    async def test_edge_datetime_arguments_are_used_or_refused(
        self, store: RunStateStore, label: str, value: datetime, ok: bool
    ) -> None:
        catalog, outbox = as_catalog(store), as_outbox(store)
        calls: list[tuple[str, Any]] = [
            ("created_after", lambda: catalog.list_runs(created_after=value)),
            ("older_than", lambda: outbox.purge_delivered(older_than=value)),
        ]
        for field, call in calls:
            if ok:
                await call()
            else:
                with pytest.raises(InvalidInput) as caught:
                    await call()
                assert caught.value.field == field
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        (record,) = [
            r
            for r in await outbox.claim_outbox_batch(owner="edge", limit=1_000, lease_seconds=30)
            if r.event.run_id == run_id
        ]
        if ok:
            await outbox.mark_failed(record.outbox_id, owner="edge", error="e", retry_at=value)
        else:
            with pytest.raises(InvalidInput):
                await outbox.mark_failed(record.outbox_id, owner="edge", error="e", retry_at=value)
        assert (await outbox.outbox_stats()).pending >= 0

    async def test_a_refused_bootstrap_leaves_no_trace(self, store: RunStateStore) -> None:
        # The second event's instant is before year 1 in UTC: the whole call is refused, and
        # the run can be created afresh afterwards, starting at seq 1.
        run_id = new_run_id()
        early = datetime(1, 1, 1, 1, tzinfo=_PLUS_5)
        with pytest.raises(InvalidInput):
            await store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=run_id, workflow="wf"),
                    first_events=[
                        RunEventInput(type="RunQueued"),
                        RunEventInput(type="E", occurred_at=early),
                    ],
                )
            )
        await self._assert_no_trace(store, run_id)
        created = await store.bootstrap_run_tx(bootstrap_input(run_id))
        assert created.last_seq == 1
        appended = await store.append_and_enqueue_tx(run_id, [RunEventInput(type="A")])
        assert [e.seq for e in appended.appended] == [2]

    async def _assert_no_trace(self, store: RunStateStore, run_id: str) -> None:
        assert await store.get_run_metadata_by_run_id(run_id) is None
        assert await store.list_events(run_id) == []
        listed = await as_catalog(store).list_runs(limit=1_000_000)
        assert run_id not in {summary.metadata.run_id for summary in listed}
        feed = await as_catalog(store).read_feed(limit=1_000_000)
        assert run_id not in {event.run_id for event in feed.events}
        assert run_id not in {r for r, _ in await drain_outbox(store)}

    # -- integers ----------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "value",
        [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, _digits(4299), -_digits(4300)],
        ids=["int64-max", "int64-max+1", "int64-min", "int64-min-1", "2**64", "4299", "-4300"],
    )
    async def test_big_ints_in_json_round_trip(self, store: RunStateStore, value: int) -> None:
        if sys.get_int_max_str_digits() and len(str(abs(value))) > sys.get_int_max_str_digits():
            pytest.skip("this interpreter's int/str digit limit is lower")
        run_id = new_run_id()
        payload: dict[str, Any] = {"n": value, "list": [value, {"deep": value}]}
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="wf", input=payload),
                first_events=[RunEventInput(type="RunQueued", payload=payload)],
            )
        )
        (event,) = await store.list_events(run_id)
        assert event.payload == payload
        metadata = await store.get_run_metadata_by_run_id(run_id)
        assert metadata is not None
        assert metadata.input == payload

    @pytest.mark.parametrize("where", ["payload", "input", "nested"])
    async def test_ints_past_the_json_digit_limit_are_refused(
        self, store: RunStateStore, where: str
    ) -> None:
        limit = sys.get_int_max_str_digits() or 4300
        huge = 10**limit  # limit + 1 digits
        run_id = new_run_id()
        payload: dict[str, Any] = {"n": huge} if where != "nested" else {"a": [[{"b": -huge}]]}
        request = RunBootstrapInput(
            metadata=RunMetadata(
                run_id=run_id, workflow="wf", input=payload if where == "input" else None
            ),
            first_events=[
                RunEventInput(type="RunQueued", payload={} if where == "input" else payload)
            ],
        )
        if not sys.get_int_max_str_digits():
            await store.bootstrap_run_tx(request)  # no limit in this interpreter: stored
            return
        with pytest.raises(InvalidInput, match="digits"):
            await store.bootstrap_run_tx(request)
        await self._assert_no_trace(store, run_id)
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        with pytest.raises(InvalidInput, match="digits"):
            await store.append_and_enqueue_tx(run_id, [RunEventInput(type="E", payload=payload)])
        assert len(await store.list_events(run_id)) == 1

    async def test_counts_at_int64_max_are_accepted(self, store: RunStateStore) -> None:
        catalog, outbox = as_catalog(store), as_outbox(store)
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id, "A", "B"))
        assert [e.seq for e in await store.list_events(run_id, limit=MAX_INT64)] == [1, 2]
        assert await store.list_events(run_id, after_seq=MAX_INT64) == []
        assert await store.list_events(run_id, after_seq=MAX_INT64, limit=MAX_INT64) == []
        with pytest.raises(ConcurrencyConflict) as caught:
            await store.append_and_enqueue_tx(
                run_id, [RunEventInput(type="C")], expected_seq=MAX_INT64
            )
        assert (caught.value.expected_seq, caught.value.actual_seq) == (MAX_INT64, 2)
        listed = await catalog.list_runs(limit=MAX_INT64)
        assert run_id in {s.metadata.run_id for s in listed}
        assert await catalog.list_runs(limit=MAX_INT64, offset=MAX_INT64) == []
        assert run_id in {e.run_id for e in (await catalog.read_feed(limit=MAX_INT64)).events}
        claimed = await outbox.claim_outbox_batch(owner="max", limit=MAX_INT64, lease_seconds=30)
        assert {(run_id, 1), (run_id, 2)} <= {(r.event.run_id, r.event.seq) for r in claimed}
        await outbox.mark_delivered([r.outbox_id for r in claimed], owner="max")
        now = datetime.now(UTC) + timedelta(seconds=1)
        assert await outbox.purge_delivered(older_than=now, limit=MAX_INT64) >= 2

    # -- values handed out are the caller's ------------------------------------------------

    async def test_changing_returned_values_never_changes_the_store(
        self, store: RunStateStore
    ) -> None:
        run_id = new_run_id()
        payload: dict[str, Any] = {"items": [1, {"k": "v"}], "n": 1}
        request = RunBootstrapInput(
            metadata=RunMetadata(
                run_id=run_id, workflow="wf", input={"in": [1, 2]}, labels={"team": "a"}
            ),
            first_events=[RunEventInput(type="RunQueued", payload=payload)],
        )
        result = await store.bootstrap_run_tx(request)
        appended = await store.append_and_enqueue_tx(
            run_id, [RunEventInput(type="E", payload=payload)]
        )
        _vandalize(result.appended[0].payload)
        _vandalize(appended.appended[0].payload)
        for event in await store.list_events(run_id):
            _vandalize(event.payload)
        for event in (await as_catalog(store).read_feed(limit=1_000_000)).events:
            _vandalize(event.payload)
        metadata = await store.get_run_metadata_by_run_id(run_id)
        assert metadata is not None
        _vandalize(metadata.input)
        _vandalize(metadata.labels)
        for summary in await as_catalog(store).list_runs(limit=1_000_000):
            _vandalize(summary.metadata.input)
            _vandalize(summary.metadata.labels)
        claimed = await as_outbox(store).claim_outbox_batch(
            owner="vandal", limit=1_000_000, lease_seconds=30
        )
        for record in claimed:
            _vandalize(record.event.payload)
        await as_outbox(store).release_outbox([r.outbox_id for r in claimed], owner="vandal")

        events = await store.list_events(run_id)
        assert [e.payload for e in events] == [payload, payload]
        again = await store.get_run_metadata_by_run_id(run_id)
        assert again is not None
        assert (again.input, dict(again.labels)) == ({"in": [1, 2]}, {"team": "a"})
        records = [r for r in await drain_outbox_records(store) if r.event.run_id == run_id]
        assert [r.event.payload for r in records] == [payload, payload]


def _vandalize(value: Any) -> None:
    """Change a returned JSON value (or mapping) in place, as a careless caller would."""
    if isinstance(value, dict):
        for item in list(value.values()):
            _vandalize(item)
        value["vandal"] = True
        value.pop("n", None)
    elif isinstance(value, list):
        for item in value:
            _vandalize(item)
        value.append("vandal")


async def drain_outbox_records(store: RunStateStore) -> list[Any]:
    """Claim and deliver every claimable record; return the records."""
    outbox = as_outbox(store)
    seen: list[Any] = []
    while True:
        batch = await outbox.claim_outbox_batch(owner="drain-records", limit=500, lease_seconds=30)
        if not batch:
            return seen
        seen.extend(batch)
        await outbox.mark_delivered([r.outbox_id for r in batch], owner="drain-records")

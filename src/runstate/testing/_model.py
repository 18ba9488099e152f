"""Model-based property test: random bootstraps and appends against a plain-Python model.

Operations carry values at the edges of their ranges (instants around the first and last
one, with offsets; ints at int64 and at the JSON digit limit): the model knows which must be
refused, and a refused operation must change nothing.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .._validation import MAX_DATETIME, MIN_DATETIME
from ..errors import ConcurrencyConflict, InvalidInput, RunAlreadyExists, RunNotFound
from ..store import RunStateStore
from ..types import RunBootstrapInput, RunEventInput, RunMetadata

RUN_KEYS = 3
EVENT_IDS = [f"e{i}" for i in range(6)]
_DIGITS = sys.get_int_max_str_digits() or 4300

_offsets = st.sampled_from([0, 5 * 60, -5 * 60, 23 * 60 + 59, -(23 * 60 + 59)]).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def _instant(base: datetime, step: int, zone: timezone) -> datetime:
    moved = base + timedelta(microseconds=step)
    try:
        return moved.astimezone(zone)
    except OverflowError:  # not representable in that zone: keep it in UTC
        return moved


_edge_instants = st.builds(
    _instant,
    st.sampled_from([MIN_DATETIME, MAX_DATETIME, datetime(2026, 1, 1, tzinfo=UTC)]),
    st.sampled_from([-86_400 * 10**6, -1, 0, 1, 86_400 * 10**6]),
    _offsets,
)
# Ints at the edges of int64 and of the JSON digit limit (built from small draws, so that
# Hypothesis never has to print a huge one).
_edge_ints = st.builds(
    lambda kind, sign: (
        sign * {"small": 7, "int64": 2**63, "digits": 10 ** (_DIGITS - 1)}.get(kind, 10**_DIGITS)
    ),
    st.sampled_from(["small", "int64", "digits", "past-digits"]),
    st.sampled_from([1, -1]),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Op:
    kind: str  # "bootstrap" or "append"
    run: int
    event_ids: tuple[str, ...]
    expectation: str  # "none", "current" or "stale"
    occurred_at: datetime | None
    number: int


def _valid(op: _Op) -> bool:
    in_range = op.occurred_at is None or MIN_DATETIME <= op.occurred_at <= MAX_DATETIME
    return in_range and abs(op.number) < 10**_DIGITS


_ops = st.lists(
    st.builds(
        _Op,
        kind=st.sampled_from(["bootstrap", "append", "append"]),
        run=st.integers(0, RUN_KEYS - 1),
        event_ids=st.lists(st.sampled_from(EVENT_IDS), min_size=0, max_size=4).map(tuple),
        expectation=st.sampled_from(["none", "current", "stale"]),
        occurred_at=st.one_of(st.none(), st.none(), _edge_instants),
        number=st.one_of(st.just(1), _edge_ints),
    ),
    max_size=25,
)


async def _run_ops(make_store: Callable[[], Awaitable[RunStateStore]], ops: list[_Op]) -> None:
    prefix = uuid.uuid4().hex
    run_ids = [f"model-{prefix}-{i}" for i in range(RUN_KEYS)]
    model: dict[str, list[str]] = {}
    store = await make_store()
    try:
        written: dict[tuple[str, str], tuple[datetime | None, int]] = {}
        for op in ops:
            run_id = run_ids[op.run]
            events = [
                RunEventInput(
                    type=f"T-{e}",
                    event_id=e,
                    occurred_at=op.occurred_at,
                    payload={"n": op.number},
                )
                for e in op.event_ids
            ]
            before = {key: list(log) for key, log in model.items()}
            if events and not _valid(op):
                await _refused(store, op, run_id, events, model)
                assert model == before
                continue
            if op.kind == "bootstrap":
                await _bootstrap(store, model, run_id, events)
            else:
                await _append(store, model, run_id, events, op.expectation)
            for event_id in set(model.get(run_id, [])) - set(before.get(run_id, [])):
                written[(run_id, event_id)] = (op.occurred_at, op.number)
        for run_id in run_ids:
            stored = await store.list_events(run_id)
            expected = model.get(run_id, [])
            assert [e.event_id for e in stored] == expected
            assert [e.seq for e in stored] == list(range(1, len(expected) + 1))
            assert all(e.type == f"T-{e.event_id}" for e in stored)
            for event in stored:
                occurred_at, number = written[(run_id, event.event_id)]
                assert (event.occurred_at, event.payload) == (occurred_at, {"n": number})
            has_metadata = await store.get_run_metadata_by_run_id(run_id) is not None
            assert has_metadata == (run_id in model)
    finally:
        await store.close()


async def _refused(
    store: RunStateStore,
    op: _Op,
    run_id: str,
    events: list[RunEventInput],
    model: dict[str, list[str]],
) -> None:
    """An operation with a value past its range: refused, whatever else it would meet."""
    try:
        if op.kind == "bootstrap":
            await store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=run_id, workflow="model"), first_events=events
                )
            )
        else:
            await store.append_and_enqueue_tx(run_id, events)
    except InvalidInput:
        return
    raise AssertionError(f"a value past its range was stored: {op.kind} of {run_id}")


async def _bootstrap(
    store: RunStateStore, model: dict[str, list[str]], run_id: str, events: list[RunEventInput]
) -> None:
    if not events:
        return
    bootstrap = RunBootstrapInput(
        metadata=RunMetadata(run_id=run_id, workflow="model"), first_events=events
    )
    if run_id in model:
        try:
            await store.bootstrap_run_tx(bootstrap)
        except RunAlreadyExists:
            return
        raise AssertionError("second bootstrap succeeded")
    result = await store.bootstrap_run_tx(bootstrap)
    model[run_id] = []
    _check_result(model[run_id], events, result.appended, result.deduplicated, result.last_seq)


async def _append(
    store: RunStateStore,
    model: dict[str, list[str]],
    run_id: str,
    events: list[RunEventInput],
    expectation: str,
) -> None:
    log = model.get(run_id)
    expected_seq: int | None = None
    if expectation == "current":
        expected_seq = len(log or [])
    elif expectation == "stale":
        expected_seq = len(log or []) + 1
    try:
        result = await store.append_and_enqueue_tx(run_id, events, expected_seq=expected_seq)
    except RunNotFound:
        assert log is None
        return
    except ConcurrencyConflict as conflict:
        actual_seq = conflict.actual_seq
        assert log is not None
        assert expectation == "stale"
        assert actual_seq == len(log)
        return
    assert log is not None
    assert expectation != "stale"
    _check_result(log, events, result.appended, result.deduplicated, result.last_seq)


def _check_result(
    log: list[str],
    events: list[RunEventInput],
    appended: tuple[object, ...],
    deduplicated: tuple[str, ...],
    last_seq: int,
) -> None:
    want_appended: list[str] = []
    want_dedup: list[str] = []
    for event in events:
        if event.event_id in log:
            want_dedup.append(event.event_id)
        else:
            log.append(event.event_id)
            want_appended.append(event.event_id)
    assert [e.event_id for e in appended] == want_appended  # type: ignore[attr-defined]
    assert list(deduplicated) == want_dedup
    assert last_seq == len(log)


def check_against_model(
    make_store: Callable[[], Awaitable[RunStateStore]], max_examples: int
) -> None:
    """Run random operation sequences on fresh stores and compare them with the model."""

    @settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(ops=_ops)
    def run(ops: list[_Op]) -> None:
        asyncio.run(_run_ops(make_store, ops))

    run()

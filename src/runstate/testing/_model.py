"""Model-based property test: random bootstraps and appends against a plain-Python model."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..errors import ConcurrencyConflict, RunAlreadyExists, RunNotFound
from ..store import RunStateStore
from ..types import RunBootstrapInput, RunEventInput, RunMetadata

RUN_KEYS = 3
EVENT_IDS = [f"e{i}" for i in range(6)]


@dataclass(frozen=True, kw_only=True, slots=True)
class _Op:
    kind: str  # "bootstrap" or "append"
    run: int
    event_ids: tuple[str, ...]
    expectation: str  # "none", "current" or "stale"


_ops = st.lists(
    st.builds(
        _Op,
        kind=st.sampled_from(["bootstrap", "append", "append"]),
        run=st.integers(0, RUN_KEYS - 1),
        event_ids=st.lists(st.sampled_from(EVENT_IDS), min_size=0, max_size=4).map(tuple),
        expectation=st.sampled_from(["none", "current", "stale"]),
    ),
    max_size=25,
)


async def _run_ops(make_store: Callable[[], Awaitable[RunStateStore]], ops: list[_Op]) -> None:
    prefix = uuid.uuid4().hex
    run_ids = [f"model-{prefix}-{i}" for i in range(RUN_KEYS)]
    model: dict[str, list[str]] = {}
    store = await make_store()
    try:
        for op in ops:
            run_id = run_ids[op.run]
            events = [RunEventInput(type=f"T-{e}", event_id=e) for e in op.event_ids]
            if op.kind == "bootstrap":
                await _bootstrap(store, model, run_id, events)
            else:
                await _append(store, model, run_id, events, op.expectation)
        for run_id in run_ids:
            stored = await store.list_events(run_id)
            expected = model.get(run_id, [])
            assert [e.event_id for e in stored] == expected
            assert [e.seq for e in stored] == list(range(1, len(expected) + 1))
            assert all(e.type == f"T-{e.event_id}" for e in stored)
            has_metadata = await store.get_run_metadata_by_run_id(run_id) is not None
            assert has_metadata == (run_id in model)
    finally:
        await store.close()


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

"""Fuzzing every adapter: arbitrary unicode, deep and large JSON, SQL-looking strings, instants
over the whole datetime range with offsets, integers at and past int64 and the JSON digit limit.

Every input is either stored and read back exactly (metadata equal, events equal) or refused
with ``InvalidInput`` with nothing written. An independent oracle written from the contract
(section 3, rule 7) says which of the two must happen, so a store that refuses good input is
caught as surely as one that stores bad input. Profiles: tests/_hypothesis_profiles.py
(``HYPOTHESIS_PROFILE=fuzz`` for 10,000 examples per test).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import _hypothesis_profiles  # noqa: F401  (registers and loads the profiles)
from conftest import POSTGRES_URL, drop_postgres_schema, require_service, unique_schema
from runstate import (
    InvalidInput,
    OutboxStore,
    RunAlreadyExists,
    RunBootstrapInput,
    RunEventInput,
    RunMetadata,
    RunStateStore,
    open_store,
)

MAX_ID = 255
MAX_DEPTH = 100
MAX_PAYLOAD = 1024 * 1024
# The contract's instants, written here independently of runstate's constants.
FIRST_INSTANT = timedelta(days=1)  # 0001-01-02T00:00Z, counted from 0001-01-01T00:00Z
LAST_INSTANT = timedelta(days=3652058, microseconds=-1)  # 9999-12-30T23:59:59.999999Z
JSON_DIGITS = sys.get_int_max_str_digits()
_FORBIDDEN_ID = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_FORBIDDEN_JSON = re.compile(r"[\x00\ud800-\udfff]")

SQL_STRINGS = [
    "'; DROP TABLE run_events; --",
    "x' OR '1'='1",
    '" OR 1=1 --',
    "'); DELETE FROM run_metadata; --",
    "$1",
    "$$; SELECT pg_sleep(5); $$",
    "%s",
    "%(run_id)s",
    "?",
    ":run_id",
    "{run_id}",
    "\\",
    "\\'",
    "E'\\x00'",
    "NULL",
    "/*",
    "*/ --",
    "run_outbox",
    "runstate_events; VACUUM",
    "' UNION SELECT * FROM sqlite_master --",
    "\u2028\u2029",
    "\ufeff",
    "\U0010ffff",
    "\ufffe",
]


# -- strategies ------------------------------------------------------------------------------

_chars = st.one_of(
    st.characters(exclude_categories=()),  # everything but surrogates, controls included
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"]),
    st.sampled_from("\x00\x1f\x7f\x85\x9f'\";\\%$?"),
)
any_text = st.one_of(
    st.text(_chars, max_size=20),
    st.sampled_from(SQL_STRINGS),
    st.builds(lambda s, n: (s * n)[: n + 1], st.sampled_from(SQL_STRINGS), st.integers(0, 300)),
    st.integers(MAX_ID - 2, MAX_ID + 2).map(lambda n: "é" * n),
    st.text(_chars, min_size=240, max_size=270),
)
# Ints at the edges: int64, uint64, and around the JSON digit limit (4,300 by default).
edge_ints = st.one_of(
    st.integers(2**63 - 2, 2**63 + 1),
    st.integers(-(2**63) - 1, -(2**63) + 1),
    st.integers(2**64 - 1, 2**64),
    # Built from small draws: Hypothesis itself cannot repr an int past the digit limit.
    st.builds(
        lambda digits, sign, extra: sign * (10**digits + extra),
        st.sampled_from([(JSON_DIGITS or 4300) - 1, JSON_DIGITS or 4300]),
        st.sampled_from([1, -1]),
        st.sampled_from([-1, 0, 7]),
    ),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    edge_ints,
    st.floats(),  # NaN and infinities included: they must be refused
    any_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(any_text, children, max_size=5)
    ),
    max_leaves=25,
)
payloads = st.dictionaries(any_text, json_values, max_size=5)
optional_text = st.one_of(st.none(), any_text)


# Fixed offsets up to a minute short of a day either way, and the edges of the range.
offsets = st.one_of(
    st.just(UTC),
    st.sampled_from([timedelta(hours=5), timedelta(hours=-5), timedelta(hours=23, minutes=59)])
    .flatmap(lambda d: st.sampled_from([d, -d]))
    .map(timezone),
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
    ).map(lambda d: timezone(timedelta(minutes=d // timedelta(minutes=1)))),
)
_EDGE_LOCAL_TIMES = [
    datetime(1, 1, 1),
    datetime(1, 1, 1, 23, 59, 59, 999999),
    datetime(1, 1, 2),
    datetime(1, 1, 2, 5, 0),
    datetime(9999, 12, 30, 19),
    datetime(9999, 12, 30, 23, 59, 59, 999999),
    datetime(9999, 12, 31),
    datetime.max,
]
instants = st.builds(
    lambda local, zone: local.replace(tzinfo=zone),
    st.one_of(st.datetimes(), st.sampled_from(_EDGE_LOCAL_TIMES)),
    offsets,
)
optional_instants = st.one_of(st.none(), instants)


@st.composite
def events(draw: st.DrawFn) -> RunEventInput:
    return RunEventInput(
        type=draw(any_text),
        payload=draw(payloads),
        event_id=draw(st.one_of(any_text, st.uuids().map(str))),
        schema_version=draw(st.sampled_from([1, 2, 0, -1, 2**31 - 1, 2**31])),
        occurred_at=draw(optional_instants),
    )


@st.composite
def metadata(draw: st.DrawFn) -> RunMetadata:
    return RunMetadata(
        run_id=draw(any_text),
        workflow=draw(any_text),
        workflow_version=draw(optional_text),
        tenant_id=draw(optional_text),
        parent_run_id=draw(optional_text),
        input=draw(json_values),
        labels=draw(st.dictionaries(any_text, any_text, max_size=4)),
        created_at=draw(instants),
    )


def _nest(depth: int, leaf: Any, kind: str) -> Any:
    value = leaf
    for index in range(depth):
        value = [value] if kind == "list" else {f"k{index}": value}
    return value


def big_payload(shape: str, size: int, char: str, leaf: Any) -> dict[str, Any]:
    """Build a deep or large payload inside the test, so failures print a short example."""
    if shape in ("deep-list", "deep-dict"):
        return {"deep": _nest(MAX_DEPTH - 3 + size % 7, leaf, shape[5:])}
    if shape == "blob":  # around the 1 MiB limit, ASCII or multi-byte
        return {"blob": char * ((MAX_PAYLOAD - 64 + size % 129) // len(char.encode()))}
    return {"items": [{"i": i, "s": SQL_STRINGS[i % len(SQL_STRINGS)]} for i in range(size)]}


# -- the oracle: what the contract says must be refused --------------------------------------


def ok_id(value: object, *, optional: bool = False) -> bool:
    if value is None:
        return optional
    return isinstance(value, str) and 0 < len(value) <= MAX_ID and not _FORBIDDEN_ID.search(value)


def ok_instant(value: datetime | None, *, optional: bool = False) -> bool:
    if value is None:
        return optional
    offset = value.utcoffset()
    assert offset is not None
    since_year_1 = value.replace(tzinfo=None) - datetime(1, 1, 1) - offset
    return FIRST_INSTANT <= since_year_1 <= LAST_INSTANT


def ok_json(value: object, depth: int = 0) -> bool:
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return not JSON_DIGITS or abs(value) < 10**JSON_DIGITS
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return not _FORBIDDEN_JSON.search(value)
    if isinstance(value, list | dict):
        if depth >= MAX_DEPTH:
            return False
        if isinstance(value, list):
            return all(ok_json(item, depth + 1) for item in value)
        return all(ok_json(k) and ok_json(v, depth + 1) for k, v in value.items())
    return False


def ok_size(value: object) -> bool:
    if not ok_json(value):
        return True  # refused anyway; and json.dumps cannot spell an int past the limit
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8")) <= MAX_PAYLOAD


def ok_event(event: RunEventInput) -> bool:
    return (
        ok_id(event.type)
        and ok_id(event.event_id)
        and ok_instant(event.occurred_at, optional=True)
        and 1 <= event.schema_version <= 2**31 - 1
        and ok_json(dict(event.payload))
        and ok_size(dict(event.payload))
    )


def ok_metadata(meta: RunMetadata) -> bool:
    return (
        ok_id(meta.run_id)
        and ok_id(meta.workflow)
        and ok_instant(meta.created_at)
        and all(
            ok_id(v, optional=True)
            for v in (meta.workflow_version, meta.tenant_id, meta.parent_run_id)
        )
        and all(ok_id(k) and not _FORBIDDEN_JSON.search(v) for k, v in meta.labels.items())
        and ok_json(meta.input)
        and ok_size(meta.input)
    )


# -- stores, one event loop per module -------------------------------------------------------


class Harness:
    """Stores of every adapter, opened once on a private event loop shared by examples."""

    def __init__(self, tmp: Path) -> None:
        self.runner = asyncio.Runner()
        self.stores: dict[str, RunStateStore] = {}
        self.used: dict[str, set[str]] = {}
        self.schema = ""
        self.tmp = tmp

    def get(self, kind: str) -> RunStateStore:
        if kind not in self.stores:
            if kind == "memory":
                url = f"memory://fuzz-{uuid.uuid4().hex}"
            elif kind == "sqlite":
                url = f"sqlite:///{self.tmp / 'fuzz.db'}"
            else:
                require_service("PostgreSQL", "127.0.0.1", 5432)
                self.schema = unique_schema()
                url = f"{POSTGRES_URL}?schema={self.schema}"
            self.stores[kind] = self.runner.run(_open(url))
            self.used[kind] = set()
        return self.stores[kind]

    def close(self) -> None:
        for store in self.stores.values():
            self.runner.run(store.close())
        if self.schema:
            self.runner.run(drop_postgres_schema(self.schema))
        self.runner.close()


async def _open(url: str) -> RunStateStore:
    return await open_store(url)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    state = Harness(tmp_path_factory.mktemp("fuzz"))
    try:
        yield state
    finally:
        state.close()


ADAPTERS = pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])


async def _pending(store: RunStateStore) -> int:
    assert isinstance(store, OutboxStore)
    stats = await store.outbox_stats()
    return stats.pending + stats.in_flight + stats.dead + stats.delivered


def _expected_events(events: list[RunEventInput]) -> list[RunEventInput]:
    seen: set[str] = set()
    kept = []
    for event in events:
        if event.event_id not in seen:
            seen.add(event.event_id)
            kept.append(event)
    return kept


def _same_events(stored: list[Any], given: list[RunEventInput], first_seq: int) -> None:
    assert [e.seq for e in stored] == list(range(first_seq, first_seq + len(given)))
    for persisted, event in zip(stored, given, strict=True):
        assert persisted.type == event.type
        assert persisted.event_id == event.event_id
        assert persisted.schema_version == event.schema_version
        assert persisted.payload == event.payload
        assert persisted.occurred_at == event.occurred_at
        # Exact JSON: same keys in the same order, same number spellings.
        assert json.dumps(persisted.payload) == json.dumps(dict(event.payload))


async def _bootstrap_case(
    store: RunStateStore, meta: RunMetadata, first: list[Any], stored_ids: set[str]
) -> None:
    valid = ok_metadata(meta) and bool(first) and all(ok_event(e) for e in first)
    before = await _pending(store)
    existing = meta.run_id in stored_ids
    if existing:
        snapshot = await store.list_events(meta.run_id)
    try:
        await store.bootstrap_run_tx(RunBootstrapInput(metadata=meta, first_events=first))
    except RunAlreadyExists:
        # Hypothesis replays and shrinks examples: a run id it stored before is taken.
        assert valid, "invalid input got past validation"
        assert existing
        assert await store.list_events(meta.run_id) == snapshot
        assert await _pending(store) == before
        return
    except InvalidInput:
        assert not valid, "valid input refused"
        assert await _pending(store) == before
        if existing:
            assert await store.list_events(meta.run_id) == snapshot
        elif ok_id(meta.run_id):
            assert await store.get_run_metadata_by_run_id(meta.run_id) is None
            assert await store.list_events(meta.run_id) == []
        return
    assert valid, "invalid input stored"
    assert not existing, "a second bootstrap of one run id succeeded"
    stored_ids.add(meta.run_id)
    stored = await store.get_run_metadata_by_run_id(meta.run_id)
    assert stored == meta
    assert json.dumps(stored.input) == json.dumps(meta.input)
    expected = _expected_events(first)
    _same_events(await store.list_events(meta.run_id), expected, 1)
    assert await _pending(store) == before + len(expected)


def _run(harness: Harness, kind: str, coro: Any) -> None:
    harness.runner.run(coro)


@ADAPTERS
@given(meta=metadata(), first=st.lists(events(), max_size=4))
def test_fuzz_bootstrap(harness: Harness, kind: str, meta: RunMetadata, first: list[Any]) -> None:
    store = harness.get(kind)
    _run(harness, kind, _bootstrap_case(store, meta, first, harness.used[kind]))


async def _append_case(store: RunStateStore, run_id: str, batch: list[RunEventInput]) -> None:
    before = await store.list_events(run_id)
    old_ids = {e.event_id for e in before}
    valid = all(ok_event(e) for e in batch)
    try:
        result = await store.append_and_enqueue_tx(run_id, batch, expected_seq=len(before))
    except InvalidInput:
        assert not valid, "valid input refused"
        assert await store.list_events(run_id) == before
        return
    assert valid, "invalid input stored"
    fresh = [e for e in _expected_events(batch) if e.event_id not in old_ids]
    after = await store.list_events(run_id)
    assert after[: len(before)] == before
    _same_events(after[len(before) :], fresh, len(before) + 1)
    assert result.last_seq == len(after)


@ADAPTERS
@given(batch=st.lists(events(), max_size=5))
def test_fuzz_append(harness: Harness, kind: str, batch: list[RunEventInput]) -> None:
    store = harness.get(kind)
    run_id = f"fuzz-append-{kind}"
    if run_id not in harness.used[kind]:
        harness.used[kind].add(run_id)
        first = [RunEventInput(type="RunQueued")]
        request = RunBootstrapInput(
            metadata=RunMetadata(run_id=run_id, workflow="wf"), first_events=first
        )
        _run(harness, kind, store.bootstrap_run_tx(request))
    _run(harness, kind, _append_case(store, run_id, batch))


@ADAPTERS
@given(
    shape=st.sampled_from(["deep-list", "deep-dict", "blob", "items"]),
    size=st.integers(1000, 20_000),
    char=st.sampled_from(["a", "é", "\u20ac", "\U0001f600"]),
    leaf=json_scalars,
    where=st.sampled_from(["payload", "input"]),
)
def test_fuzz_deep_and_large_json(
    harness: Harness, kind: str, shape: str, size: int, char: str, leaf: Any, where: str
) -> None:
    store = harness.get(kind)
    payload = big_payload(shape, size, char, leaf)
    meta = RunMetadata(
        run_id=f"big-{uuid.uuid4().hex}", workflow="wf", input=payload if where == "input" else None
    )
    event = RunEventInput(type="Big", payload=payload if where == "payload" else {})
    _run(harness, kind, _bootstrap_case(store, meta, [event], harness.used[kind]))

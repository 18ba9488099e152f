"""Fuzzing the edges that reach drivers: every URL component, and every count argument.

A URL built from hostile parts either opens a store or is refused with ``InvalidInput``
(configuration) or ``StoreUnavailable`` (nothing answered): never a raw driver exception, and
never a message showing the password or a secret query value. Every seq, limit, offset and
count, at and past int64 and of the wrong type, is used or refused with ``InvalidInput``
naming it. Profiles: tests/_hypothesis_profiles.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

import _hypothesis_profiles  # noqa: F401  (registers and loads the profiles)
from conftest import POSTGRES_URL, drop_postgres_schema, require_service, unique_schema
from runstate import (
    ConcurrencyConflict,
    InvalidInput,
    OutboxStore,
    RunBootstrapInput,
    RunEventInput,
    RunMetadata,
    RunStateStore,
    StoreUnavailable,
    open_store,
)
from runstate.store import RunCatalog

INT64_MAX = 2**63 - 1
SECRET_MARK = "Zq9"

# -- URLs ------------------------------------------------------------------------------------

_password_text = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=3, max_size=12
)
secrets = _password_text.map(lambda text: SECRET_MARK + text)
users = st.sampled_from(["postgres", "nobody", "", "u%00x", "%C3%BC", "a b"])
hosts = st.sampled_from(
    ["127.0.0.1", "[::1]", "[::1", "127.0.0.1,127.0.0.1", "", "127.0.0.1%00", "a b", "[zz]"]
)
ports = st.one_of(
    st.none(),
    st.integers(-1, 70_000).map(str),
    st.sampled_from(["abc", "", "5432", "99999", "0", "٥٤٣٢", "1e3", "5432,5433"]),
)
paths = st.one_of(
    st.sampled_from(["/test", "/nodb", "/d%00b", "/", "", "/%FF", "/a/b"]),
    st.text(max_size=8).map(lambda text: "/" + quote(text, safe="")),
)
_query_values = st.one_of(
    st.sampled_from(
        ["disable", "require", "bogus", "true", "maybe", "-1", "0", "1e300", "nan", "a%00b", ""]
    ),
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=10).map(lambda text: quote(text, safe="")),
)
_query_keys = st.sampled_from(
    [
        "sslmode",
        "application_name",
        "target_session_attrs",
        "ssl_min_protocol_version",
        "port",
        "schema",
        "pool_size",
        "statement_cache_size",
        "write_statements",
        "connect_timeout",
        "command_timeout",
        "pgbouncer",
        "busy_timeout",
        "synchronous",
        "max_payload_bytes",
        "bogus",
    ]
)


@st.composite
def urls(draw: st.DrawFn) -> tuple[str, str]:
    """A URL from hostile parts, and the secret it carries somewhere."""
    scheme = draw(st.sampled_from(["postgresql", "postgres", "sqlite", "memory", "mysql", "PG"]))
    secret = draw(secrets)
    encoded = quote(secret, safe="")
    place = draw(st.sampled_from(["userinfo", "password", "sslpassword", "fragment", "token"]))
    user = draw(users)
    userinfo = f"{user}:{encoded}@" if place == "userinfo" else (f"{user}@" if user else "")
    port = draw(ports)
    authority = userinfo + draw(hosts) + ("" if port is None else f":{port}")
    query = [
        f"{key}={value}"
        for key, value in draw(st.lists(st.tuples(_query_keys, _query_values), max_size=4))
    ]
    if place in ("password", "sslpassword", "token"):
        query.insert(draw(st.integers(0, len(query))), f"{place}={encoded}")
    fragment = f"#password={encoded}" if place == "fragment" else ""
    tail = ("?" + "&".join(query) if query else "") + fragment
    if scheme == "sqlite":
        name = draw(st.text(st.characters(exclude_characters="/\\%"), max_size=8))
        name = quote(name, safe="") + draw(st.sampled_from(["", "%00", "%20x"]))
        return f"sqlite:///{{tmp}}/{name or 'x'}.db{tail}", secret
    if scheme == "memory":
        return f"memory://{quote(draw(st.text(max_size=6)), safe='')}{tail}", secret
    return f"{scheme}://{authority}{draw(paths)}{tail}", secret


@pytest.fixture(scope="module")
def fuzz_schema() -> Iterator[str]:
    """The one schema a fuzzed URL that reaches the test server may migrate."""
    name = unique_schema()
    yield name
    asyncio.run(drop_postgres_schema(name))


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder fuzzed SQLite URLs point into."""
    return tmp_path_factory.mktemp("fuzz-urls")


def _messages(exc: BaseException) -> list[str]:
    return [str(exc), repr(exc)]


@given(case=urls())
def test_fuzz_every_url_component(
    case: tuple[str, str], fuzz_folder: Path, fuzz_schema: str
) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    template, secret = case
    url = template.replace("{tmp}", str(fuzz_folder))
    options: dict[str, Any] = {}
    if url.lower().startswith(("postgresql://", "postgres://")):
        options["schema"] = fuzz_schema  # keywords win: never a schema of the fuzzer's making

    async def attempt() -> None:
        try:
            store = await open_store(url, **options)
        except (InvalidInput, StoreUnavailable) as exc:
            for text in _messages(exc):
                assert secret not in text, text
                assert quote(secret, safe="") not in text, text
            return
        try:
            assert secret not in repr(store)
        finally:
            await store.close()

    asyncio.run(attempt())


# -- counts ----------------------------------------------------------------------------------

counts = st.one_of(
    st.integers(-3, 3),
    st.integers(2**31 - 2, 2**31 + 1),
    st.integers(INT64_MAX - 2, INT64_MAX + 2),
    st.integers(-(2**64), 2**64),
    st.builds(lambda digits: 10**digits, st.sampled_from([19, 30, 4299, 4300, 5000])),
    st.sampled_from([True, False, 1.0, "1", None, float("nan")]),
)
_METHODS = {
    # method: (argument, minimum, whether None is allowed)
    "list_events.after_seq": ("after_seq", 0, False),
    "list_events.limit": ("limit", 0, True),
    "append.expected_seq": ("expected_seq", 0, True),
    "list_runs.limit": ("limit", 0, False),
    "list_runs.offset": ("offset", 0, False),
    "read_feed.limit": ("limit", 0, False),
    "claim.limit": ("limit", 0, False),
    "purge.limit": ("limit", 1, False),
}


def _valid(value: object, minimum: int, optional: bool) -> bool:
    if value is None:
        return optional
    return type(value) is int and minimum <= value <= INT64_MAX


async def _call(store: RunStateStore, method: str, value: Any, run_id: str) -> None:
    catalog, outbox = store, store
    assert isinstance(catalog, RunCatalog)
    assert isinstance(outbox, OutboxStore)
    if method == "list_events.after_seq":
        await store.list_events(run_id, after_seq=value)
    elif method == "list_events.limit":
        await store.list_events(run_id, limit=value)
    elif method == "append.expected_seq":
        with contextlib.suppress(ConcurrencyConflict):
            await store.append_and_enqueue_tx(run_id, [RunEventInput(type="E")], expected_seq=value)
    elif method == "list_runs.limit":
        await catalog.list_runs(limit=value)
    elif method == "list_runs.offset":
        await catalog.list_runs(offset=value)
    elif method == "read_feed.limit":
        await catalog.read_feed(limit=value)
    elif method == "claim.limit":
        claimed = await outbox.claim_outbox_batch(owner="fuzz", limit=value, lease_seconds=30)
        await outbox.release_outbox([r.outbox_id for r in claimed], owner="fuzz")
    else:
        from datetime import UTC, datetime

        await outbox.purge_delivered(older_than=datetime.now(UTC), limit=value)


class CountHarness:
    """One store per adapter on a private event loop, opened on first use."""

    def __init__(self, tmp: Path) -> None:
        self.runner = asyncio.Runner()
        self.stores: dict[str, RunStateStore] = {}
        self.tmp = tmp
        self.schema = ""
        self.run_id = f"count-{uuid.uuid4().hex}"

    def get(self, kind: str) -> RunStateStore:
        if kind not in self.stores:
            if kind == "memory":
                url = "memory://"
            elif kind == "sqlite":
                url = f"sqlite:///{self.tmp / 'counts.db'}"
            else:
                require_service("PostgreSQL", "127.0.0.1", 5432)
                self.schema = unique_schema()
                url = f"{POSTGRES_URL}?schema={self.schema}"
            store = self.runner.run(_open(url))
            self.runner.run(
                store.bootstrap_run_tx(
                    RunBootstrapInput(
                        metadata=RunMetadata(run_id=self.run_id, workflow="wf"),
                        first_events=[RunEventInput(type="RunQueued")],
                    )
                )
            )
            self.stores[kind] = store
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
def counts_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountHarness]:
    harness = CountHarness(tmp_path_factory.mktemp("counts"))
    try:
        yield harness
    finally:
        harness.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
@given(method=st.sampled_from(sorted(_METHODS)), value=counts)
def test_fuzz_every_count_argument(
    counts_harness: CountHarness, kind: str, method: str, value: Any
) -> None:
    store = counts_harness.get(kind)
    field, minimum, optional = _METHODS[method]

    async def attempt() -> None:
        if _valid(value, minimum, optional):
            await _call(store, method, value, counts_harness.run_id)
            return
        with pytest.raises(InvalidInput) as caught:
            await _call(store, method, value, counts_harness.run_id)
        assert caught.value.field == field
        assert len(str(caught.value)) < 300

    counts_harness.runner.run(attempt())

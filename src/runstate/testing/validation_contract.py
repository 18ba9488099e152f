"""Bad input is refused with ``InvalidInput`` before anything is written, on every method."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from ..errors import InvalidInput, StoreClosed
from ..store import RunStateStore
from ..types import RunBootstrapInput, RunEventInput, RunMetadata
from ._support import (
    ContractBase,
    as_catalog,
    as_outbox,
    bad,
    bootstrap_input,
    drain_outbox,
    new_run_id,
)

_INT64_PAST = 2**63
_HUGE = 10**5000
_AWARE = datetime(2026, 1, 1, tzinfo=UTC)
_NAIVE = datetime(2026, 1, 1)

#: Bad arguments of the outbox and the catalog: (method, keyword arguments, the field named).
#: The good arguments each case starts from are in ``_call``.
_BAD_ARGUMENTS: list[tuple[str, dict[str, Any], str]] = [
    ("claim", {"owner": ""}, "owner"),
    ("claim", {"owner": 7}, "owner"),
    ("claim", {"owner": "a\nb"}, "owner"),
    ("claim", {"limit": -1}, "limit"),
    ("claim", {"limit": 1.5}, "limit"),
    ("claim", {"limit": True}, "limit"),
    ("claim", {"limit": "10"}, "limit"),
    ("claim", {"limit": _INT64_PAST}, "limit"),
    ("claim", {"limit": _HUGE}, "limit"),
    ("claim", {"lease_seconds": 0}, "lease_seconds"),
    ("claim", {"lease_seconds": -1.0}, "lease_seconds"),
    ("claim", {"lease_seconds": float("nan")}, "lease_seconds"),
    ("claim", {"lease_seconds": float("inf")}, "lease_seconds"),
    ("claim", {"lease_seconds": True}, "lease_seconds"),
    ("claim", {"lease_seconds": "30"}, "lease_seconds"),
    ("claim", {"lease_seconds": 1e12}, "lease_seconds"),
    ("mark_delivered", {"outbox_ids": 5}, "outbox_ids"),
    ("mark_delivered", {"outbox_ids": "12"}, "outbox_ids"),
    ("mark_delivered", {"outbox_ids": b"12"}, "outbox_ids"),
    ("mark_delivered", {"outbox_ids": [True]}, "outbox_ids"),
    ("mark_delivered", {"outbox_ids": [0]}, "outbox_ids"),
    ("mark_delivered", {"outbox_ids": [-1]}, "outbox_ids"),
    ("mark_delivered", {"outbox_ids": [1.0]}, "outbox_ids"),
    ("mark_delivered", {"outbox_ids": [_INT64_PAST]}, "outbox_ids"),
    ("mark_delivered", {"owner": ""}, "owner"),
    ("release_outbox", {"outbox_ids": [0]}, "outbox_ids"),
    ("release_outbox", {"outbox_ids": {1: 1}}, "outbox_ids"),
    ("release_outbox", {"owner": None}, "owner"),
    ("mark_failed", {"outbox_id": 0}, "outbox_ids"),
    ("mark_failed", {"outbox_id": "1"}, "outbox_ids"),
    ("mark_failed", {"outbox_id": _INT64_PAST}, "outbox_ids"),
    ("mark_failed", {"owner": ""}, "owner"),
    ("mark_failed", {"error": None}, "error"),
    ("mark_failed", {"error": 500}, "error"),
    ("mark_failed", {"retry_at": _NAIVE}, "retry_at"),
    ("mark_failed", {"retry_at": "2026-01-01T00:00:00Z"}, "retry_at"),
    ("redrive", {"run_id": ""}, "run_id"),
    ("redrive", {"run_id": 5}, "run_id"),
    ("purge", {"older_than": _NAIVE}, "older_than"),
    ("purge", {"older_than": None}, "older_than"),
    ("purge", {"limit": 0}, "limit"),
    ("purge", {"limit": True}, "limit"),
    ("purge", {"limit": _INT64_PAST}, "limit"),
    ("wait", {"timeout": -1}, "timeout"),
    ("wait", {"timeout": float("nan")}, "timeout"),
    ("wait", {"timeout": "1"}, "timeout"),
    ("wait", {"timeout": True}, "timeout"),
    ("list_runs", {"workflow": ""}, "workflow"),
    ("list_runs", {"tenant_id": 5}, "tenant_id"),
    ("list_runs", {"created_after": _NAIVE}, "created_after"),
    ("list_runs", {"limit": -1}, "limit"),
    ("list_runs", {"limit": None}, "limit"),
    ("list_runs", {"limit": _INT64_PAST}, "limit"),
    ("list_runs", {"offset": -1}, "offset"),
    ("list_runs", {"offset": 1.0}, "offset"),
    ("list_runs", {"offset": _HUGE}, "offset"),
    ("read_feed", {"cursor": "not a cursor"}, "cursor"),
    ("read_feed", {"cursor": 5}, "cursor"),
    ("read_feed", {"cursor": "-1"}, "cursor"),
    ("read_feed", {"cursor": "99999999999999999999999"}, "cursor"),
    ("read_feed", {"cursor": "9223372036854775808"}, "cursor"),
    ("read_feed", {"cursor": "18446744073709551616:0"}, "cursor"),
    ("read_feed", {"cursor": "1:9223372036854775808"}, "cursor"),
    ("read_feed", {"cursor": "\u0661\u0662"}, "cursor"),
    ("read_feed", {"limit": -1}, "limit"),
    ("read_feed", {"limit": None}, "limit"),
    ("read_feed", {"limit": True}, "limit"),
    ("read_feed", {"limit": _INT64_PAST}, "limit"),
    ("list_events", {"after_seq": -1}, "after_seq"),
    ("list_events", {"after_seq": _INT64_PAST}, "after_seq"),
    ("list_events", {"limit": _HUGE}, "limit"),
    ("append", {"expected_seq": -1}, "expected_seq"),
    ("append", {"expected_seq": _INT64_PAST}, "expected_seq"),
    ("append", {"expected_seq": True}, "expected_seq"),
]


def _call(store: RunStateStore, method: str, changes: dict[str, Any]) -> Awaitable[Any]:
    """Call ``method`` with good arguments, except those in ``changes``."""
    outbox, catalog = as_outbox(store), as_catalog(store)
    calls: dict[str, tuple[Callable[..., Awaitable[Any]], dict[str, Any]]] = {
        "claim": (outbox.claim_outbox_batch, {"owner": "o", "limit": 10, "lease_seconds": 30}),
        "mark_delivered": (outbox.mark_delivered, {"outbox_ids": [1], "owner": "o"}),
        "release_outbox": (outbox.release_outbox, {"outbox_ids": [1], "owner": "o"}),
        "mark_failed": (
            outbox.mark_failed,
            {"outbox_id": 1, "owner": "o", "error": "boom", "retry_at": _AWARE},
        ),
        "redrive": (outbox.redrive_dead_letters, {"run_id": "r"}),
        "purge": (outbox.purge_delivered, {"older_than": _AWARE, "limit": 10}),
        "wait": (outbox.wait_for_outbox, {"timeout": 0.01}),
        "list_runs": (catalog.list_runs, {"limit": 10, "offset": 0}),
        "read_feed": (catalog.read_feed, {"cursor": None, "limit": 10}),
        "list_events": (store.list_events, {"run_id": "r", "after_seq": 0, "limit": 10}),
        "append": (
            store.append_and_enqueue_tx,
            {"run_id": "r", "events": [RunEventInput(type="T")], "expected_seq": 1},
        ),
    }
    function, arguments = calls[method]
    arguments = {**arguments, **changes}
    if method in ("list_events", "append"):
        positional = [arguments.pop("run_id")]
        if method == "append":
            positional.append(arguments.pop("events"))
        return function(*positional, **arguments)
    return function(**arguments)


class ValidationContract(ContractBase):
    """Rule 7 of docs/design.md, "The store contract", for every argument of every method."""

    # -- rule 7: bad input -------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("label", "metadata_changes", "event"),
        [
            ("empty run_id", {"run_id": ""}, None),
            ("long run_id", {"run_id": "r" * 256}, None),
            ("control char in run_id", {"run_id": "run\n1"}, None),
            ("non-str run_id", {"run_id": 12}, None),
            ("empty workflow", {"workflow": ""}, None),
            ("naive created_at", {"created_at": datetime(2026, 1, 1)}, None),
            ("input with NaN", {"input": {"x": float("nan")}}, None),
            ("labels not str", {"labels": {"k": 1}}, None),
            ("empty type", {}, RunEventInput(type="")),
            ("long type", {}, RunEventInput(type="T" * 256)),
            ("control char in event_id", {}, RunEventInput(type="T", event_id="a\x00b")),
            ("NaN", {}, RunEventInput(type="T", payload={"v": float("nan")})),
            ("Infinity", {}, RunEventInput(type="T", payload={"v": float("inf")})),
            ("bytes", {}, RunEventInput(type="T", payload=bad({"v": b"raw"}))),
            ("object", {}, RunEventInput(type="T", payload=bad({"v": object()}))),
            ("set", {}, RunEventInput(type="T", payload=bad({"v": {1, 2}}))),
            ("tuple", {}, RunEventInput(type="T", payload=bad({"v": (1, 2)}))),
            ("int key", {}, RunEventInput(type="T", payload=bad({"v": {1: "one"}}))),
            ("payload list", {}, RunEventInput(type="T", payload=[1])),  # type: ignore[arg-type]
            ("NUL in string", {}, RunEventInput(type="T", payload={"v": "a\x00"})),
            ("lone surrogate", {}, RunEventInput(type="T", payload={"v": "\ud800"})),
            ("schema_version 0", {}, RunEventInput(type="T", schema_version=0)),
            ("naive occurred_at", {}, RunEventInput(type="T", occurred_at=datetime(2026, 1, 1))),
        ],
    )
    async def test_bad_bootstrap_input_writes_nothing(
        self,
        store: RunStateStore,
        label: str,
        metadata_changes: dict[str, Any],
        event: RunEventInput | None,
    ) -> None:
        run_id = new_run_id()
        fields: dict[str, Any] = {"run_id": run_id, "workflow": "wf", **metadata_changes}
        metadata = RunMetadata(**fields)
        events = [RunEventInput(type="RunQueued")] + ([event] if event else [])
        with pytest.raises(InvalidInput) as caught:
            await store.bootstrap_run_tx(RunBootstrapInput(metadata=metadata, first_events=events))
        assert caught.value.code == "INVALID_INPUT"
        assert str(caught.value)
        for candidate in {run_id, str(fields["run_id"])}:
            if candidate and len(candidate) <= 255 and "\n" not in candidate:
                assert await store.get_run_metadata_by_run_id(candidate) is None

    async def test_bootstrap_without_events_is_refused(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        with pytest.raises(InvalidInput):
            await store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=run_id, workflow="wf"), first_events=[]
                )
            )
        assert await store.get_run_metadata_by_run_id(run_id) is None

    async def test_bad_append_writes_nothing(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        bad_batches: list[Any] = [
            [RunEventInput(type="ok"), RunEventInput(type="bad", payload={"v": float("inf")})],
            [RunEventInput(type="ok"), RunEventInput(type="\x07")],
            "not a list",
            [{"type": "dict-not-event"}],
        ]
        for batch in bad_batches:
            with pytest.raises(InvalidInput):
                await store.append_and_enqueue_tx(run_id, batch)
        with pytest.raises(InvalidInput):
            await store.append_and_enqueue_tx(run_id, [RunEventInput(type="ok")], expected_seq=-1)
        with pytest.raises(InvalidInput):
            await store.append_and_enqueue_tx("", [RunEventInput(type="ok")])
        assert len(await store.list_events(run_id)) == 1
        assert [s for r, s in await drain_outbox(store) if r == run_id] == [1]

    async def test_payload_over_the_default_limit_is_refused(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        big = {"blob": "x" * (1024 * 1024)}
        with pytest.raises(InvalidInput, match="limit"):
            await store.append_and_enqueue_tx(run_id, [RunEventInput(type="Big", payload=big)])
        near = {"blob": "x" * (1024 * 1024 - 100)}
        result = await store.append_and_enqueue_tx(
            run_id, [RunEventInput(type="Big", payload=near)]
        )
        assert result.last_seq == 2
        (event,) = await store.list_events(run_id, after_seq=1)
        assert event.payload == near

    async def test_payload_limit_is_configurable(self) -> None:
        store = await self.make_small_payload_store(100)
        try:
            run_id = new_run_id()
            await store.bootstrap_run_tx(bootstrap_input(run_id))
            with pytest.raises(InvalidInput, match="100"):
                await store.append_and_enqueue_tx(
                    run_id, [RunEventInput(type="T", payload={"v": "y" * 200})]
                )
            await store.append_and_enqueue_tx(run_id, [RunEventInput(type="T", payload={"v": 1})])
            assert len(await store.list_events(run_id)) == 2
        finally:
            await store.close()

    async def test_payload_round_trips_exactly(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        payload: dict[str, Any] = {
            "unicode": "héllo wörld ✓ 𝄞 \u2028 \t\n\"quoted\" 'single' \\ back",
            "sql": "'; DROP TABLE run_events; --",
            "big_int": 2**70,
            "neg": -12345678901234567890,
            "float": 0.1,
            "tiny": 5e-324,
            "huge": 1.7976931348623157e308,
            "bools": [True, False, None],
            "empty": {"list": [], "dict": {}, "str": ""},
            "deep": {"a": {"b": {"c": {"d": [[[["x"]]]]}}}},
            "": "empty key",
        }
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="wf", input=payload),
                first_events=[RunEventInput(type="RunQueued", payload=payload)],
            )
        )
        (event,) = await store.list_events(run_id)
        assert event.payload == payload
        assert repr(event.payload) == repr(payload)
        metadata = await store.get_run_metadata_by_run_id(run_id)
        assert metadata is not None
        assert metadata.input == payload

    async def test_stored_payload_is_isolated_from_caller(self, store: RunStateStore) -> None:
        run_id = new_run_id()
        payload: dict[str, Any] = {"items": [1, 2]}
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=run_id, workflow="wf"),
                first_events=[RunEventInput(type="RunQueued", payload=payload)],
            )
        )
        payload["items"].append(3)
        (event,) = await store.list_events(run_id)
        assert event.payload == {"items": [1, 2]}

    # -- the outbox and the catalog: the same rules on every adapter -----------------------

    @pytest.mark.parametrize(
        ("method", "changes", "field"),
        _BAD_ARGUMENTS,
        ids=[f"{m}-{next(iter(c))}-{i}" for i, (m, c, _) in enumerate(_BAD_ARGUMENTS)],
    )
    async def test_bad_outbox_and_catalog_arguments_are_refused(
        self, store: RunStateStore, method: str, changes: dict[str, Any], field: str
    ) -> None:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        with pytest.raises(InvalidInput) as caught:
            await _call(store, method, changes)
        assert caught.value.field == field
        # Nothing was leased, delivered or changed: the record is still there to claim.
        assert (run_id, 1) in await drain_outbox(store, owner="after-a-refusal")

    async def test_zero_limits_and_empty_id_lists_do_nothing(self, store: RunStateStore) -> None:
        outbox = as_outbox(store)
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        assert await outbox.claim_outbox_batch(owner="o", limit=0, lease_seconds=30) == []
        assert await outbox.mark_delivered([], owner="o") == 0
        await outbox.release_outbox([], owner="o")
        assert (await as_catalog(store).read_feed(limit=0)).events == ()
        assert await as_catalog(store).list_runs(limit=0) == []
        assert await store.list_events(run_id, limit=0) == []
        assert (run_id, 1) in await drain_outbox(store)

    async def test_a_closed_store_refuses_every_call(self) -> None:
        store = await self.make_store()
        await store.close()
        await store.close()  # closing twice is harmless
        for method in ("claim", "mark_delivered", "list_runs", "read_feed", "list_events"):
            with pytest.raises(StoreClosed) as caught:
                await _call(store, method, {})
            assert isinstance(caught.value, InvalidInput)
            assert caught.value.field == "store"
        with pytest.raises(StoreClosed):
            await store.bootstrap_run_tx(bootstrap_input(new_run_id()))
        with pytest.raises(StoreClosed):
            await store.get_run_metadata_by_run_id("r")

"""Bad input is refused with ``InvalidInput`` before anything is written, on every method."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from ..errors import InvalidInput
from ..store import RunStateStore
from ..types import RunBootstrapInput, RunEventInput, RunMetadata
from ._support import (
    ContractBase,
    bad,
    bootstrap_input,
    drain_outbox,
    new_run_id,
)


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

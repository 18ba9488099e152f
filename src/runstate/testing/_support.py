"""What every part of the contract suite shares: the store fixtures and small helpers.

``ContractBase`` declares ``make_store`` (and ``make_small_payload_store``) and the fixtures
built on them; the focused suites derive from it, and ``RunStateStoreContract`` joins them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ..store import OutboxStore, RunCatalog, RunStateStore
from ..types import RunBootstrapInput, RunEventInput, RunMetadata


def bad(value: Any) -> Any:
    """Pass a deliberately ill-typed value past the type checker."""
    return value


def new_run_id(prefix: str = "run") -> str:
    """Return a run id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex}"


def bootstrap_input(
    run_id: str, *event_types: str, workflow: str = "contract-wf", **metadata: Any
) -> RunBootstrapInput:
    """Build a bootstrap input with one event per type (default: ``RunQueued``)."""
    events = [RunEventInput(type=t) for t in (event_types or ("RunQueued",))]
    return RunBootstrapInput(
        metadata=RunMetadata(run_id=run_id, workflow=workflow, **metadata), first_events=events
    )


def as_catalog(store: RunStateStore) -> RunCatalog:
    """Return the store's catalog interface, failing the test if it has none."""
    assert isinstance(store, RunCatalog), f"{type(store).__name__} has no catalog interface"
    return store


def as_outbox(store: RunStateStore) -> OutboxStore:
    """Return the store's outbox interface, failing the test if it has none."""
    assert isinstance(store, OutboxStore), f"{type(store).__name__} has no outbox interface"
    return store


async def drain_outbox(store: RunStateStore, owner: str = "drain") -> list[tuple[str, int]]:
    """Claim and deliver every claimable record; return ``(run_id, seq)`` in claim order."""
    outbox = as_outbox(store)
    seen: list[tuple[str, int]] = []
    while True:
        batch = await outbox.claim_outbox_batch(owner=owner, limit=500, lease_seconds=30)
        if not batch:
            return seen
        seen.extend((r.event.run_id, r.event.seq) for r in batch)
        await outbox.mark_delivered([r.outbox_id for r in batch], owner=owner)


class ContractBase:
    """The store under test: subclass, implement ``make_store``, and pytest runs the rules."""

    #: Examples for the model-based property test; lower it for slow adapters.
    hypothesis_max_examples = 40

    async def make_store(self) -> RunStateStore:
        """Return a new open store on the adapter under test."""
        raise NotImplementedError

    async def make_small_payload_store(self, max_payload_bytes: int) -> RunStateStore:
        """Return a store with a small payload limit; adapters override if options differ."""
        raise NotImplementedError

    @pytest.fixture
    async def store(self) -> AsyncIterator[RunStateStore]:
        """The store under test, closed after the test."""
        store = await self.make_store()
        try:
            yield store
        finally:
            await store.close()

    @pytest.fixture
    async def second_store(self) -> AsyncIterator[RunStateStore]:
        """Another store object on the same data, for concurrency across connections."""
        store = await self.make_store()
        try:
            yield store
        finally:
            await store.close()

"""The shared contract suite on the in-memory adapter."""

from __future__ import annotations

import uuid

import pytest

from runstate import RunStateStore, open_store
from runstate.testing import RunStateStoreContract


class TestMemoryStoreContract(RunStateStoreContract):
    """memory:// must satisfy every rule of CONTRACT section 3."""

    hypothesis_max_examples = 200

    @pytest.fixture(autouse=True)
    def _store_name(self) -> None:
        # A named memory store per test: every store a test opens shares its data.
        self.name = f"contract-{uuid.uuid4().hex}"

    async def make_store(self) -> RunStateStore:
        return await open_store(f"memory://{self.name}")

    async def make_small_payload_store(self, max_payload_bytes: int) -> RunStateStore:
        return await open_store("memory://", max_payload_bytes=max_payload_bytes)

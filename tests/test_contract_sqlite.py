"""The shared contract suite on the SQLite adapter, over a temporary database file."""

from __future__ import annotations

from pathlib import Path

import pytest

from runstate import RunStateStore, open_store
from runstate.testing import RunStateStoreContract


class TestSQLiteStoreContract(RunStateStoreContract):
    """sqlite:// must satisfy every rule of CONTRACT section 3."""

    hypothesis_max_examples = 40

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        # One file per test; every store a test opens is a new connection pair on it.
        self.url = f"sqlite:///{tmp_path / 'contract.db'}"

    async def make_store(self) -> RunStateStore:
        return await open_store(self.url)

    async def make_small_payload_store(self, max_payload_bytes: int) -> RunStateStore:
        return await open_store(self.url, max_payload_bytes=max_payload_bytes)

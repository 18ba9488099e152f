"""The shared contract suite on runstate.sync's stores: memory, SQLite and PostgreSQL.

Each store is a synchronous store behind ``ThreadedStore``: every call of the suite runs on a
thread of its own, so its concurrent calls (50 bootstraps of one run id, 20 writers appending
to one run, readers racing writers) are threads sharing one synchronous store.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import drop_postgres_schema, unique_schema
from runstate import RunStateStore
from runstate.sync import open_store
from runstate.testing import RunStateStoreContract, ThreadedStore
from runstate.testing.threaded import in_thread


async def _threaded(url: str, **options: object) -> RunStateStore:
    return ThreadedStore(await in_thread(open_store, url, **options))


class TestSyncMemoryStoreContract(RunStateStoreContract):
    """runstate.sync's memory:// keeps every rule of the store contract."""

    hypothesis_max_examples = 60

    @pytest.fixture(autouse=True)
    def _store_name(self) -> None:
        self.name = f"sync-contract-{uuid.uuid4().hex}"

    async def make_store(self) -> RunStateStore:
        return await _threaded(f"memory://{self.name}")

    async def make_small_payload_store(self, max_payload_bytes: int) -> RunStateStore:
        return await _threaded("memory://", max_payload_bytes=max_payload_bytes)


class TestSyncSQLiteStoreContract(RunStateStoreContract):
    """runstate.sync's sqlite:// keeps every rule of the store contract."""

    hypothesis_max_examples = 30

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path / 'sync-contract.db'}"

    async def make_store(self) -> RunStateStore:
        return await _threaded(self.url)

    async def make_small_payload_store(self, max_payload_bytes: int) -> RunStateStore:
        return await _threaded(self.url, max_payload_bytes=max_payload_bytes)


@pytest.mark.postgres
class TestSyncPostgresStoreContract(RunStateStoreContract):
    """runstate.sync's postgresql:// keeps every rule of the store contract."""

    hypothesis_max_examples = 10

    @pytest.fixture(autouse=True)
    async def _schema(self, postgres_url: str) -> AsyncIterator[None]:
        self.url = postgres_url
        self.schema = unique_schema()
        try:
            yield
        finally:
            await drop_postgres_schema(self.schema)

    async def make_store(self) -> RunStateStore:
        return await _threaded(self.url, schema=self.schema, pool_size=5)

    async def make_small_payload_store(self, max_payload_bytes: int) -> RunStateStore:
        return await _threaded(
            self.url, schema=self.schema, pool_size=2, max_payload_bytes=max_payload_bytes
        )

"""The shared contract suite on the PostgreSQL adapter, each test in its own fresh schema."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conftest import drop_postgres_schema, unique_schema
from runstate import RunStateStore, open_store
from runstate.testing import RunStateStoreContract

pytestmark = pytest.mark.postgres


class TestPostgresStoreContract(RunStateStoreContract):
    """postgresql:// must satisfy every rule of CONTRACT section 3."""

    hypothesis_max_examples = 15

    @pytest.fixture(autouse=True)
    async def _schema(self, postgres_url: str) -> AsyncIterator[None]:
        self.url = postgres_url
        self.schema = unique_schema()
        try:
            yield
        finally:
            await drop_postgres_schema(self.schema)

    async def make_store(self) -> RunStateStore:
        return await open_store(self.url, schema=self.schema, pool_size=5)

    async def make_small_payload_store(self, max_payload_bytes: int) -> RunStateStore:
        return await open_store(
            self.url, schema=self.schema, pool_size=2, max_payload_bytes=max_payload_bytes
        )

"""The shared contract suite on PostgreSQL through a real pgbouncer in transaction mode.

Each transaction may run on any server connection, so nothing may rely on session state:
no search_path at connect time, no named prepared statements, no LISTEN (relays poll).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conftest import drop_postgres_schema, unique_schema
from runstate import RunStateStore, open_store
from runstate.testing import RunStateStoreContract

pytestmark = pytest.mark.postgres


class TestPgbouncerStoreContract(RunStateStoreContract):
    """postgresql://...?pgbouncer=true through pgbouncer must satisfy every rule too."""

    hypothesis_max_examples = 15

    @pytest.fixture(autouse=True)
    async def _schema(self, pgbouncer_url: str) -> AsyncIterator[None]:
        self.url = f"{pgbouncer_url}?pgbouncer=true"
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

"""The shared contract suite through HTTP: the runstate+http adapter over a live server.

Each test gets its own server on a fresh store (SQLite file, or PostgreSQL schema), so that
leases and deliveries of one test never leak into the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from _http_server import serving, store_url_of
from conftest import POSTGRES_URL, drop_postgres_schema, require_service, unique_schema
from runstate import RunStateStore, open_store
from runstate.testing import RunStateStoreContract


class _HttpContract(RunStateStoreContract):
    backing_url: str
    _servers: ExitStack

    async def make_store(self) -> RunStateStore:
        return await open_store(self.url)

    async def make_small_payload_store(self, max_payload_bytes: int) -> RunStateStore:
        server = self._servers.enter_context(
            serving(self.backing_url, max_payload_bytes=max_payload_bytes)
        )
        return await open_store(store_url_of(server))

    def _serve(self, backing_url: str) -> Iterator[None]:
        self.backing_url = backing_url
        with ExitStack() as servers:
            self._servers = servers
            self.url = store_url_of(servers.enter_context(serving(backing_url)))
            yield


class TestHttpOverSQLiteContract(_HttpContract):
    """runstate+http:// over a server on SQLite satisfies every rule of CONTRACT section 3."""

    hypothesis_max_examples = 15

    @pytest.fixture(autouse=True)
    def _server(self, tmp_path: Path) -> Iterator[None]:
        yield from self._serve(f"sqlite:///{tmp_path / 'contract.db'}")


@pytest.mark.postgres
class TestHttpOverPostgresContract(_HttpContract):
    """runstate+http:// over a server on PostgreSQL satisfies every rule of CONTRACT section 3."""

    hypothesis_max_examples = 10

    @pytest.fixture(autouse=True)
    def _server(self) -> Iterator[None]:
        require_service("PostgreSQL", "127.0.0.1", 5432)
        schema = unique_schema()
        try:
            yield from self._serve(f"{POSTGRES_URL}?schema={schema}&pool_size=5")
        finally:
            import asyncio

            asyncio.run(drop_postgres_schema(schema))

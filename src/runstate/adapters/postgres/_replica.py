"""Reads that tolerate lag, on a second pool: the ``read_url`` server, a streaming standby.

Only reads whose callers accept a view a little behind the primary go here (see
``REPLICA_READS``). When the standby cannot be reached, they go to the primary instead, and
keep going there for ``ReplicaReads.retry_after`` seconds before the standby is tried again:
a standby that is down costs its readers one failed connection attempt, not one per read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import asyncpg

from ...errors import StoreUnavailable
from ._config import PostgresConfig
from ._errors import DRIVER_ERRORS, is_connection_loss, translate_error, translated

T = TypeVar("T")


class Primary(Protocol):
    """How a read runs on the primary: the store's own pool."""

    def __call__(self, action: str, work: Callable[[Any], Awaitable[T]], /) -> Awaitable[T]:
        """Run ``work`` on a primary connection."""


logger = logging.getLogger("runstate.postgres")


class ReplicaReads:
    """Runs read statements on the ``read_url`` pool, or on the primary while it is down."""

    #: Seconds reads stay on the primary after the standby failed them.
    retry_after = 5.0

    def __init__(self, config: PostgresConfig, pool: Any, primary: Primary) -> None:
        self._config = config
        self._pool = pool
        self._primary = primary
        self._down_until = 0.0

    @classmethod
    async def open(
        cls, config: PostgresConfig, primary: Primary, reset: Callable[[Any], Awaitable[None]]
    ) -> ReplicaReads:
        """Create the standby's pool; it connects on first use, so a standby that is down
        never keeps the store from opening."""
        with translated(config.raw_url, "connecting to read_url", connecting=True):
            pool = await asyncpg.create_pool(
                config.dsn, min_size=0, max_size=config.pool_size, reset=reset,
                **config.connect_kwargs(),
            )  # fmt: skip
        return cls(config, pool, primary)

    async def run(self, action: str, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work`` on the standby; on the primary if the standby cannot serve it."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._down_until:
            return await self._primary(action, work)
        try:
            return await self._on_standby(action, work)
        except StoreUnavailable as exc:
            if not exc.retryable:
                raise
            self._down_until = loop.time() + self.retry_after
            logger.warning(
                "read_url %s: %s failed (%s); reading from the primary for %.0fs",
                self._config.masked_url, action, exc, self.retry_after,
            )  # fmt: skip
            return await self._primary(action, work)

    async def _on_standby(self, action: str, work: Callable[[Any], Awaitable[T]]) -> T:
        # One retry after a lost connection, as on the primary: the pool replaces it.
        for attempt in range(2):
            try:
                async with asyncio.timeout(self._config.command_timeout):
                    connection = await self._pool.acquire()
                try:
                    return await work(connection)
                except asyncpg.exceptions.InternalClientError:
                    connection.terminate()  # unknown protocol state: never hand it on
                    raise
                finally:
                    # A broken connection is dropped by the pool; the outcome is the caller's.
                    with contextlib.suppress(Exception):
                        await self._pool.release(connection)
            except DRIVER_ERRORS as exc:
                if attempt == 0 and is_connection_loss(exc):
                    continue
                raise translate_error(
                    exc, self._config.raw_url, action, self._config.schema
                ) from exc
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close the standby's pool."""
        try:
            await asyncio.wait_for(self._pool.close(), 10.0)
        except (*DRIVER_ERRORS,):
            self._pool.terminate()

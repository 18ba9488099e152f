"""Translating driver failures into ``StoreUnavailable`` at the adapter's edge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from ..._url import mask_secret
from ...errors import RunStateError, StoreUnavailable

# Failures a retry cannot fix: credentials, missing database, missing privileges, bad config.
_PERMANENT_SQLSTATES = frozenset({"28000", "28P01", "3D000", "42501", "3F000"})
# Everything transient: connection exceptions, resources, operator intervention, rollbacks.
_RETRYABLE_SQLSTATE_CLASSES = ("08", "53", "57", "40", "55", "58")

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)


def is_connection_loss(exc: BaseException) -> bool:
    """True when the connection died, so nothing on it can have committed after the failure."""
    return isinstance(
        exc,
        asyncpg.ConnectionDoesNotExistError
        | asyncpg.exceptions.AdminShutdownError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.InternalClientError
        | ConnectionError,
    ) or (isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc))


def to_store_unavailable(exc: BaseException, raw_url: str, action: str) -> StoreUnavailable:
    """Build the typed error for a driver failure, with every trace of the password masked."""
    retryable = True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        permanent = sqlstate in _PERMANENT_SQLSTATES
        retryable = not permanent and sqlstate.startswith(_RETRYABLE_SQLSTATE_CLASSES)
    elif isinstance(exc, asyncpg.exceptions.ClientConfigurationError):
        retryable = False
    if isinstance(exc, TimeoutError):
        detail = "timed out"
    else:
        detail = mask_secret(f"{type(exc).__name__}: {exc}", raw_url)
    where = mask_secret(raw_url, raw_url)
    return StoreUnavailable(
        f"PostgreSQL at {where}: {action} failed: {detail}", retryable=retryable
    )


@contextmanager
def translated(raw_url: str, action: str) -> Iterator[None]:
    """Turn driver exceptions raised inside the block into ``StoreUnavailable``."""
    try:
        yield
    except RunStateError:
        raise
    except DRIVER_ERRORS as exc:
        raise to_store_unavailable(exc, raw_url, action) from exc

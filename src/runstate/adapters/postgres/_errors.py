"""Translating driver failures into runstate's errors at the adapter's edge.

Configuration the driver refuses is ``InvalidInput`` (retrying cannot fix it); everything
else is ``StoreUnavailable``, retryable or not. A statement that finds no runstate function
or table says that the schema is why. Every message has the URL's secrets masked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from ..._url import mask_url
from ...errors import InvalidInput, RunStateError, StoreUnavailable

# Failures a retry cannot fix: credentials, missing database, missing privileges, bad config.
_PERMANENT_SQLSTATES = frozenset({"28000", "28P01", "3D000", "42501", "3F000"})
# Everything transient: connection exceptions, resources, operator intervention, rollbacks,
# and a server that turned read-only (25006: fenced during a failover, or a standby): the
# connection is dropped (see ``must_reconnect``) and the next one finds the new primary.
_RETRYABLE_SQLSTATE_CLASSES = ("08", "53", "57", "40", "55", "58", "25006")
# No such function, table or schema: the store's schema is missing or was never migrated.
_MISSING_OBJECT_SQLSTATES = frozenset({"42883", "42P01", "3F000"})

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)
# What the driver raises for connection settings it cannot parse (a port of "abc" or 99999,
# an unbalanced IPv6 bracket): caught only around opening connections.
CONFIGURATION_ERRORS: tuple[type[BaseException], ...] = (ValueError, OverflowError)


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


def must_reconnect(exc: BaseException) -> bool:
    """True when the connection must not be used again: its protocol state is unknown, or its
    server refuses writes (a primary fenced or demoted under it)."""
    return isinstance(
        exc,
        asyncpg.exceptions.InternalClientError | asyncpg.exceptions.ReadOnlySQLTransactionError,
    )


def translate_error(
    exc: BaseException, raw_url: str, action: str, schema: str | None = None
) -> RunStateError:
    """Build the typed error for a driver failure, with every trace of a secret masked."""
    where = mask_url(raw_url, raw_url)
    detail = mask_url(f"{type(exc).__name__}: {exc}", raw_url)
    if isinstance(exc, (asyncpg.exceptions.ClientConfigurationError, *CONFIGURATION_ERRORS)):
        return InvalidInput(f"PostgreSQL URL {where!r} cannot be used: {detail}", field="url")
    retryable = True
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        permanent = sqlstate in _PERMANENT_SQLSTATES
        retryable = not permanent and sqlstate.startswith(_RETRYABLE_SQLSTATE_CLASSES)
        if schema is not None and sqlstate in _MISSING_OBJECT_SQLSTATES:
            return StoreUnavailable(
                f"PostgreSQL at {where}: {action} failed: schema {schema!r} has no runstate "
                f"tables or functions ({detail}); it was dropped or never migrated: run "
                "`runstate migrate` with this URL and schema, or check the schema option",
                retryable=False,
            )
    if isinstance(exc, TimeoutError):
        detail = "timed out"
    return StoreUnavailable(
        f"PostgreSQL at {where}: {action} failed: {detail}", retryable=retryable
    )


@contextmanager
def translated(
    raw_url: str, action: str, *, schema: str | None = None, connecting: bool = False
) -> Iterator[None]:
    """Turn driver exceptions raised inside the block into runstate's errors.

    With ``connecting``, the driver's ``ValueError``/``OverflowError`` (settings it could not
    parse) are configuration errors too.
    """
    caught = DRIVER_ERRORS + CONFIGURATION_ERRORS if connecting else DRIVER_ERRORS
    try:
        yield
    except RunStateError:
        raise
    except caught as exc:
        raise translate_error(exc, raw_url, action, schema) from exc

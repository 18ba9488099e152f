"""Options of the PostgreSQL adapter, from ``open_store`` keywords and the URL's query."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from ..._url import StoreUrl
from ..._validation import DEFAULT_MAX_PAYLOAD_BYTES, check_max_payload_bytes
from ...errors import InvalidInput

DEFAULT_SCHEMA = "runstate"
DEFAULT_POOL_SIZE = 10
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_COMMAND_TIMEOUT = 60.0
DEFAULT_STATEMENT_CACHE_SIZE = 100
#: Concurrent statements of each write kind, by default: one per 16 connections of the pool,
#: at least 1, at most this many. Each statement carries every write that queued for it, set-
#: based (group commit), so a few full statements beat many small ones: measured on 2 cores,
#: 1 statement was best for 8 writers and 2 for 32.
MAX_DEFAULT_WRITE_STATEMENTS = 4
CONNECTIONS_PER_WRITE_STATEMENT = 16

SUPPORTED_OPTIONS = frozenset(
    {
        "max_payload_bytes",
        "pool_size",
        "schema",
        "statement_cache_size",
        "command_timeout",
        "connect_timeout",
        "pgbouncer",
        "write_statements",
    }
)
# Connection parameters asyncpg itself understands in a DSN; they pass through untouched.
_DRIVER_QUERY_PARAMS = frozenset(
    {
        "application_name",
        "database",
        "dbname",
        "gsslib",
        "host",
        "krbsrvname",
        "passfile",
        "password",
        "port",
        "service",
        "ssl_max_protocol_version",
        "ssl_min_protocol_version",
        "sslcert",
        "sslcrl",
        "sslkey",
        "sslmode",
        "sslnegotiation",
        "sslpassword",
        "sslrootcert",
        "target_session_attrs",
        "user",
    }
)
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, kw_only=True, slots=True)
class PostgresConfig:
    """Everything needed to open a pool: the driver DSN and runstate's own options."""

    dsn: str
    masked_url: str
    raw_url: str
    schema: str
    pool_size: int
    max_payload_bytes: int
    statement_cache_size: int
    command_timeout: float | None
    connect_timeout: float
    write_statements: int


def default_write_statements(pool_size: int) -> int:
    """Concurrent write statements per kind for a pool: one per 16 connections, 1 to 4."""
    return min(MAX_DEFAULT_WRITE_STATEMENTS, max(1, pool_size // CONNECTIONS_PER_WRITE_STATEMENT))


def check_schema_name(value: object) -> str:
    """Refuse schema names that are not plain lower-case identifiers (no quoting surprises)."""
    if not isinstance(value, str) or not _SCHEMA_NAME.match(value):
        raise InvalidInput(
            f"must match [a-z_][a-z0-9_]{{0,62}}, got {value!r}", field="options.schema"
        )
    return value


def quote_ident(name: str) -> str:
    """Quote a schema name that already passed ``check_schema_name``."""
    return '"' + check_schema_name(name) + '"'


def parse_config(url: StoreUrl, options: dict[str, Any]) -> PostgresConfig:
    """Merge URL query options and keyword options (keywords win) and validate them."""
    merged: dict[str, Any] = {}
    driver_query: dict[str, str] = {}
    for key, value in url.query.items():
        if key in SUPPORTED_OPTIONS:
            merged[key] = value
        elif key in _DRIVER_QUERY_PARAMS:
            driver_query[key] = value
        else:
            _refuse(url, [key])
    unknown = sorted(set(options) - SUPPORTED_OPTIONS)
    if unknown:
        _refuse(url, unknown)
    merged.update(options)

    cache_size = _int(
        merged.get("statement_cache_size", DEFAULT_STATEMENT_CACHE_SIZE),
        "statement_cache_size",
        minimum=0,
    )
    if _bool(merged.get("pgbouncer", False), "pgbouncer"):
        # Transaction-mode poolers hand each transaction to any server connection, so a
        # named prepared statement may not exist on the next one.
        cache_size = 0
    pool_size = _int(merged.get("pool_size", DEFAULT_POOL_SIZE), "pool_size", minimum=1)
    max_payload = merged.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES)
    if isinstance(max_payload, str):
        max_payload = _int(max_payload, "max_payload_bytes", minimum=1)
    command_timeout = merged.get("command_timeout", DEFAULT_COMMAND_TIMEOUT)
    write_statements = _int(
        merged.get("write_statements", default_write_statements(pool_size)),
        "write_statements",
        minimum=1,
    )
    parts = urlsplit(url.raw)
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(driver_query), ""))
    return PostgresConfig(
        dsn=dsn,
        masked_url=url.masked,
        raw_url=url.raw,
        schema=check_schema_name(merged.get("schema", DEFAULT_SCHEMA)),
        pool_size=pool_size,
        max_payload_bytes=check_max_payload_bytes(max_payload),
        statement_cache_size=cache_size,
        command_timeout=None
        if command_timeout in (None, "", "none")
        else _float(command_timeout, "command_timeout"),
        connect_timeout=_float(
            merged.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT), "connect_timeout"
        ),
        write_statements=write_statements,
    )


def _refuse(url: StoreUrl, unknown: list[str]) -> None:
    raise InvalidInput(
        f"unknown option(s) {', '.join(unknown)} for {url.scheme}:// "
        f"(supported: {', '.join(sorted(SUPPORTED_OPTIONS))}; "
        f"driver URL parameters: {', '.join(sorted(_DRIVER_QUERY_PARAMS))})",
        field="options",
    )


def _int(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise InvalidInput(f"must be an int, got {value!r}", field=name) from None
    if type(value) is not int or value < minimum:
        raise InvalidInput(f"must be an int >= {minimum}, got {value!r}", field=name)
    return value


def _float(value: object, name: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InvalidInput(f"must be a number, got {value!r}", field=name) from None
    if type(value) not in (int, float) or not 0 < value < float("inf"):  # type: ignore[operator]
        raise InvalidInput(f"must be a positive number of seconds, got {value!r}", field=name)
    return float(value)  # type: ignore[arg-type]


def _bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise InvalidInput(f"must be true or false, got {value!r}", field=name)

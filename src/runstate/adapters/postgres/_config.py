"""Options of the PostgreSQL adapter, from ``open_store`` keywords and the URL's query."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

from ..._url import StoreUrl, mask_url, parse_store_url
from ..._validation import DEFAULT_MAX_PAYLOAD_BYTES, MAX_LEASE_SECONDS, check_max_payload_bytes
from ...errors import InvalidInput

DEFAULT_SCHEMA = "runstate"
DEFAULT_POOL_SIZE = 10
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_COMMAND_TIMEOUT = 60.0
DEFAULT_STATEMENT_CACHE_SIZE = 100
#: Concurrent statements of each write kind, by default: one per 2 connections of the pool,
#: at least 1, at most this many. Each statement carries every write that queued for it, set-
#: based (group commit), so a few full statements beat many small ones. Measured on 2 cores
#: (benchmarks/bench_postgres.py cells, medians of 3): 2 statements beat 1 at 4, 8 and 32
#: writers (bootstraps +24-28%, appends +13-30%) and beat 4 at 8 and 32; with two, the server
#: runs one while the client prepares the next.
MAX_DEFAULT_WRITE_STATEMENTS = 2
CONNECTIONS_PER_WRITE_STATEMENT = 2

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
        "read_url",
        "replica_reads",
    }
)
#: What ``replica_reads`` may say: ``catalog`` sends list_runs, read_feed, feed_head and
#: outbox_stats to ``read_url``; ``all`` sends list_events and get_run_metadata_by_run_id too
#: (for processes that never write: they may read a run older than their own last write).
REPLICA_READS = ("catalog", "all")
# target_session_attrs that may pick a server refusing writes: the store URL is where writes
# go, so these belong on read_url.
_READ_ONLY_TARGETS = frozenset({"standby", "prefer-standby", "read-only"})
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
# Driver parameters with a fixed set of values: checked here, so that a typo is a clear
# InvalidInput before any connection, never a retryable failure to connect.
_DRIVER_CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "target_session_attrs": (
        "any",
        "primary",
        "standby",
        "prefer-standby",
        "read-write",
        "read-only",
    ),
    "ssl_min_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "ssl_max_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "sslnegotiation": ("postgres", "direct"),
    "gsslib": ("gssapi", "sspi"),
}
# Driver parameters naming files that must exist when given.
_DRIVER_FILES = ("sslcert", "sslkey", "sslrootcert", "sslcrl")
_MAX_POOL_SIZE = 10_000
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, kw_only=True, slots=True)
class PostgresConfig:
    """Everything needed to open a pool: the driver DSN and runstate's own options.

    ``pgbouncer``: connections go through a transaction-mode pooler, so no prepared
    statement outlives its statement and no session feature (LISTEN) is used.
    """

    dsn: str = field(repr=False)
    masked_url: str
    raw_url: str = field(repr=False)
    schema: str
    pool_size: int
    max_payload_bytes: int
    statement_cache_size: int
    command_timeout: float | None
    connect_timeout: float
    write_statements: int
    pgbouncer: bool = False
    #: Where lag-tolerant reads go (``read_url``): same options, its own DSN; or ``None``.
    read: PostgresConfig | None = None
    replica_reads: str = "catalog"

    @property
    def trace_namespace(self) -> str:
        """``db.namespace`` of spans, as the conventions spell it: ``database|schema``."""
        database = unquote(urlsplit(self.masked_url).path.lstrip("/"))
        return f"{database}|{self.schema}" if database else self.schema

    def connect_kwargs(self) -> dict[str, Any]:
        """The asyncpg keyword arguments of every connection: no server settings, so no
        startup parameter a pooler could refuse and no session state."""
        return {
            "statement_cache_size": self.statement_cache_size,
            "command_timeout": self.command_timeout,
            "timeout": self.connect_timeout,
        }


def default_write_statements(pool_size: int) -> int:
    """Concurrent write statements per kind for a pool: one per 2 connections, 1 to 2."""
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
    parts = urlsplit(url.raw)
    _check_location(url, parts.netloc, parts.path)
    _check_driver_query(driver_query)
    _target_writer(parts.netloc, driver_query)

    cache_size = _int(
        merged.get("statement_cache_size", DEFAULT_STATEMENT_CACHE_SIZE),
        "statement_cache_size",
        minimum=0,
    )
    pgbouncer = _bool(merged.get("pgbouncer", False), "pgbouncer")
    if pgbouncer:
        # Transaction-mode poolers hand each transaction to any server connection, so a
        # named prepared statement may not exist on the next one.
        cache_size = 0
    pool_size = _int(merged.get("pool_size", DEFAULT_POOL_SIZE), "pool_size", minimum=1)
    if pool_size > _MAX_POOL_SIZE:
        raise InvalidInput(
            f"must be at most {_MAX_POOL_SIZE:,}, got {pool_size}", field="pool_size"
        )
    max_payload = merged.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES)
    if isinstance(max_payload, str):
        max_payload = _int(max_payload, "max_payload_bytes", minimum=1)
    command_timeout = merged.get("command_timeout", DEFAULT_COMMAND_TIMEOUT)
    write_statements = _int(
        merged.get("write_statements", default_write_statements(pool_size)),
        "write_statements",
        minimum=1,
    )
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(driver_query), ""))
    config = PostgresConfig(
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
        pgbouncer=pgbouncer,
        replica_reads=_choice(merged.get("replica_reads", "catalog"), "replica_reads"),
    )
    read_url = merged.get("read_url")
    if read_url in (None, ""):
        return config
    return dataclasses.replace(config, read=_read_config(read_url, config))


def _host_count(netloc: str, query: dict[str, str]) -> int:
    hosts = netloc.rpartition("@")[2]
    return max(len(hosts.split(",")), len(query.get("host", "").split(",")))


def _target_writer(netloc: str, query: dict[str, str]) -> None:
    """Make a URL of several hosts pick the one that takes writes; refuse one that would not.

    libpq and asyncpg connect to the first host that answers (``any``) unless told otherwise:
    after a failover that can be the old primary come back as a standby, where every write
    fails. With several hosts the store therefore asks for ``read-write`` by default.
    """
    target = query.get("target_session_attrs")
    if target in _READ_ONLY_TARGETS:
        raise InvalidInput(
            f"{target!r} may pick a server that refuses writes; the store URL is where writes "
            "go: use read-write (or primary), and send reads to a standby with read_url",
            field="target_session_attrs",
        )
    if target is None and _host_count(netloc, query) > 1:
        query["target_session_attrs"] = "read-write"


def _read_config(value: object, config: PostgresConfig) -> PostgresConfig:
    """The connection of ``read_url``: its own hosts and driver parameters, the store's options.

    Several hosts without ``target_session_attrs`` mean ``prefer-standby``: a standby when
    one answers, else whichever server does.
    """
    if not isinstance(value, str) or "://" not in value:
        shown = repr(mask_url(value, value)) if isinstance(value, str) else type(value).__name__
        raise InvalidInput(f"must be a postgresql:// URL, got {shown}", field="read_url")
    read = parse_store_url(value)
    if read.scheme not in ("postgresql", "postgres"):
        raise InvalidInput(f"must be a postgresql:// URL, got {read.masked!r}", field="read_url")
    own = sorted(set(read.query) - _DRIVER_QUERY_PARAMS)
    if own:
        names = ", ".join(mask_url(name)[:60] for name in own)
        raise InvalidInput(
            f"read_url takes driver URL parameters only, not {names}: the store's own options "
            "(schema, pool_size, timeouts...) come from the store URL and apply to both",
            field="read_url",
        )
    parts = urlsplit(read.raw)
    _check_location(read, parts.netloc, parts.path)
    query = dict(read.query)
    _check_driver_query(query)
    if "target_session_attrs" not in query and _host_count(parts.netloc, query) > 1:
        query["target_session_attrs"] = "prefer-standby"
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), ""))
    return dataclasses.replace(config, dsn=dsn, masked_url=read.masked, raw_url=read.raw)


def _choice(value: object, name: str) -> str:
    if value not in REPLICA_READS:
        raise InvalidInput(f"must be one of {', '.join(REPLICA_READS)}, got {value!r}", field=name)
    return str(value)


def _check_location(url: StoreUrl, netloc: str, path: str) -> None:
    """Refuse hosts, ports, user names and database names no connection can use."""
    userinfo, _, hosts = netloc.rpartition("@")
    for name, text in (("user", unquote(userinfo)), ("database", unquote(path))):
        if "\x00" in text:
            raise InvalidInput(
                f"the {name} of {url.masked!r} must not contain NUL (%00)", field="url"
            )
    for host in hosts.split(","):
        if host.startswith("["):
            address, bracket, rest = host[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise InvalidInput(f"malformed host {host!r} in {url.masked!r}", field="url")
            port = rest[1:]
        else:
            address, _, port = host.partition(":")
        if "\x00" in unquote(address):
            raise InvalidInput(f"a host of {url.masked!r} contains NUL (%00)", field="url")
        if port:
            _check_port(port, f"the port of host {address!r} in {url.masked!r}")


def _check_port(text: str, what: str) -> None:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise InvalidInput(f"{what} must be a number from 1 to 65535, got {text!r}", field="url")


def _check_driver_query(query: dict[str, str]) -> None:
    """Refuse driver URL parameters the driver would reject, before any connection."""
    for key, value in query.items():
        if "\x00" in value:
            raise InvalidInput("must not contain NUL (%00)", field=key)
        choices = _DRIVER_CHOICES.get(key)
        if choices is not None and value not in choices:
            raise InvalidInput(f"must be one of {', '.join(choices)}, got {value!r}", field=key)
        if key in _DRIVER_FILES and value != "system" and not os.path.exists(value):
            raise InvalidInput(f"no such file: {value!r}", field=key)
    for port in query.get("port", "").split(",") if query.get("port") else ():
        _check_port(port, "the port parameter")


def _refuse(url: StoreUrl, unknown: list[str]) -> None:
    names = [mask_url(name)[:60] for name in unknown]
    raise InvalidInput(
        f"unknown option(s) {', '.join(names)} for {url.scheme}:// "
        f"(supported: {', '.join(sorted(SUPPORTED_OPTIONS))}; "
        f"driver URL parameters: {', '.join(sorted(_DRIVER_QUERY_PARAMS))})",
        field="options",
    )


def _int(value: object, name: str, *, minimum: int) -> int:
    if isinstance(value, str):
        if not (value.isascii() and value.strip().lstrip("+-").isdigit() and len(value) <= 19):
            raise InvalidInput(f"must be an int, got {value[:40]!r}", field=name) from None
        value = int(value)
    if type(value) is not int or not minimum <= value <= 2**31 - 1:
        shown = repr(value) if type(value) is not int or value.bit_length() < 100 else "a huge int"
        raise InvalidInput(f"must be an int from {minimum} to 2**31 - 1, got {shown}", field=name)
    return value


def _float(value: object, name: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InvalidInput(f"must be a number, got {value!r}", field=name) from None
    if type(value) not in (int, float) or not 0 < value < MAX_LEASE_SECONDS:  # type: ignore[operator]
        raise InvalidInput(
            f"must be a positive number of seconds below {MAX_LEASE_SECONDS:,}, got {value!r}",
            field=name,
        )
    return float(value)  # type: ignore[arg-type]


def _bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise InvalidInput(f"must be true or false, got {value!r}", field=name)

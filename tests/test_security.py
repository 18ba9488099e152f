"""Security: parameterized SQL only, passwords masked everywhere, signed webhooks, private files.

``test_sinks.py`` checks the signature helpers on one batch and ``test_sqlite_adapter.py``
the file mode under the default umask; this file adds a static scan of the SQL layer, the CLI's
output, errors and logs with a password in the URL, a receiver that refuses forged
requests end to end, and file modes under a permissive umask.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import os
import re
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from conftest import (
    POSTGRES_URL,
    drop_postgres_schema,
    require_service,
    standard_webhook_signed,
    unique_schema,
)
from runstate import (
    MemoryStore,
    RunBootstrapInput,
    RunEventInput,
    RunMetadata,
    StoreUnavailable,
    open_store,
)
from runstate.relay import Relay, run_relay
from runstate.relay.metrics import RelayMetrics
from runstate.sinks import open_sink

SRC = Path(__file__).resolve().parents[1] / "src" / "runstate"
SQL_LAYER = [SRC / "adapters"]
SECRET = "Sup3rS3cretPw"

# -- every SQL statement parameterized --------------------------------------------------------

_SQL_WORDS = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|VALUES|WHERE|FROM|SET|EXECUTE)\b"
)
# Interpolations allowed inside SQL text, each with the reason it is safe.
_SAFE_INTERPOLATIONS = {
    # Schema names pass check_schema_name ([a-z_][a-z0-9_]{0,62}) and are double-quoted.
    "quote_ident(schema)",
    "quote_ident(name)",
    # PRAGMA values cannot be bound; parse_options checks it against SYNCHRONOUS_MODES.
    "options.synchronous",
    # The PostgreSQL group-commit statement (adapters/postgres/_batch.py): an int from range(),
    # $n placeholders, and the write function's name and output columns, module constants.
    "branch_index",
    "placeholders",
    "output_columns",
    "null_columns",
    "column",
    "function",
    "first + n",
    # The run-query builders (adapters/postgres/_query.py, adapters/sqlite/_query.py): fixed
    # fragments chosen by the validated filter (column lists, the quoted schema, a join, the
    # AND of conditions that each hold only placeholders, ASC/DESC); every value is bound.
    "_COLUMNS",
    "quoted",
    "join",
    "where",
    "order",
    "on",
    "direction",
    "len(params)",
    "' AND '.join(conditions)",
}


def _sql_text(node: ast.AST) -> str:
    parts = []
    for child in ast.walk(node):
        if isinstance(child, ast.Constant) and isinstance(child.value, str):
            parts.append(child.value)
    return " ".join(parts)


def find_sql_string_building(source: str, filename: str) -> list[str]:
    """Return every place that builds SQL text from values: f-strings, %, .format, +."""
    problems: list[str] = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        values: list[ast.AST] = []
        if isinstance(node, ast.JoinedStr):
            values = [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
            if isinstance(node.left, ast.Constant | ast.JoinedStr) or isinstance(
                node.right, ast.Constant | ast.JoinedStr
            ):
                values = [
                    side
                    for side in (node.left, node.right)
                    if not (isinstance(side, ast.Constant) and isinstance(side.value, str))
                ]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format"
            and isinstance(node.func.value, ast.Constant)
        ):
            values = [*node.args, *(k.value for k in node.keywords)]
        else:
            continue
        if not values or not _SQL_WORDS.search(_sql_text(node)):
            continue
        for value in values:
            text = ast.unparse(value)
            if isinstance(node, ast.BinOp) and isinstance(value, ast.JoinedStr):
                continue  # checked on its own as a JoinedStr
            if text not in _SAFE_INTERPOLATIONS:
                problems.append(f"{filename}:{node.lineno}: SQL built with {text!r}")
    return problems


def _python_files() -> Iterator[Path]:
    for root in SQL_LAYER:
        yield from sorted(root.rglob("*.py"))


def test_sql_layer_builds_no_sql_from_values() -> None:
    problems: list[str] = []
    files = list(_python_files())
    assert len(files) >= 10
    for path in files:
        problems += find_sql_string_building(path.read_text(encoding="utf-8"), str(path))
    assert problems == []


def test_the_sql_scan_catches_string_building() -> None:
    bad = """
def f(conn, run_id, schema, table):
    conn.execute(f"SELECT * FROM run_events WHERE run_id = '{run_id}'")
    conn.execute("DELETE FROM run_outbox WHERE run_id = '%s'" % run_id)
    conn.execute("UPDATE {} SET x = 1".format(table))
    conn.execute("SELECT * FROM " + table)
    conn.execute(f'CREATE SCHEMA "{schema}"')
    conn.execute("SELECT 1 WHERE run_id = $1", run_id)
    message = f"run {run_id} not found"
"""
    problems = find_sql_string_building(bad, "bad.py")
    assert len(problems) == 5, problems


def test_sql_files_use_no_dynamic_sql() -> None:
    # plpgsql EXECUTE with concatenated text would reopen injection inside the database.
    files = sorted((SRC / "adapters").rglob("*.sql"))
    assert files
    for path in files:
        text = re.sub(r"--[^\n]*", "", path.read_text(encoding="utf-8"))
        # A trigger's EXECUTE FUNCTION names a function; it runs no SQL text.
        dynamic = r"\bEXECUTE\b(?!\s+(?:FUNCTION|PROCEDURE)\b)[^;]*"
        for match in re.finditer(dynamic, text, flags=re.IGNORECASE):
            statement = match.group(0)
            assert "||" not in statement, f"{path}: {statement}"
            assert "USING" in statement.upper() or "%I" in statement, f"{path}: {statement}"


def test_every_execute_call_passes_sql_as_a_constant_or_named_query() -> None:
    # The SQL argument of execute/fetch* is a literal, a module constant (UPPER_CASE or a
    # name bound to one), a query loaded from the packaged .sql files (Q[...]), or an
    # f-string the scan above has vetted; never a name bound to runtime text.
    methods = {"execute", "executemany", "fetch", "fetchrow", "fetchval"}
    allowed_names = {"sql", "statement", "_INSERT_RUN", "_SELECT_RUN_HEAD", "_UPDATE_LAST_SEQ"}
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in methods
                and node.args
            ):
                continue
            first = node.args[0]
            ok = (
                isinstance(first, ast.Constant | ast.JoinedStr)
                or (
                    isinstance(first, ast.Name)
                    and (first.id.isupper() or first.id in allowed_names)
                )
                or (isinstance(first, ast.Attribute) and first.attr.isupper())
                # A named query: Q, or the store's copy with {schema} filled (schema_queries).
                or (
                    isinstance(first, ast.Subscript)
                    and ast.unparse(first.value) in {"Q", "self._q"}
                )
                # A named query whose {schema} placeholder holds the validated, quoted schema.
                or (isinstance(first, ast.Call) and ast.unparse(first.func) == "with_schema")
                # The text of a packaged migration file (src/runstate/adapters/<dialect>/sql/).
                or ast.unparse(first) == "migration.sql"
                or (
                    isinstance(first, ast.Name)
                    and first.id.startswith("_")
                    and first.id[1:].isupper()
                )
            )
            assert ok, f"{path}:{node.lineno}: {ast.unparse(first)}"


def test_runtime_values_are_bound_not_interpolated(tmp_path: Path) -> None:
    # Defence in depth: a run id that would break out of a quoted literal is stored verbatim.
    async def main() -> None:
        hostile = "x'); DROP TABLE runstate_events; --"
        async with open_store(f"sqlite:///{tmp_path / 'inj.db'}") as store:
            await store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(
                        run_id=hostile, workflow=hostile, labels={hostile: hostile}
                    ),
                    first_events=[RunEventInput(type=hostile, event_id=hostile)],
                )
            )
            (event,) = await store.list_events(hostile)
            assert (event.type, event.event_id) == (hostile, hostile)

    asyncio.run(main())


# -- passwords masked in logs, errors and CLI output ------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from runstate.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize(
    "args",
    [
        ["runs", "list", "--url", f"postgresql://u:{SECRET}@127.0.0.1:1/db"],
        ["runs", "show", "r1", "--url", f"postgresql://u:{SECRET}@127.0.0.1:1/db"],
        ["events", "r1", "--url", f"postgresql://u:{SECRET}@127.0.0.1:1/db"],
        ["migrate", "--url", f"postgresql://u:{SECRET}@127.0.0.1:1/db"],
        ["runs", "list", "--url", f"bogus://u:{SECRET}@host/db"],
        ["runs", "list", "--url", f"postgresql://u:{SECRET}@127.0.0.1:1/db?bad_option=1"],
        ["runs", "list", "--url", f"postgresql://u@127.0.0.1:1/db?password={SECRET}"],
        ["migrate", "--url", f"postgresql://u@127.0.0.1:1/db?sslpassword={SECRET}"],
        ["runs", "list", "--url", f"postgresql://u@127.0.0.1:1/db?password={SECRET}&x=1"],
        ["runs", "list", "--url", f"postgresql://u@127.0.0.1:99999/db?password={SECRET}"],
        ["runs", "list", "--url", f"postgresql://u@127.0.0.1:1/db?sslmode=bogus&password={SECRET}"],
        ["events", "r1", "--url", f"postgresql://u@127.0.0.1:1/db#password={SECRET}"],
        ["runs", "list", "--url", f"sqlite:///x.db?password={SECRET}"],
        ["runs", "list", "--url", f"memory://x?password={SECRET}"],
    ],
    ids=[
        "runs-list",
        "runs-show",
        "events",
        "migrate",
        "bad-scheme",
        "bad-option",
        "query-password",
        "query-sslpassword",
        "query-password-then-bad-option",
        "bad-port",
        "bad-sslmode",
        "fragment",
        "sqlite-query",
        "memory-query",
    ],
)
def test_cli_never_prints_the_password(args: list[str], debug: bool) -> None:
    result = _cli(*(["--debug"] if debug else []), *args)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert SECRET not in output
    assert "error" in output.lower()


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{SECRET}@127.0.0.1:1/db",
        f"postgresql://u@127.0.0.1:1/db?password={SECRET}",
        f"postgresql://u@127.0.0.1:1/db?sslpassword={SECRET}",
    ],
    ids=["userinfo", "query-password", "query-sslpassword"],
)
async def test_store_unavailable_and_reprs_never_show_the_password(url: str) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await open_store(url, connect_timeout=2)
    texts = [str(caught.value), repr(caught.value)]
    cause: BaseException | None = caught.value.__cause__
    while cause is not None:
        texts.append(str(cause))
        cause = cause.__cause__
    from runstate._url import parse_store_url
    from runstate.adapters.postgres import parse_config

    parsed = parse_store_url(url)
    texts += [repr(parsed), str(parsed), repr(parse_config(parsed, {}))]
    for text in texts:
        assert SECRET not in text, text
    assert "***" in str(caught.value)


async def test_an_open_postgres_store_repr_never_shows_the_password() -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    schema = unique_schema()
    url = POSTGRES_URL + f"?password={SECRET}&schema={schema}"
    try:
        async with open_store(url, pool_size=1) as store:
            assert SECRET not in repr(store)
            assert "password=***" in repr(store)
    finally:
        await drop_postgres_schema(schema)


def test_cli_debug_logs_mask_the_sink_and_store_secrets(tmp_path: Path) -> None:
    db = tmp_path / "logs.db"

    async def seed() -> None:
        async with open_store(f"sqlite:///{db}") as store:
            await store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id="logged", workflow="wf"),
                    first_events=[RunEventInput(type="A")],
                )
            )

    asyncio.run(seed())
    result = _cli(
        "--debug",
        "relay",
        "--once",
        "--url",
        f"sqlite:///{db}?busy_timeout=1",
        "--sink",
        f"https://relay:{SECRET}@127.0.0.1:1/hook?token={SECRET}",
    )
    # The delivery failed and was logged, with the URL in it, at debug level.
    assert "runstate.relay" in result.stderr
    assert "logged:1" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_cli_url_from_the_environment_is_masked_too() -> None:
    result = _cli("runs", "list", env={"RUNSTATE_URL": f"postgresql://u:{SECRET}@127.0.0.1:1/db"})
    assert result.returncode != 0
    assert SECRET not in result.stdout + result.stderr
    assert "***" in result.stderr


def test_cli_relay_masks_sink_and_store_passwords(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    result = _cli(
        "--debug",
        "relay",
        "--once",
        "--url",
        f"sqlite:///{db}",
        "--sink",
        f"amqp://relay:{SECRET}@127.0.0.1:1/?exchange=x",
    )
    assert SECRET not in result.stdout + result.stderr


async def test_lost_connection_errors_and_logs_mask_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    caplog.set_level(logging.DEBUG)
    schema = unique_schema()
    # Trust authentication ignores the password, so it can ride along in the URL.
    url = POSTGRES_URL.replace("postgres@", f"postgres:{SECRET}@") + "?application_name=rs_sec"
    store = await open_store(url, schema=schema, pool_size=1)
    admin = await asyncpg.connect(POSTGRES_URL)
    texts: list[str] = []
    try:
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id="sec-1", workflow="wf"),
                first_events=[RunEventInput(type="A")],
            )
        )
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'rs_sec'"
        )
        await asyncio.sleep(0.1)
        with contextlib.suppress(Exception):
            await store.append_and_enqueue_tx("sec-1", [RunEventInput(type="B")])
        try:
            await open_store(f"postgresql://postgres:{SECRET}@127.0.0.1:1/test", connect_timeout=1)
        except Exception as exc:
            texts += [str(exc), repr(exc)]
            cause: BaseException | None = exc.__cause__
            while cause is not None:
                texts.append(str(cause))
                cause = cause.__cause__
    finally:
        await store.close()
        await admin.close()
        await drop_postgres_schema(schema)
    texts.append(caplog.text)
    assert texts[0]
    for text in texts:
        assert SECRET not in text


async def test_relay_logs_mask_secrets(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    async with open_store(url) as store:
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id="r", workflow="wf"),
                first_events=[RunEventInput(type="A")],
            )
        )
    report = await run_relay(
        url,
        f"nats://relay:{SECRET}@127.0.0.1:1?subject=x&connect_timeout=0.5",
        once=True,
        handle_signals=False,
        backoff_base=0.01,
    )
    assert report.retried >= 1
    assert SECRET not in caplog.text
    assert "relay:***@" in caplog.text


# -- webhook signatures, verified by a receiver that refuses forgeries ------------------------


class VerifyingReceiver:
    """Accepts a request only with a valid, fresh signature over the exact body."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.accepted: list[bytes] = []
        self.rejected = 0
        self.raw: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.raw.append(request_line + repr(headers).encode() + body)
            if standard_webhook_signed(self.secret, body, headers):
                self.accepted.append(body)
                status = 200
            else:
                self.rejected += 1
                status = 401
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
async def verifying() -> AsyncIterator[VerifyingReceiver]:
    receiver = VerifyingReceiver("hook-secret-value")
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        await server.wait_closed()


async def _seeded() -> MemoryStore:
    store = MemoryStore()
    for index in range(3):
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id=f"w-{index}", workflow="wf"),
                first_events=[RunEventInput(type="A", payload={"x": "é"}) for _ in range(2)],
            )
        )
    return store


async def test_receiver_accepts_only_correctly_signed_deliveries(
    verifying: VerifyingReceiver,
) -> None:
    hook = f"http://127.0.0.1:{verifying.port}/hook"
    store = await _seeded()
    async with open_sink(hook, secret=verifying.secret) as sink:
        report = await Relay(store, sink, metrics=RelayMetrics(export=False)).run_once()
    assert (report.delivered, verifying.rejected) == (6, 0)
    # The secret travels nowhere: not in the URL, headers or body.
    assert all(verifying.secret.encode() not in raw for raw in verifying.raw)

    forged = await _seeded()
    async with open_sink(hook, secret="a-guessed-secret") as sink:
        report = await Relay(forged, sink, metrics=RelayMetrics(export=False)).run_once()
    # 401 is permanent: the forged deliveries are dead-lettered, never accepted.
    assert report.delivered == 0
    assert verifying.rejected == 3
    assert len(verifying.accepted) == 6


def test_signatures_bind_body_secret_and_time() -> None:
    from runstate.sinks.webhook import sign, verify_signature

    body = b'{"id":"r:1"}'
    header = sign("k", body, timestamp=1_700_000_000)
    assert verify_signature("k", body, header, now=1_700_000_010)
    assert not verify_signature("k", body + b"\n", header, now=1_700_000_010)
    assert not verify_signature("K", body, header, now=1_700_000_010)
    stamp, digest = header.split(",")
    moved = f"t=1700000100,{digest}"  # replaying with a fresh timestamp breaks the HMAC
    assert not verify_signature("k", body, moved, now=1_700_000_100)
    assert not verify_signature("k", body, f"{stamp},sha256={'0' * 64}", now=1_700_000_010)


# -- the SQLite file is private -----------------------------------------------------------------


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("permissive_umask")
async def test_sqlite_files_are_private_even_under_umask_0(tmp_path: Path) -> None:
    database = tmp_path / "deep" / "private.db"
    async with open_store(f"sqlite:///{database}") as store:
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id="p", workflow="wf"),
                first_events=[RunEventInput(type="A")],
            )
        )
        for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


@pytest.mark.usefixtures("permissive_umask")
def test_sqlite_file_made_by_the_cli_is_private(tmp_path: Path) -> None:
    database = tmp_path / "cli.db"
    result = _cli("migrate", "--url", f"sqlite:///{database}")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(database.stat().st_mode) & 0o077 == 0

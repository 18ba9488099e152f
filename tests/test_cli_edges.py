"""The command line at the edges: every bad input is one line on stderr with its exit status.

Usage errors (values typer/click refuse, unknown commands) exit 2 in one line, as the README
promises; configuration errors in the URL exit 2 (never a retryable 4); store failures of
``relay --once`` exit 4 with their own reason (not the task group around them).
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from conftest import POSTGRES_URL, require_service
from runstate import RunBootstrapInput, RunEventInput, RunMetadata, open_store

RUNSTATE = [sys.executable, "-m", "runstate.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a process of its own."""
    return subprocess.run(
        [*RUNSTATE, *args], capture_output=True, text=True, timeout=60, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, (result.returncode, result.stderr)
    assert result.stderr.startswith("runstate: error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    for noise in ("╭", "Usage:", "Traceback", "ExceptionGroup", "unexpected"):
        assert noise not in result.stderr, result.stderr
    return result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "list", "--limit", "-1"],
        ["runs", "list", "--limit", "abc"],
        ["runs", "list", "--page", "0"],
        ["runs", "list", "--status", "BOGUS"],
        ["no-such-command"],
        ["runs", "no-such-command"],
        ["runs", "list", "--no-such-option"],
        ["relay", "--sink", "stdout://", "--batch-size", "0"],
        ["relay", "--sink", "stdout://", "--workers", "0"],
        ["relay", "--sink", "stdout://", "--metrics-port", "-1"],
        ["relay", "--sink", "stdout://", "--metrics-port", "99999"],
        ["relay"],
        ["demo", "--runs", "-1"],
        ["runs", "show"],
    ],
    ids=lambda args: " ".join(args),
)
def test_usage_errors_are_one_line_with_status_2(args: list[str], tmp_path: Path) -> None:
    message = assert_one_line_error(run(*args, "--url", f"sqlite:///{tmp_path / 'u.db'}"), 2)
    assert "--help" in message


def test_no_arguments_still_print_the_help() -> None:
    result = run()
    assert "Usage" in result.stdout
    assert "runs" in result.stdout


@pytest.mark.parametrize(
    ("since", "status"),
    [("99999999999d", 2), ("99999999999999999999999s", 2), ("1000000d", 2), ("7d", 0)],
)
def test_since_far_back_is_refused_in_one_line(since: str, status: int, tmp_path: Path) -> None:
    result = run("runs", "list", "--url", f"sqlite:///{tmp_path / 's.db'}", "--since", since)
    if status:
        assert "--since" in assert_one_line_error(result, status)
    else:
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "since", ["9999-12-31T23:00:00-05:00", "0001-01-01T01:00:00+05:00", "0001-01-01T00:00:00"]
)
def test_since_outside_the_datetime_range_is_refused_in_one_line(
    since: str, tmp_path: Path
) -> None:
    result = run("runs", "list", "--url", f"sqlite:///{tmp_path / 'r.db'}", "--since", since)
    assert "between" in assert_one_line_error(result, 2)


def test_relay_retention_far_back_is_refused_in_one_line(tmp_path: Path) -> None:
    result = run(
        "relay", "--once", "--url", f"sqlite:///{tmp_path / 'k.db'}", "--sink", "stdout://",
        "--retention", "99999999999d",
    )  # fmt: skip
    assert "--retention" in assert_one_line_error(result, 2)


def test_a_metrics_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "relay", "--once", "--url", f"sqlite:///{tmp_path / 'm.db'}", "--sink", "stdout://",
            "--metrics-port", str(port),
        )  # fmt: skip
    assert f"127.0.0.1:{port}" in assert_one_line_error(result, 1)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@127.0.0.1:99999/db",
        "postgresql://u@127.0.0.1:abc/db",
        "postgresql://u@127.0.0.1:0/db",
        "postgresql://u@[::1/db",
        "postgresql://u@127.0.0.1/d%00b",
        "postgresql://u%00x@127.0.0.1/db",
        "postgresql://u@127.0.0.1/db?application_name=a%00b",
        "postgresql://u@127.0.0.1/db?sslmode=bogus",
        "postgresql://u@127.0.0.1/db?target_session_attrs=bogus",
        "postgresql://u@127.0.0.1/db?ssl_min_protocol_version=TLSv9",
        "postgresql://u@127.0.0.1/db?sslrootcert=/no/such/file&sslmode=verify-full",
        "postgresql://u@127.0.0.1/db?port=abc",
        "postgresql://u@127.0.0.1/db?pool_size=99999999999999999999",
        "postgresql://u@127.0.0.1/db?connect_timeout=1e300",
        "postgresql://u@127.0.0.1/db?pgbouncer=maybe",
        "sqlite:///a%00b.db",
        "memory://x?unknown=1",
    ],
)
def test_configuration_errors_are_invalid_input_not_unavailable(url: str) -> None:
    # memory:// has no schema: `migrate` never opens it.
    commands = [["runs", "list"]] + ([] if url.startswith("memory") else [["migrate"]])
    for command in commands:
        message = assert_one_line_error(run(*command, "--url", url), 2)
        assert "INVALID_INPUT" in message


def _seed(url: str) -> None:
    async def seed() -> None:
        async with open_store(url) as store:
            await store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id="pending", workflow="wf"),
                    first_events=[RunEventInput(type="A")],
                )
            )

    asyncio.run(seed())


def test_relay_once_on_a_locked_sqlite_database_exits_4_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    _seed(f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write lock, held past busy_timeout
    try:
        result = run(
            "relay", "--once", "--url", f"sqlite:///{path}?busy_timeout=0.2", "--sink", "stdout://"
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    message = assert_one_line_error(result, 4)
    assert "locked" in message
    assert "STORE_UNAVAILABLE" in message


def test_relay_once_whose_claim_times_out_exits_4_with_the_reason(schema: str) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    url = f"{POSTGRES_URL}?schema={schema}&command_timeout=0.5"
    _seed(url)

    async def locked_relay() -> subprocess.CompletedProcess[str]:
        admin = await asyncpg.connect(POSTGRES_URL)
        try:
            async with admin.transaction():
                await admin.execute(f'LOCK TABLE "{schema}".run_outbox IN ACCESS EXCLUSIVE MODE')
                return await asyncio.to_thread(
                    run, "relay", "--once", "--url", url, "--sink", "stdout://"
                )
        finally:
            await admin.close()

    message = assert_one_line_error(asyncio.run(locked_relay()), 4)
    assert "claim_outbox_batch failed: timed out" in message


async def test_relay_run_once_raises_the_store_error_itself(tmp_path: Path) -> None:
    from runstate import StoreUnavailable
    from runstate.relay import Relay
    from runstate.relay.metrics import RelayMetrics
    from runstate.sinks import CallableSink
    from runstate.store import OutboxStore

    path = tmp_path / "held.db"
    async with open_store(f"sqlite:///{path}") as seeding:
        await seeding.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id="held", workflow="wf"),
                first_events=[RunEventInput(type="A")],
            )
        )

    async def ignore(event: object) -> None:
        """Deliver nowhere."""

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        async with open_store(f"sqlite:///{path}", busy_timeout=0.1) as store:
            assert isinstance(store, OutboxStore)
            relay = Relay(
                store, CallableSink(ignore), workers=3, metrics=RelayMetrics(export=False)
            )
            with pytest.raises(StoreUnavailable, match="locked") as caught:
                await relay.run_once()
            assert not isinstance(caught.value, BaseExceptionGroup)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _command_paths() -> list[list[str]]:
    """Every command of the tree, as the words that name it (the root is [])."""
    import typer

    from runstate.cli import app

    paths: list[list[str]] = []

    def walk(command: object, words: list[str]) -> None:
        paths.append(words)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*words, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_every_flag_reads_as_a_flag_in_help() -> None:
    from typer.testing import CliRunner

    from runstate.cli import app

    paths = _command_paths()
    assert ["relay"] in paths
    assert ["outbox", "status"] in paths
    for words in paths:
        result = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (words, result.output)
        # A flag takes no value: the help shows `--once`, never `--once <bool>`.
        assert "<bool>" not in result.output, (words, result.output)
    help_text = CliRunner().invoke(app, ["relay", "--help"], env={"COLUMNS": "200"}).output
    assert "--once " in help_text
    assert "--metrics-host" in help_text


def test_a_flag_given_a_value_is_a_usage_error_as_the_help_says() -> None:
    result = run("relay", "--sink", "stdout://", "--once", "true")
    assert result.returncode == 2
    assert result.stderr.startswith("runstate: error: ")
    assert "extra argument(s) (true)" in result.stderr
    assert result.stderr.count("\n") == 1

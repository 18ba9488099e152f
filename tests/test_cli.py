"""The ``runstate`` command line on SQLite and PostgreSQL: every command and its errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import POSTGRES_URL, drop_postgres_schema, require_service, unique_schema
from runstate import RunEngine, RunEventInput, RunMetadata, open_store
from runstate.cli import app
from runstate.store import SchemaMigrator

RUNSTATE = [sys.executable, "-m", "runstate.cli"]


def cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return exit code, stdout and stderr."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL on each SQL adapter, with three runs in it."""
    if request.param == "sqlite":
        store_url = f"sqlite:///{tmp_path / 'cli.db'}"
        schema = None
    else:
        require_service("PostgreSQL", "127.0.0.1", 5432)
        schema = unique_schema()
        store_url = f"{POSTGRES_URL}?schema={schema}"
    asyncio.run(_seed(store_url))
    yield store_url
    if schema is not None:
        asyncio.run(drop_postgres_schema(schema))


async def _seed(store_url: str) -> None:
    async with open_store(store_url) as store:
        engine = RunEngine(store)
        for name, workflow, tenant in (
            ("cli-ok", "ingest", "acme"),
            ("cli-failed", "ingest", "globex"),
            ("cli-queued", "report", "acme"),
        ):
            await engine.create_run(
                RunMetadata(
                    run_id=name,
                    workflow=workflow,
                    tenant_id=tenant,
                    input={"n": 1},
                    labels={"team": "data"} if name == "cli-failed" else {},
                ),
                mode="sync" if name != "cli-queued" else "queued",
            )
        await engine.record("cli-ok", RunEventInput(type="StepStarted", payload={"step": "load"}))
        await engine.succeed("cli-ok", output={"rows": 3})
        await engine.fail("cli-failed", error={"message": "boom"})


def test_version() -> None:
    code, out, _ = cli("version")
    assert code == 0
    assert out.startswith("runstate ")


def test_migrate_shows_and_applies(url: str) -> None:
    code, out, _ = cli("migrate", "--url", url, "--status", "--json")
    assert code == 0
    status = json.loads(out)
    assert status["applied_version"] == status["latest_version"] >= 1
    assert {m["state"] for m in status["migrations"]} == {"applied"}
    code, out, _ = cli("migrate", "--url", url)
    assert code == 0
    assert "schema version" in out


def test_runs_list_filters_and_pages(url: str) -> None:
    code, out, _ = cli("runs", "list", "--url", url, "--json")
    assert code == 0
    runs = json.loads(out)
    assert [r["run_id"] for r in runs] == ["cli-queued", "cli-failed", "cli-ok"]
    assert {r["run_id"]: r["status"] for r in runs} == {
        "cli-queued": "QUEUED",
        "cli-failed": "FAILED",
        "cli-ok": "SUCCEEDED",
    }
    code, out, _ = cli("runs", "list", "--url", url, "--json", "--status", "FAILED")
    assert [r["run_id"] for r in json.loads(out)] == ["cli-failed"]
    code, out, _ = cli("runs", "list", "--url", url, "--json", "--workflow", "report")
    assert [r["run_id"] for r in json.loads(out)] == ["cli-queued"]
    code, out, _ = cli("runs", "list", "--url", url, "--json", "--tenant", "acme", "--limit", "1")
    assert [r["run_id"] for r in json.loads(out)] == ["cli-queued"]
    code, out, _ = cli(
        "runs", "list", "--url", url, "--json", "--tenant", "acme", "--limit", "1", "--page", "2"
    )
    assert [r["run_id"] for r in json.loads(out)] == ["cli-ok"]
    code, out, _ = cli("runs", "list", "--url", url, "--json", "--since", "1h")
    assert len(json.loads(out)) == 3
    code, out, _ = cli("runs", "list", "--url", url, "--since", "2999-01-01T00:00:00+00:00")
    assert code == 0
    assert "no runs match" in out
    code, out, _ = cli("runs", "list", "--url", url)
    assert code == 0
    assert "cli-failed" in out
    assert "FAILED" in out


def _listed(url: str, *args: str) -> list[str]:
    code, out, err = cli("runs", "list", "--url", url, "--json", *args)
    assert code == 0, err
    return [r["run_id"] for r in json.loads(out)]


def test_runs_list_reads_the_summary_with_every_filter(url: str) -> None:
    assert _listed(url, "--exclude-status", "FAILED") == ["cli-queued", "cli-ok"]
    assert _listed(url, "--exclude-status", "FAILED", "--exclude-status", "QUEUED") == ["cli-ok"]
    assert _listed(url, "--status", "FAILED", "--status", "QUEUED") == ["cli-queued", "cli-failed"]
    assert _listed(url, "--label", "team=data") == ["cli-failed"]
    assert _listed(url, "--label", "team=other") == []
    assert _listed(url, "--run-id-prefix", "cli-q") == ["cli-queued"]
    assert _listed(url, "--run-id-prefix", "nope") == []
    assert _listed(url, "--created-before", "2000-01-01T00:00:00+00:00") == []
    assert len(_listed(url, "--created-before", "2999-01-01T00:00:00+00:00")) == 3
    assert _listed(url, "--limit", "2", "--page", "2") == ["cli-ok"]
    assert _listed(url, "--limit", "2", "--page", "3") == []
    code, out, _ = cli("runs", "list", "--url", url, "--json", "--run-id-prefix", "cli-ok")
    (ok,) = json.loads(out)
    assert (ok["status"], ok["attempt"], ok["last_seq"]) == ("SUCCEEDED", 1, 4)
    assert ok["started_at"] is not None
    assert ok["finished_at"] is not None
    code, _, err = cli("runs", "list", "--url", url, "--label", "no-equals-sign")
    assert code != 0
    assert "--label 'no-equals-sign'" in err
    code, _, err = cli("runs", "list", "--url", url, "--created-before", "tomorrow")
    assert code != 0
    assert "--created-before" in err


def test_runs_show_prints_metadata_state_and_timeline(url: str) -> None:
    code, out, _ = cli("runs", "show", "cli-ok", "--url", url)
    assert code == 0
    for expected in ("cli-ok", "ingest", "acme", "SUCCEEDED", "RunQueued", "StepStarted", "load"):
        assert expected in out
    code, out, _ = cli("runs", "show", "cli-ok", "--url", url, "--json")
    shown = json.loads(out)
    assert shown["state"]["status"] == "SUCCEEDED"
    assert shown["state"]["output"] == {"rows": 3}
    assert [e["seq"] for e in shown["events"]] == [1, 2, 3, 4]


def test_events_prints_the_log(url: str) -> None:
    code, out, _ = cli("events", "cli-ok", "--url", url, "--json")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in lines] == ["RunQueued", "RunStarted", "StepStarted", "RunSucceeded"]
    code, out, _ = cli("events", "cli-ok", "--url", url)
    assert "#3  StepStarted" in out


def test_unknown_run_is_one_clear_line_and_exit_3(url: str) -> None:
    for command in (["runs", "show", "nope"], ["events", "nope"]):
        code, out, err = cli(*command, "--url", url)
        assert code == 3
        assert out == ""
        assert err.count("\n") == 1
        assert "run 'nope' not found" in err
        assert "Traceback" not in err


def test_outbox_status_relay_and_redrive(url: str, tmp_path: Path) -> None:
    code, out, _ = cli("outbox", "status", "--url", url, "--json")
    assert code == 0
    status = json.loads(out)
    assert status["pending"] == 8
    assert status["dead"] == 0
    code, out, _ = cli("outbox", "status", "--url", url)
    assert "pending" in out
    sink = tmp_path / "events.jsonl"
    code, out, _ = cli("relay", "--url", url, "--sink", sink.as_uri(), "--once", "--json")
    assert code == 0, out
    assert json.loads(out)["delivered"] == 8
    envelopes = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [e["id"] for e in envelopes if e["subject"] == "cli-ok"] == [
        f"cli-ok:{seq}" for seq in (1, 2, 3, 4)
    ]
    code, out, _ = cli("outbox", "status", "--url", url, "--json")
    assert json.loads(out)["pending"] == 0
    code, out, _ = cli("outbox", "redrive", "--url", url)
    assert code == 0
    assert "0 dead letter(s)" in out
    code, out, _ = cli(
        "relay", "--url", url, "--sink", sink.as_uri(), "--once", "--retention", "0s", "--json"
    )
    assert code == 0
    code, out, _ = cli("outbox", "status", "--url", url, "--json")
    assert json.loads(out)["delivered"] == 0
    code, _, err = cli("relay", "--url", url, "--sink", sink.as_uri(), "--retention", "soon")
    assert code == 2
    assert "--retention" in err


def test_relay_to_a_refusing_broker_fails_clearly(url: str) -> None:
    code, _, err = cli(
        "relay", "--url", url, "--sink", "amqp://guest:hunter2@127.0.0.1:1/", "--once"
    )
    assert code == 1
    assert re.search(r"\d+ delivery attempt\(s\) to amqp://guest:\*\*\*@127.0.0.1:1/ failed", err)
    assert "hunter2" not in err
    code, out, _ = cli("outbox", "status", "--url", url, "--json")
    assert json.loads(out)["pending"] + json.loads(out)["in_flight"] == 8


def test_unreachable_database_masks_the_password() -> None:
    code, out, err = cli("runs", "list", "--url", "postgresql://app:s3cret@127.0.0.1:1/db")
    assert code == 4
    assert out == ""
    assert "s3cret" not in err
    assert "app:***@127.0.0.1:1" in err
    assert "STORE_UNAVAILABLE" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("bad", ["nonsense", "mysql://root:pw@db/x", "sqlite:///"])
def test_malformed_or_unsupported_url_exits_2(bad: str) -> None:
    code, _, err = cli("runs", "list", "--url", bad)
    assert code == 2
    assert err.startswith("runstate: error:")
    assert ":pw@" not in err


def test_debug_shows_the_traceback() -> None:
    code, _, err = cli("--debug", "runs", "show", "x", "--url", "mysql://a@b/c")
    assert code == 2
    assert "Traceback" in err


def test_bad_since_and_unknown_benchmark_exit_2(url: str) -> None:
    code, _, err = cli("runs", "list", "--url", url, "--since", "yesterday")
    assert code == 2
    assert "--since" in err
    code, _, err = cli("bench", "no-such-benchmark")
    assert code == 2


def test_bench_passes_arguments_after_the_double_dash() -> None:
    code, out, err = cli("bench", "thread_hop", "--", "--calls", "20", "--rounds", "1")
    assert code == 0, (out, err)
    code, out, err = cli("bench", "thread_hop", "--", "--no-such-flag")
    assert code == 1
    assert "thread_hop" in err


def test_demo_passes_its_self_check(url: str, tmp_path: Path) -> None:
    sink = tmp_path / "demo.jsonl"
    code, out, err = cli(
        "demo", "--url", url, "--runs", "40", "--seed", "7", "--sink", sink.as_uri(), "--json"
    )
    assert code == 0, (out, err)
    result = json.loads(out)
    assert result["ok"] is True
    assert result["problems"] == []
    assert sum(result["statuses"].values()) == 40
    assert result["events_delivered"] == result["events_written"] > 40


def _start_follower(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [*RUNSTATE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.terminate()
    try:
        return process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


def test_events_follow_prints_new_events(url: str) -> None:
    follower = _start_follower("events", "cli-queued", "--url", url, "--follow", "--json")
    try:
        time.sleep(2.0)
        asyncio.run(_start_run(url, "cli-queued"))
        time.sleep(1.5)
    finally:
        out, err = _stop(follower)
    types = [json.loads(line)["type"] for line in out.splitlines()]
    assert types == ["RunQueued", "RunStarted"], err


async def _start_run(store_url: str, run_id: str) -> None:
    async with open_store(store_url) as store:
        await RunEngine(store).start(run_id)


def test_tail_follows_two_writers_even_when_the_later_transaction_commits_first(
    url: str,
) -> None:
    follower = _start_follower("tail", "--url", url, "--json")
    try:
        time.sleep(2.0)
        asyncio.run(_two_writers(url))
        time.sleep(2.0)
    finally:
        out, err = _stop(follower)
    seen = [(e["run_id"], e["type"]) for e in map(json.loads, out.splitlines())]
    assert ("cli-ok", "SlowWriter") in seen, (out, err)
    assert ("cli-failed", "FastWriter") in seen, (out, err)


async def _two_writers(store_url: str) -> None:
    """Two writers; on PostgreSQL the one holding the lower position commits last."""
    async with open_store(store_url) as store:
        if not store_url.startswith("postgresql"):
            await store.append_and_enqueue_tx("cli-ok", [RunEventInput(type="SlowWriter")])
            await store.append_and_enqueue_tx("cli-failed", [RunEventInput(type="FastWriter")])
            return
        import asyncpg

        schema = store_url.rsplit("schema=", 1)[1]
        slow = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
        try:
            transaction = slow.transaction()
            await transaction.start()
            await slow.execute(
                "INSERT INTO run_events (run_id, seq, event_id, type, payload, schema_version,"
                " recorded_at) VALUES ('cli-ok', 5, $1, 'SlowWriter', '{}', 1, now())",
                uuid.uuid4().hex,
            )
            await store.append_and_enqueue_tx("cli-failed", [RunEventInput(type="FastWriter")])
            await asyncio.sleep(1.0)
            await transaction.commit()
        finally:
            await slow.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_relay_stops_gracefully_on_a_signal(url: str, tmp_path: Path, sig: signal.Signals) -> None:
    sink = tmp_path / "events.jsonl"
    relay = _start_follower("relay", "--url", url, "--sink", sink.as_uri(), "--json")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(_lines(sink)) < 8:
            time.sleep(0.1)
        relay.send_signal(sig)
        out, err = relay.communicate(timeout=20)
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.communicate()
    assert relay.returncode == 0, err
    assert json.loads(out)["delivered"] == 8
    assert len(_lines(sink)) == 8
    _, status, _ = cli("outbox", "status", "--url", url, "--json")
    assert (json.loads(status)["pending"], json.loads(status)["in_flight"]) == (0, 0)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


class _LedgerMigrator:
    """A third party's migrations: numbered tables in a SQLite file it manages itself."""

    steps = ((1, "ledger"), (2, "ledger_index"))

    def migrations(self) -> list[tuple[int, str]]:
        return list(self.steps)

    def _path(self, url: Any) -> str:
        return str(url.raw.split("://", 1)[1])

    async def applied_version(self, url: Any, options: Mapping[str, Any]) -> int:
        import sqlite3

        with contextlib.closing(sqlite3.connect(self._path(url))) as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS applied (version INTEGER)")
            (version,) = connection.execute(
                "SELECT coalesce(max(version), 0) FROM applied"
            ).fetchone()
        return int(version)

    async def migrate(self, url: Any, options: Mapping[str, Any]) -> tuple[int, int]:
        import sqlite3

        before = await self.applied_version(url, options)
        with contextlib.closing(sqlite3.connect(self._path(url))) as connection:
            for version, _ in self.steps[before:]:
                connection.execute("INSERT INTO applied (version) VALUES (?)", (version,))
            connection.commit()
        return before, len(self.steps)


def test_migrate_works_for_a_scheme_registered_by_a_third_party(tmp_path: Path) -> None:
    from runstate import register_store_scheme

    async def opener(url: Any, options: dict[str, Any]) -> Any:
        return await open_store("memory://")

    migrator = _LedgerMigrator()
    assert isinstance(migrator, SchemaMigrator)
    register_store_scheme("ledger", opener, migrator=migrator)
    url = f"ledger://{tmp_path / 'ledger.db'}"
    code, out, err = cli("migrate", "--url", url, "--status", "--json")
    assert code == 0, err
    status = json.loads(out)
    assert (status["applied_version"], status["latest_version"]) == (0, 2)
    assert [m["state"] for m in status["migrations"]] == ["pending", "pending"]
    code, out, err = cli("migrate", "--url", url, "--json")
    assert code == 0, err
    assert [m["state"] for m in json.loads(out)["migrations"]] == ["applied now", "applied now"]
    code, out, _ = cli("migrate", "--url", url, "--status", "--json")
    assert json.loads(out)["applied_version"] == 2
    assert [m["state"] for m in json.loads(out)["migrations"]] == ["applied", "applied"]

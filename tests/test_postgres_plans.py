"""PostgreSQL write functions read only the rows of the runs they write, at any table size.

The functions run on generic plans, made once per session. A plan made while the tables were
small once kept a sequential scan of run_metadata in every append, so each single-event
append read every run. Here the plans are made on a store of a few hundred runs and every
nested statement is checked with auto_explain's actual row counts.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from runstate import RunBootstrapInput, RunEventInput, RunMetadata, open_store

pytestmark = pytest.mark.postgres

RUNS = 300
_SCAN = re.compile(
    r"on (run_metadata|run_events|run_outbox|run_summaries)\b.*rows=(\d+) loops=(\d+)"
)


async def _explained(connection: Any, sql: str, first: list[Any], second: list[Any]) -> list[str]:
    """Call ``sql`` with ``first``, then with ``second`` on the session's cached generic
    plans, and return the plans auto_explain reported for the second call's statements."""
    notices: list[str] = []

    def listener(_connection: Any, message: Any) -> None:
        notices.append(str(message))

    connection.add_log_listener(listener)
    await connection.execute("LOAD 'auto_explain'")
    for setting in (
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_nested_statements = on",
        "auto_explain.log_analyze = on",
        "auto_explain.log_timing = off",
        "auto_explain.log_level = notice",
        "client_min_messages = notice",
    ):
        await connection.execute(f"SET {setting}")
    try:
        await connection.fetch(sql, *first)
        notices.clear()
        await connection.fetch(sql, *second)
    finally:
        await connection.execute("RESET client_min_messages")
        connection.remove_log_listener(listener)
    return notices


def _rows_read(plans: list[str]) -> dict[str, int]:
    """The most rows any one scan node of each table produced (rows x loops)."""
    most: dict[str, int] = {}
    for plan in plans:
        for table, rows, loops in _SCAN.findall(plan):
            most[table] = max(most.get(table, 0), int(rows) * int(loops))
    return most


async def test_appends_and_bootstraps_read_only_their_runs(
    postgres_url: str, schema: str, admin: Any
) -> None:
    async with open_store(f"{postgres_url}?schema={schema}") as store:
        for i in range(RUNS):
            await store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=f"plan-{i:04d}", workflow="plans"),
                    first_events=[RunEventInput(type="RunQueued", payload={})],
                )
            )
    await admin.execute(f'SET search_path TO "{schema}"')

    def append(run: int, event: str) -> list[str]:
        return [json.dumps([[f"plan-{run:04d}", None, [[event, "StepStarted", "{}", 1, None]]]])]

    plans = await _explained(
        admin, "SELECT * FROM runstate_append_batch($1::jsonb)", append(1, "a"), append(2, "b")
    )
    assert plans, "auto_explain reported nothing"
    read = _rows_read(plans)
    assert read.get("run_metadata", 0) <= 1, read

    def bootstrap(run: str) -> list[str]:
        item = [run, "plans", None, None, None, "null", "{}", "2026-01-01T00:00:00Z", 1]
        return [json.dumps([[*item, [["e1", "RunQueued", "{}", 1, None]]]])]

    plans = await _explained(
        admin,
        "SELECT * FROM runstate_bootstrap_batch($1::jsonb)",
        bootstrap("plan-new-1"),
        bootstrap("plan-new-2"),
    )
    read = _rows_read(plans)
    assert plans
    assert all(rows <= 2 for rows in read.values()), read

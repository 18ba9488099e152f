"""Races through HTTP: 50 concurrent bootstraps of one run id get one 201 and 49 409s, on
SQLite and on PostgreSQL, and concurrent appends keep seqs gapless."""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _http_server import serving
from conftest import POSTGRES_URL, drop_postgres_schema, require_service, unique_schema
from runstate.server import ServerThread


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerThread]:
    """A server on SQLite or on PostgreSQL (a fresh schema)."""
    if request.param == "sqlite":
        with serving(f"sqlite:///{tmp_path / 'race.db'}") as running:
            yield running
        return
    require_service("PostgreSQL", "127.0.0.1", 5432)
    schema = unique_schema()
    try:
        with serving(f"{POSTGRES_URL}?schema={schema}&pool_size=5") as running:
            yield running
    finally:
        asyncio.run(drop_postgres_schema(schema))


async def test_fifty_concurrent_bootstraps_one_201_the_rest_409(server: ServerThread) -> None:
    run_id = f"race-{uuid.uuid4().hex}"
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/v1/runs",
                    json={
                        "metadata": {"run_id": run_id, "workflow": f"wf-{i}"},
                        "first_events": [{"type": "RunQueued"}],
                    },
                )
                for i in range(50)
            )
        )
        statuses = collections.Counter(r.status_code for r in responses)
        assert statuses == {201: 1, 409: 49}
        codes = {r.json()["code"] for r in responses if r.status_code == 409}
        assert codes == {"RUN_ALREADY_EXISTS"}
        (winner,) = [i for i, r in enumerate(responses) if r.status_code == 201]
        metadata = (await client.get(f"/v1/runs/{run_id}/metadata")).json()
        assert metadata["workflow"] == f"wf-{winner}"
        events = (await client.get(f"/v1/runs/{run_id}/events")).json()["events"]
        assert len(events) == 1


async def test_concurrent_appends_through_http_get_gapless_seqs(server: ServerThread) -> None:
    run_id = f"race-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        body = {"metadata": {"run_id": run_id, "workflow": "w"}, "first_events": [{"type": "Q"}]}
        assert (await client.post("/v1/runs", json=body)).status_code == 201
        responses = await asyncio.gather(
            *(
                client.post(f"/v1/runs/{run_id}/events", json={"events": [{"type": f"E{i}"}]})
                for i in range(40)
            )
        )
        assert {r.status_code for r in responses} == {200}
        seqs = sorted(r.json()["appended"][0]["seq"] for r in responses)
        assert seqs == list(range(2, 42))
        stale = await asyncio.gather(
            *(
                client.post(
                    f"/v1/runs/{run_id}/events",
                    json={"events": [{"type": "X"}], "expected_seq": 41},
                )
                for _ in range(10)
            )
        )
        statuses = collections.Counter(r.status_code for r in stale)
        assert statuses == {200: 1, 409: 9}
        conflict = next(r.json() for r in stale if r.status_code == 409)
        assert (conflict["expected_seq"], conflict["actual_seq"]) == (41, 42)

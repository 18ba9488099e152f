"""PostgreSQL adapter under failure: killed backends, timeouts, refused logins, OS processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
import uuid
from typing import Any

import pytest

from conftest import lock_run_row
from runstate import (
    RunEventInput,
    StoreUnavailable,
    open_store,
)
from runstate.adapters.postgres import PostgresStore
from runstate.testing.contract import bootstrap_input, new_run_id

pytestmark = pytest.mark.postgres


async def _open(url: str, schema: str, **options: Any) -> PostgresStore:
    store = await open_store(url, schema=schema, **options)
    assert isinstance(store, PostgresStore)
    return store


async def _backend_waiting_on_lock(admin: Any, app: str) -> int:
    for _ in range(200):
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
            " AND wait_event_type = 'Lock' LIMIT 1",
            app,
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.02)
    raise AssertionError("the store's write never blocked on the lock")


async def _outbox_count(admin: Any, schema: str, run_id: str) -> int:
    count = await admin.fetchval(
        f'SELECT count(*) FROM "{schema}".run_outbox WHERE run_id = $1',  # noqa: S608
        run_id,
    )
    return int(count)


# -- lost connections ----------------------------------------------------------------------


async def test_backend_killed_during_append_raises_and_pool_recovers(
    postgres_url: str, schema: str, admin: Any
) -> None:
    app = f"rs_kill_{uuid.uuid4().hex[:12]}"
    store = await _open(f"{postgres_url}?application_name={app}", schema, pool_size=3)
    try:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        # Hold the run's row so the append stops inside its transaction, then kill it there.
        async with admin.transaction():
            await lock_run_row(admin, schema, run_id)
            append = asyncio.create_task(
                store.append_and_enqueue_tx(run_id, [RunEventInput(type="A")])
            )
            pid = await _backend_waiting_on_lock(admin, app)
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(StoreUnavailable) as caught:
                await append
        assert caught.value.retryable is True
        assert caught.value.code == "STORE_UNAVAILABLE"
        assert [e.seq for e in await store.list_events(run_id)] == [1]
        assert await _outbox_count(admin, schema, run_id) == 1
        result = await store.append_and_enqueue_tx(run_id, [RunEventInput(type="B")])
        assert result.last_seq == 2
    finally:
        await store.close()


async def test_backend_killed_during_bootstrap_leaves_nothing(
    postgres_url: str, schema: str, admin: Any
) -> None:
    app = f"rs_kill_{uuid.uuid4().hex[:12]}"
    store = await _open(f"{postgres_url}?application_name={app}", schema, pool_size=3)
    try:
        run_id = new_run_id()
        # An uncommitted insert of the same key makes the bootstrap wait mid-transaction.
        blocker = admin.transaction()
        await blocker.start()
        try:
            await admin.execute(
                f'INSERT INTO "{schema}".run_metadata (run_id, workflow, input, labels,'  # noqa: S608
                " created_at, schema_version) VALUES ($1, 'x', 'null', '{}', now(), 1)",
                run_id,
            )
            bootstrap = asyncio.create_task(
                store.bootstrap_run_tx(bootstrap_input(run_id, "RunQueued", "RunStarted"))
            )
            pid = await _backend_waiting_on_lock(admin, app)
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(StoreUnavailable) as caught:
                await bootstrap
            assert caught.value.retryable is True
        finally:
            await blocker.rollback()
        assert await store.get_run_metadata_by_run_id(run_id) is None
        assert await store.list_events(run_id) == []
        result = await store.bootstrap_run_tx(bootstrap_input(run_id, "RunQueued", "RunStarted"))
        assert result.last_seq == 2
        assert await _outbox_count(admin, schema, run_id) == 2
    finally:
        await store.close()


async def test_random_kills_never_leave_half_written_runs(
    postgres_url: str, schema: str, admin: Any
) -> None:
    app = f"rs_kill_{uuid.uuid4().hex[:12]}"
    store = await _open(f"{postgres_url}?application_name={app}", schema, pool_size=4)
    run_ids = [new_run_id() for _ in range(120)]
    try:

        async def write(run_id: str) -> str:
            try:
                await store.bootstrap_run_tx(bootstrap_input(run_id, "RunQueued", "RunStarted"))
                await store.append_and_enqueue_tx(run_id, [RunEventInput(type="A")])
            except StoreUnavailable as exc:
                return "lost" if exc.retryable else f"not retryable: {exc}"
            return "ok"

        async def killer() -> None:
            for _ in range(6):
                await asyncio.sleep(0.03)
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = $1",
                    app,
                )

        semaphore = asyncio.Semaphore(8)

        async def bounded(run_id: str) -> str:
            async with semaphore:
                return await write(run_id)

        outcomes, _ = await asyncio.gather(asyncio.gather(*(bounded(r) for r in run_ids)), killer())
        assert "ok" in outcomes
        assert set(outcomes) <= {"ok", "lost"}, outcomes
        for run_id in run_ids:
            metadata = await store.get_run_metadata_by_run_id(run_id)
            events = await store.list_events(run_id)
            if metadata is None:
                assert events == []
            else:
                assert [e.seq for e in events] in ([1, 2], [1, 2, 3])
            assert await _outbox_count(admin, schema, run_id) == len(events)
        # The pool has healed: every later call succeeds.
        for run_id in run_ids[:10]:
            if await store.get_run_metadata_by_run_id(run_id) is None:
                await store.bootstrap_run_tx(bootstrap_input(run_id))
    finally:
        await store.close()


async def test_pool_acquire_and_command_timeouts_are_store_unavailable(
    postgres_url: str, schema: str, admin: Any
) -> None:
    store = await _open(postgres_url, schema, pool_size=1, command_timeout=0.5)
    try:
        run_id = new_run_id()
        await store.bootstrap_run_tx(bootstrap_input(run_id))
        # A write that waits for a row lock past command_timeout.
        async with admin.transaction():
            await lock_run_row(admin, schema, run_id)
            with pytest.raises(StoreUnavailable) as caught:
                await store.append_and_enqueue_tx(run_id, [RunEventInput(type="A")])
            assert caught.value.retryable
        # A read that finds the pool's only connection taken past the same timeout.
        held = await store._pool.acquire()
        try:
            with pytest.raises(StoreUnavailable) as caught:
                await store.list_events(run_id)
            assert caught.value.retryable
        finally:
            await store._pool.release(held)
        assert len(await store.list_events(run_id)) == 1
        await store.append_and_enqueue_tx(run_id, [RunEventInput(type="B")])
    finally:
        await store.close()


# -- unreachable servers and masking --------------------------------------------------------


async def test_closed_port_is_retryable_and_masks_the_password() -> None:
    url = "postgresql://postgres:Sup3rS3cretPw@127.0.0.1:1/test"
    with pytest.raises(StoreUnavailable) as caught:
        await open_store(url, connect_timeout=2)
    assert caught.value.retryable is True
    text = f"{caught.value} {caught.value!r}"
    assert "Sup3rS3cretPw" not in text
    assert "***" in text


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:Sup3rS3cretPw@127.0.0.1:5432/rs_no_such_database",
        "postgresql://rs_no_such_role:Sup3rS3cretPw@127.0.0.1:5432/test",
    ],
)
async def test_refused_login_is_not_retryable(postgres_url: str, url: str) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await open_store(url)
    assert caught.value.retryable is False
    assert "Sup3rS3cretPw" not in f"{caught.value} {caught.value!r}"


# -- concurrency across OS processes ----------------------------------------------------------

_BOOTSTRAP_WORKER = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from runstate import RunAlreadyExists, open_store
    from runstate.testing.contract import bootstrap_input

    url, schema, run_id, start, count, tag = sys.argv[1:7]

    async def main():
        async with open_store(url, schema=schema, pool_size=int(count)) as store:
            await asyncio.sleep(max(0.0, float(start) - time.time()))
            outcomes = await asyncio.gather(
                *(store.bootstrap_run_tx(bootstrap_input(run_id, workflow=f"{tag}-{i}"))
                  for i in range(int(count))),
                return_exceptions=True,
            )
        print(json.dumps([
            "won" if not isinstance(o, BaseException)
            else "exists" if isinstance(o, RunAlreadyExists) else repr(o)
            for o in outcomes
        ]))

    asyncio.run(main())
    """
)


async def test_fifty_bootstraps_from_three_processes_have_one_winner(
    postgres_url: str, schema: str
) -> None:
    store = await _open(postgres_url, schema)
    try:
        run_id = new_run_id()
        start = time.time() + 3.0
        counts = [17, 17, 16]
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _BOOTSTRAP_WORKER,
                postgres_url,
                schema,
                run_id,
                str(start),
                str(count),
                f"p{index}",
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for index, count in enumerate(counts)
        ]
        outcomes: list[str] = []
        for process in processes:
            out, err = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode == 0, err.decode()
            outcomes.extend(json.loads(out))
        assert len(outcomes) == 50
        assert outcomes.count("won") == 1, outcomes
        assert outcomes.count("exists") == 49, outcomes
        assert len(await store.list_events(run_id)) == 1
    finally:
        await store.close()


async def test_claims_return_every_record_they_lease_while_writers_commit(
    postgres_url: str, schema: str, admin: Any
) -> None:
    # The claim function runs its statements with newer snapshots than the caller's; a
    # record leased there must come back with its event even if it committed in between.
    store = await _open(postgres_url, schema, pool_size=6)
    try:
        runs = [new_run_id() for _ in range(20)]
        for run_id in runs:
            await store.bootstrap_run_tx(bootstrap_input(run_id, "RunQueued"))
        returned: set[int] = set()
        writing = True

        async def writer(offset: int) -> None:
            for index in range(300):
                run_id = runs[(index + offset) % len(runs)]
                await store.append_and_enqueue_tx(run_id, [RunEventInput(type="Step")])

        async def relay(owner: str) -> None:
            while True:
                batch = await store.claim_outbox_batch(owner=owner, limit=50, lease_seconds=60)
                for record in batch:
                    assert record.outbox_id not in returned
                    returned.add(record.outbox_id)
                if batch:
                    ids = [record.outbox_id for record in batch]
                    assert await store.mark_delivered(ids, owner=owner) == len(ids)
                elif not writing:
                    return
                else:
                    await asyncio.sleep(0)

        relays = [asyncio.create_task(relay(f"relay-{n}")) for n in range(2)]
        await asyncio.gather(*(writer(n) for n in range(3)))
        writing = False
        await asyncio.gather(*relays)
        stuck = await admin.fetchval(
            f'SELECT count(*) FROM "{schema}".run_outbox WHERE delivered_at IS NULL'  # noqa: S608
        )
        assert stuck == 0
        assert len(returned) == len(runs) + 900
    finally:
        await store.close()

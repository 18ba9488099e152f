"""Client instructions per PostgreSQL write, counted by valgrind: runstate next to asyncpg.

CPU time per operation on a small shared machine moves by half between runs (other guests,
frequency); instruction counts do not. Each side runs under ``valgrind --tool=callgrind`` twice,
once doing N operations and once 2N, with identical set-up (inputs for 2N are always built),
so the difference divided by N is the marginal cost of one operation. The baseline is asyncpg
alone running bench_postgres.py's pgbench statement (the same rows, one prepared statement on
one connection): what any Python client pays for the round trip. Instructions are not time
(cache misses differ), but a change that removes instructions removes work::

    .venv/bin/python benchmarks/bench_client_instructions.py --ops 400

Needs valgrind (Debian's package) and PostgreSQL; the scratch schema is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_postgres import (
    PGBENCH_APPEND,
    PGBENCH_BOOTSTRAP,
    _admin,
    _event_batch,
    _prepare_pgbench_schema,
    bootstrap_inputs,
)
from runstate import RunBootstrapInput, RunMetadata, open_store

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
SIDES = ("runstate", "asyncpg")
OPERATIONS = ("bootstrap", "append")
_COLLECTED = re.compile(r"Collected : (\d+)")


async def child(url: str, schema: str, side: str, op: str, count: int, built: int) -> None:
    """Do ``count`` operations of one kind after building inputs for ``built`` of them."""
    if side == "runstate":
        store = await open_store(url, schema=schema, pool_size=1)
        try:
            run_id = f"rs-append-{uuid.uuid4().hex}"
            await store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=run_id, workflow="bench"),
                    first_events=_event_batch("RunQueued"),
                )
            )
            if op == "bootstrap":
                for item in bootstrap_inputs(built)[:count]:
                    await store.bootstrap_run_tx(item)
            else:
                appends = [_event_batch("Step") for _ in range(built)]
                for events in appends[:count]:
                    await store.append_and_enqueue_tx(run_id, events)
        finally:
            await store.close()
        return
    connection = await asyncpg.connect(url)
    try:
        template = PGBENCH_BOOTSTRAP if op == "bootstrap" else PGBENCH_APPEND
        sql = template.format(s=f'"{schema}"', tail="1").replace(":client_id", "$1::text")
        statement = await connection.prepare(sql)
        arguments = [() if op == "bootstrap" else ("0",) for _ in range(built)]
        for args in arguments[:count]:
            await statement.fetch(*args)
    finally:
        await connection.close()


def instructions(args: argparse.Namespace, side: str, op: str, count: int) -> int:
    """Instructions the whole child process executed under callgrind."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        side,
        op,
        str(count),
        str(2 * args.ops),
        "--url",
        args.url,
        "--schema",
        args.schema,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    """Count both sides' instructions per operation and print them with their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--schema", default=f"rs_bench_instr_{uuid.uuid4().hex[:8]}")
    parser.add_argument("--ops", type=int, default=400, help="N: runs of N and 2N operations")
    parser.add_argument("--child", nargs=4, metavar=("SIDE", "OP", "COUNT", "BUILT"))
    args = parser.parse_args()
    if args.child:
        side, op, count, built = args.child
        asyncio.run(child(args.url, args.schema, side, op, int(count), int(built)))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    # pgbench's append target is run pgb-run-0: one client.
    asyncio.run(_prepare_pgbench_schema(args.url, args.schema, 0))
    try:
        per_op: dict[tuple[str, str], float] = {}
        for op in OPERATIONS:
            for side in SIDES:
                once = instructions(args, side, op, args.ops)
                twice = instructions(args, side, op, 2 * args.ops)
                per_op[side, op] = (twice - once) / args.ops
                print(f"  {side:<9} {op:<10} {per_op[side, op]:>12,.0f} instructions/op")
    finally:
        asyncio.run(_admin(args.url, f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE'))
    print(f"\nclient instructions per operation (callgrind, marginal over {args.ops} ops)")
    print(f"{'operation':<10} {'runstate':>12} {'asyncpg':>12} {'ratio':>6}")
    for op in OPERATIONS:
        ours, floor = per_op["runstate", op], per_op["asyncpg", op]
        print(f"{op:<10} {ours:>12,.0f} {floor:>12,.0f} {ours / floor:>6.2f}")


if __name__ == "__main__":
    main()

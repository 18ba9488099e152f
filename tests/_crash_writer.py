"""A writer process for the crash tests: bootstraps and appends until it is SIGKILLed.

Usage: ``python tests/_crash_writer.py STORE_URL PREFIX TASKS``. It opens the store, prints
``ready`` and then runs ``TASKS`` asyncio tasks, each creating runs named
``PREFIX-<task>-<n>`` with three first events and then appending two single-event batches
and one two-event batch to each. It never stops by itself: the test kills it at a random
moment, usually with writes in flight.
"""

from __future__ import annotations

import asyncio
import sys

from runstate import RunBootstrapInput, RunEventInput, RunMetadata, open_store

FIRST_EVENTS = 3


async def _task(store: object, prefix: str, task: int) -> None:
    from runstate import RunStateStore

    assert isinstance(store, RunStateStore)
    n = 0
    while True:
        run_id = f"{prefix}-{task}-{n}"
        n += 1
        first = [
            RunEventInput(type="RunQueued", payload={"run": run_id, "i": 0}),
            RunEventInput(type="StepStarted", payload={"run": run_id, "i": 1, "pad": "x" * 200}),
            RunEventInput(type="StepSucceeded", payload={"run": run_id, "i": 2}),
        ]
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(
                    run_id=run_id, workflow="crash", labels={"task": str(task)}, input={"n": n}
                ),
                first_events=first,
            )
        )
        for batch in ([3], [4], [5, 6]):
            await store.append_and_enqueue_tx(
                run_id, [RunEventInput(type="Step", payload={"run": run_id, "i": i}) for i in batch]
            )


async def main(url: str, prefix: str, tasks: int) -> None:
    store = await open_store(url)
    print("ready", flush=True)
    await asyncio.gather(*(_task(store, prefix, task) for task in range(tasks)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))

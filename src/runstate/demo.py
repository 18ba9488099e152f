"""``python -m runstate.demo``: bootstrap a few runs on the default store and show the result."""

from __future__ import annotations

import asyncio
import sys
import uuid

from ._open import default_url, open_store
from ._url import mask_url
from .errors import RunAlreadyExists, RunStateError
from .types import RunBootstrapInput, RunEventInput, RunMetadata


async def _demo(url: str) -> None:
    async with open_store(url) as store:
        batch = uuid.uuid4().hex[:8]
        run_ids = [f"demo-{batch}-{i}" for i in range(5)]
        for run_id in run_ids:
            await store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=run_id, workflow="demo", tenant_id="acme"),
                    first_events=[RunEventInput(type="RunQueued")],
                )
            )
            await store.append_and_enqueue_tx(
                run_id,
                [RunEventInput(type="RunStarted"), RunEventInput(type="RunSucceeded")],
                expected_seq=1,
            )
        try:
            await store.bootstrap_run_tx(
                RunBootstrapInput(
                    metadata=RunMetadata(run_id=run_ids[0], workflow="demo"),
                    first_events=[RunEventInput(type="RunQueued")],
                )
            )
        except RunAlreadyExists as exc:
            print(f"second bootstrap of {run_ids[0]} refused: {exc.code}")
        for run_id in run_ids:
            events = await store.list_events(run_id)
            print(f"{run_id}: " + " -> ".join(f"{e.seq}:{e.type}" for e in events))
        print(f"{len(run_ids)} runs written to {mask_url(url)}")


def main() -> None:
    """Run the demo on ``$RUNSTATE_URL`` or the embedded SQLite default."""
    try:
        asyncio.run(_demo(default_url()))
    except RunStateError as exc:
        print(f"runstate demo failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

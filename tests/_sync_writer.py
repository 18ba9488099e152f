"""A writer process for the two-process SQLite test of runstate.sync.

Usage: ``python tests/_sync_writer.py URL NAME``. Opens the synchronous store, waits for the
file ``URL's path + ".go"`` to appear (so both processes start together), then with 4
threads: bootstraps the runs ``shared-0`` .. ``shared-39`` (the other process bootstraps the
same ids: one winner each) and appends 50 events each to the run ``common`` (which the test
created). Prints one JSON line: the run ids it won and the seqs it was given.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from runstate.sync import (
    RunAlreadyExists,
    RunBootstrapInput,
    RunEventInput,
    RunMetadata,
    open_store,
)

THREADS = 4
SHARED_RUNS = 40
APPENDS_PER_THREAD = 50


def main() -> None:
    """Race the other process on one SQLite file; report what this one got."""
    url, name = sys.argv[1], sys.argv[2]
    go = url.removeprefix("sqlite:///") + ".go"
    won: list[str] = []
    seqs: list[int] = []
    with open_store(url) as store:
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.005)

        def work(index: int) -> None:
            for n in range(index, SHARED_RUNS, THREADS):
                run_id = f"shared-{n}"
                request = RunBootstrapInput(
                    metadata=RunMetadata(run_id=run_id, workflow=name),
                    first_events=[RunEventInput(type="RunQueued")],
                )
                try:
                    store.bootstrap_run_tx(request)
                    won.append(run_id)
                except RunAlreadyExists:
                    pass
            for step in range(APPENDS_PER_THREAD):
                event = RunEventInput(type="Step", payload={"by": f"{name}-{index}", "n": step})
                result = store.append_and_enqueue_tx("common", [event])
                seqs.extend(e.seq for e in result.appended)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    print(json.dumps({"won": won, "seqs": seqs}), flush=True)


if __name__ == "__main__":
    main()

"""The synchronous executor's worker threads: ``WorkerTasks`` of ``runstate.engine`` on threads."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class WorkerThreads:
    """The threads of one synchronous ``Worker``; ``stop`` lets each finish its run first."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self.stopping = False

    def __bool__(self) -> bool:
        return bool(self._threads)

    def start(self, count: int, work: Callable[[int], None], name: str) -> None:
        """Start ``count`` daemon threads running ``work(index)``."""
        self.stopping = False
        self._threads = [
            threading.Thread(target=work, args=(index,), name=f"{name}-{index}", daemon=True)
            for index in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, runs: queue.Queue[str | None]) -> None:
        """Tell every thread to end (one ``None`` each, behind the runs queued) and join them."""
        self.stopping = True
        threads, self._threads = self._threads, []
        for _ in threads:
            runs.put(None)
        for thread in threads:
            thread.join()

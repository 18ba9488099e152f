"""The executor's worker tasks, started and stopped together.

``runstate.sync`` has the same interface on threads (``WorkerThreads``), which is why the
worker loop reads a ``None`` from the queue as the signal to end: threads cannot be cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class WorkerTasks:
    """The asyncio tasks of one ``Worker``: cancelled on ``stop``, their runs left as they are."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = False

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def start(
        self, count: int, work: Callable[[int], Coroutine[Any, Any, None]], name: str
    ) -> None:
        """Start ``count`` tasks running ``work(index)``."""
        self.stopping = False
        self._tasks = [
            asyncio.create_task(work(index), name=f"{name}-{index}") for index in range(count)
        ]

    async def stop(self, queue: asyncio.Queue[str | None]) -> None:
        """Cancel the tasks and wait for them to end; the queue keeps what they did not take."""
        self.stopping = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

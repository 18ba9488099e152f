"""The modules of runstate.sync that tools/async_to_sync.py generates are current.

A change to an async source (the engine, the executor, the store protocols, the memory or
SQLite store) must be followed by ``make generate``; this test fails until it is.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "async_to_sync", ROOT / "tools" / "async_to_sync.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("async_to_sync", module)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()


@pytest.mark.parametrize("target", GENERATOR.TARGETS, ids=lambda target: target.target)
def test_generated_module_is_current(target: object) -> None:
    path = GENERATOR.PACKAGE / target.target  # type: ignore[attr-defined]
    expected = GENERATOR.generate(target)
    assert path.read_text(encoding="utf-8") == expected, (
        f"src/runstate/{target.target} is stale: run `make generate`"  # type: ignore[attr-defined]
    )


def test_generated_modules_say_so_at_their_top() -> None:
    for target in GENERATOR.TARGETS:
        first = (GENERATOR.PACKAGE / target.target).read_text(encoding="utf-8").splitlines()[0]
        assert first == GENERATOR.HEADER.format(source=target.source).rstrip("\n")


SAMPLE = '''"""A sample module."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from ..adapters._base import StoreBase

Step = Callable[[], Awaitable[int]]


def plain(value: int) -> int:
    """Unchanged: imported from the source, not copied."""
    return value + 1


class Store(StoreBase):
    """Awaits ``store.close()`` and uses ``async with``."""

    async def work(self, steps: list[Step]) -> int:
        """Run the steps."""
        lock = asyncio.Lock()
        async with lock:
            # One after another.
            await asyncio.gather(self.one(), self.two())
        try:
            await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            raise
        return plain(sum([await step() for step in steps]))

    @asynccontextmanager
    async def scope(self) -> AsyncIterator[None]:
        """A scope."""
        yield

    async def one(self) -> None:
        """One."""

    async def two(self) -> None:
        """Two."""
'''


def test_the_rewrite_rules() -> None:
    text = GENERATOR.rewrite(
        SAMPLE, source="engine/sample.py", target=GENERATOR.PACKAGE / "sync" / "sample.py"
    )
    assert text.startswith("# Generated from src/runstate/engine/sample.py by")
    for gone in ("async ", "await ", "asyncio", "CancelledError", "Awaitable", "def plain"):
        assert gone not in text, gone
    for present in (
        "from runstate.engine.sample import plain",
        "from runstate.adapters._base import SyncStoreBase",
        "class Store(SyncStoreBase):",
        "lock = threading.Lock()",
        "with lock:",
        "# One after another.",
        "            self.one()\n            self.two()\n",
        "time.sleep(0.1)",
        "Step = Callable[[], int]",
        "@contextmanager",
        "-> Iterator[None]:",
        "[step() for step in steps]",
        '"""Awaits ``store.close()`` and uses ``with``."""',
    ):
        assert present in text, present
    compile(text, "sample.py", "exec")

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

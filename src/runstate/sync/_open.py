"""``open_store`` of ``runstate.sync``: a URL to a ready synchronous store."""

from __future__ import annotations

from typing import Any, Protocol, Self

from .._open import default_url
from .._url import parse_store_url
from ..adapters.sqlite._connect import parse_options
from .bridge import BridgedStore
from .memory import open_memory_store
from .sqlite import SQLiteStore
from .store import RunStateStore


class ClosingStore(RunStateStore, Protocol):
    """What ``open_store`` returns: a ``RunStateStore`` that ``with`` closes at the end.

    Every built-in store is an ``OutboxStore`` and a ``RunCatalog`` too.
    """

    def __enter__(self) -> Self:
        """Return the store itself."""
        ...

    def __exit__(self, *exc_info: object) -> None:
        """Close the store."""
        ...


def open_store(url: str | None = None, **options: Any) -> ClosingStore:
    """Open the store at ``url`` (default: ``$RUNSTATE_URL`` or ``sqlite:///./runstate.db``).

    The same URLs and options as ``runstate.open_store``. ``memory://`` and ``sqlite://`` have
    synchronous adapters of their own; every other scheme (``postgresql://``, and those
    registered with ``register_store_scheme``) is its async adapter carried by a private
    event loop. Close the store with ``close()``, or use it in a ``with`` block.
    """
    raw = default_url() if url is None else url
    parsed = parse_store_url(raw)
    if parsed.scheme == "memory":
        return open_memory_store(parsed, dict(options))
    if parsed.scheme == "sqlite":
        return SQLiteStore.open(parse_options(parsed, options))
    return BridgedStore.open(raw, dict(options))

"""Reusable test suites: subclass ``RunStateStoreContract`` to check any adapter.

Requires pytest, pytest-asyncio (``asyncio_mode = "auto"``) and hypothesis, as in the
``dev`` extra. The focused suites (store, validation, edges, outbox, catalog, query) can be
used alone.
``ThreadedStore`` exposes a store of ``runstate.sync`` to them, each call on its own thread.
"""

from .contract import (
    CatalogContract,
    EdgesContract,
    OutboxContract,
    QueryContract,
    RunStateStoreContract,
    StoreContract,
    ValidationContract,
)
from .threaded import ThreadedStore

__all__ = [
    "CatalogContract",
    "EdgesContract",
    "OutboxContract",
    "QueryContract",
    "RunStateStoreContract",
    "StoreContract",
    "ThreadedStore",
    "ValidationContract",
]

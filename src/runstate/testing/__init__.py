"""Reusable test suites: subclass ``RunStateStoreContract`` to check any adapter.

Requires pytest, pytest-asyncio (``asyncio_mode = "auto"``) and hypothesis, as in the
``dev`` extra. The focused suites (store, validation, outbox, catalog) can be used alone.
"""

from .contract import (
    CatalogContract,
    OutboxContract,
    RunStateStoreContract,
    StoreContract,
    ValidationContract,
)

__all__ = [
    "CatalogContract",
    "OutboxContract",
    "RunStateStoreContract",
    "StoreContract",
    "ValidationContract",
]

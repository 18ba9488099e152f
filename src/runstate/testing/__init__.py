"""Reusable test suites: subclass ``RunStateStoreContract`` to check any adapter.

Requires pytest, pytest-asyncio (``asyncio_mode = "auto"``) and hypothesis, as in the
``dev`` extra.
"""

from .contract import RunStateStoreContract

__all__ = ["RunStateStoreContract"]

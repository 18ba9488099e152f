"""runstate: a durable, consistent, observable record of every workflow run."""

from ._open import DEFAULT_URL, default_url, open_store, register_store_scheme
from ._url import mask_url
from .adapters.memory import MemoryStore
from .engine import RunEngine, RunState, RunStatus, UpcasterRegistry, Worker, project
from .errors import (
    ConcurrencyConflict,
    InvalidInput,
    InvalidTransition,
    RunAlreadyExists,
    RunNotFound,
    RunStateError,
    StoreUnavailable,
    UnreadableRecord,
)
from .store import OutboxStore, RunStateStore
from .types import (
    JSON,
    AppendResult,
    OutboxRecord,
    OutboxStats,
    RunBootstrapInput,
    RunEventInput,
    RunEventPersisted,
    RunMetadata,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "JSON",
    "AppendResult",
    "ConcurrencyConflict",
    "InvalidInput",
    "InvalidTransition",
    "MemoryStore",
    "OutboxRecord",
    "OutboxStats",
    "OutboxStore",
    "RunAlreadyExists",
    "RunBootstrapInput",
    "RunEngine",
    "RunEventInput",
    "RunEventPersisted",
    "RunMetadata",
    "RunNotFound",
    "RunState",
    "RunStateError",
    "RunStateStore",
    "RunStatus",
    "StoreUnavailable",
    "UnreadableRecord",
    "UpcasterRegistry",
    "Worker",
    "__version__",
    "default_url",
    "mask_url",
    "open_store",
    "project",
    "register_store_scheme",
]

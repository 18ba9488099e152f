"""runstate for threaded programs: the same API, blocking, safe to share between threads.

```python
from runstate.sync import open_store, RunEngine, Worker
with open_store("sqlite:///./runstate.db") as store:      # or memory://, postgresql://
    store.bootstrap_run_tx(RunBootstrapInput(...))
    engine = RunEngine(store)
    state = engine.create_run(metadata, mode="sync")
```

The same names, value types, errors, validation, guarantees and idempotency as the async
API of ``runstate``. SQLite runs every call on the calling thread (threads that meet share a
group commit); ``memory://name`` shares its data with the async stores of that name;
PostgreSQL (and any other scheme) is the async adapter carried by a private event loop.
``RelayThread`` runs the outbox relay in a background thread. The engine, the executor and
the memory and SQLite stores here are generated from their async sources by
``tools/async_to_sync.py``; docs/design.md (decision 8) says why.
"""

from ..engine import RunState, RunStatus, UpcasterRegistry, project
from ..errors import (
    ConcurrencyConflict,
    InvalidInput,
    InvalidTransition,
    RunAlreadyExists,
    RunCancelledError,
    RunNotFound,
    RunStateError,
    StoreClosed,
    StoreUnavailable,
)
from ..types import (
    JSON,
    AppendResult,
    FeedPage,
    OutboxRecord,
    OutboxStats,
    RunBootstrapInput,
    RunEventInput,
    RunEventPersisted,
    RunMetadata,
    RunSummary,
)
from ._open import ClosingStore, open_store
from .bridge import BridgedStore, LoopRunner
from .executor import Handler, RunContext, Worker, drive, run_sync
from .memory import MemoryStore
from .relay import RelayThread
from .run_engine import RunEngine
from .sqlite import SQLiteStore
from .store import OutboxStore, RunCatalog, RunStateStore

__all__ = [
    "JSON",
    "AppendResult",
    "BridgedStore",
    "ClosingStore",
    "ConcurrencyConflict",
    "FeedPage",
    "Handler",
    "InvalidInput",
    "InvalidTransition",
    "LoopRunner",
    "MemoryStore",
    "OutboxRecord",
    "OutboxStats",
    "OutboxStore",
    "RelayThread",
    "RunAlreadyExists",
    "RunBootstrapInput",
    "RunCancelledError",
    "RunCatalog",
    "RunContext",
    "RunEngine",
    "RunEventInput",
    "RunEventPersisted",
    "RunMetadata",
    "RunNotFound",
    "RunState",
    "RunStateError",
    "RunStateStore",
    "RunStatus",
    "RunSummary",
    "SQLiteStore",
    "StoreClosed",
    "StoreUnavailable",
    "UpcasterRegistry",
    "Worker",
    "drive",
    "open_store",
    "project",
    "run_sync",
]

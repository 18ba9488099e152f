"""The engine stage: the lifecycle state machine, Option D upcasting, the pure projector, the
run engine that writes through the store, and a small in-process executor.

Data flows one way: ``lifecycle`` (the event model) <- ``upcasting`` <- ``projector`` <-
``run_engine`` <- ``executor``. Only ``run_engine`` and ``executor`` talk to a store.
"""

from .executor import Handler, RunContext, Worker, drive, run_sync
from .lifecycle import RunStatus
from .projector import Anomaly, RunState, UnknownField, advance, initial_state, project
from .run_engine import RunEngine
from .upcasting import Upcaster, UpcasterRegistry

__all__ = [
    "Anomaly",
    "Handler",
    "RunContext",
    "RunEngine",
    "RunState",
    "RunStatus",
    "UnknownField",
    "Upcaster",
    "UpcasterRegistry",
    "Worker",
    "advance",
    "drive",
    "initial_state",
    "project",
    "run_sync",
]

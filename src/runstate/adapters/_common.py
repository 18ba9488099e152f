"""Logic the Python-side adapters share (PostgreSQL does the same inside its SQL)."""

from __future__ import annotations

from ..types import RunBootstrapInput, RunMetadata, same_run_identity


def unique_first_event_ids(request: RunBootstrapInput) -> list[str]:
    """The ids a bootstrap stores: its first events' ids, duplicates dropped, in order."""
    return list(dict.fromkeys(event.event_id for event in request.first_events))


def is_same_bootstrap(
    request: RunBootstrapInput, stored: RunMetadata, stored_first_ids: list[str]
) -> bool:
    """Tell whether a stored run came from ``request``: same metadata and first event ids.

    ``stored_first_ids`` are the ids of the run's first stored events, as many as
    ``unique_first_event_ids(request)`` holds. A retry after an ambiguous commit matches;
    a different request for the same run id does not.
    """
    return (
        same_run_identity(request.metadata, stored)
        and unique_first_event_ids(request) == stored_first_ids
    )

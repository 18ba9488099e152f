"""The exception hierarchy: one root, a stable machine-readable ``code`` on every class."""

from __future__ import annotations


class RunStateError(Exception):
    """Root of every error runstate raises on purpose."""

    code: str = "RUNSTATE_ERROR"


class RunAlreadyExists(RunStateError):
    """``bootstrap_run_tx`` found metadata for the run id already stored.

    ``same_request`` tells, where the store could decide it, whether the stored run was
    created by an identical request (same metadata and first event ids): the typical
    outcome of a retry after an ambiguous commit. ``None`` means it was not checked.
    """

    code = "RUN_ALREADY_EXISTS"

    def __init__(self, run_id: str, *, same_request: bool | None = None) -> None:
        self.run_id = run_id
        self.same_request = same_request
        detail = ""
        if same_request is True:
            detail = " (created by an identical earlier request)"
        elif same_request is False:
            detail = " (created by a different request)"
        super().__init__(f"run {run_id!r} already exists{detail}")


class RunNotFound(RunStateError):
    """The run id has no metadata in the store."""

    code = "RUN_NOT_FOUND"

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id!r} not found")


class ConcurrencyConflict(RunStateError):
    """An append's ``expected_seq`` did not match the run's last seq; nothing was written."""

    code = "CONCURRENCY_CONFLICT"

    def __init__(self, run_id: str, *, expected_seq: int, actual_seq: int) -> None:
        self.run_id = run_id
        self.expected_seq = expected_seq
        self.actual_seq = actual_seq
        super().__init__(
            f"run {run_id!r}: expected last seq {expected_seq}, but it is {actual_seq}"
        )


class InvalidInput(RunStateError):
    """The caller passed something the store refuses; nothing was written."""

    code = "INVALID_INPUT"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class StoreClosed(InvalidInput):
    """The store object was closed; open a new one."""

    def __init__(self, message: str = "the store is closed") -> None:
        super().__init__(message, field="store")


class StoreUnavailable(RunStateError):
    """The database could not be reached or was lost; ``retryable`` says whether to try again."""

    code = "STORE_UNAVAILABLE"

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message)


class UnreadableRecord(RunStateError):
    """A stored row cannot be read back as runstate's values; that row's problem alone.

    Raised by reads of one run (``list_events``, ``get_run_metadata_by_run_id``) when the
    run's metadata or one of its events cannot be decoded: written by an older version that
    accepted values outside today's limits, or changed outside runstate. Store-wide reads
    (``list_runs``, ``read_feed``) skip such a row and log this error on the
    ``runstate.store`` logger; the outbox dead-letters its record. ``seq`` is ``None`` when
    the run's metadata is the unreadable row.
    """

    code = "UNREADABLE_RECORD"

    def __init__(self, run_id: str, *, reason: str, seq: int | None = None) -> None:
        self.run_id = run_id
        self.seq = seq
        self.reason = reason
        what = "metadata" if seq is None else f"event #{seq}"
        super().__init__(f"run {run_id!r}: stored {what} cannot be read: {reason}")


class InvalidTransition(RunStateError):
    """The engine refused an event that is illegal from the run's current status."""

    code = "INVALID_TRANSITION"

    def __init__(self, run_id: str, *, from_status: str, event_type: str) -> None:
        self.run_id = run_id
        self.from_status = from_status
        self.event_type = event_type
        super().__init__(f"run {run_id!r}: {event_type} is not allowed from status {from_status}")


class SinkError(RunStateError):
    """A delivery to a sink failed; ``permanent`` failures are dead-lettered, others retried.

    ``retry_after`` is the receiver's hint, in seconds, of when to try again.
    """

    code = "SINK_ERROR"
    permanent = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class PermanentDeliveryError(SinkError):
    """A delivery that can never succeed as it is (e.g. HTTP 400): dead-letter it."""

    code = "PERMANENT_DELIVERY_ERROR"
    permanent = True


class RunCancelledError(RunStateError):
    """Raised inside an executor's handler at a step boundary once its run is being cancelled."""

    code = "RUN_CANCELLED"

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(run_id)

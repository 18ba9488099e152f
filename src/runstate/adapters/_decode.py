"""Reading stored rows back, one row's failure kept to that row.

A row may hold what runstate's values cannot: a timestamp outside the datetime range or a
document that is not JSON, written by an older version that accepted more, or changed outside
runstate. Such a row is that row's problem (``UnreadableRecord``): a read of its run raises
it, a store-wide read skips the row and logs it on the ``runstate.store`` logger, and the
outbox dead-letters its record. It never ends a read of other runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ..errors import UnreadableRecord
from ..types import JSON

R = TypeVar("R")
T = TypeVar("T")

logger = logging.getLogger("runstate.store")

#: What decoding a damaged row can raise: bad JSON text (a ValueError), an int past Python's
#: digit limit (ValueError), a date past year 9999 (OverflowError), a value of the wrong type.
DECODE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    OverflowError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    RecursionError,
)
_MAX_REASON = 300
_loads = json.loads


def reason(exc: BaseException) -> str:
    """A short description of why a row could not be decoded."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


def load_payload(text: str) -> dict[str, JSON]:
    """Decode an event payload: a JSON object."""
    value = _loads(text)
    if type(value) is not dict:
        raise ValueError(f"the payload is a JSON {type(value).__name__}, not an object")
    return value


def load_labels(text: str) -> dict[str, str]:
    """Decode run labels: a JSON object of strings."""
    value = _loads(text)
    if type(value) is not dict or not all(type(v) is str for v in value.values()):
        raise ValueError("the labels are not a JSON object of strings")
    return value


def report(problem: UnreadableRecord, outcome: str = "left out of this read") -> None:
    """Log a row that a store-wide read left out (or, as ``outcome`` says, set aside)."""
    logger.warning("%s (%s); %s", problem, problem.code, outcome)


def decode_rows(
    rows: Iterable[R],
    decode: Callable[[R], T],
    problem: Callable[[R, Exception], UnreadableRecord],
    *,
    skip: bool,
) -> list[T]:
    """Decode every row; an undecodable one raises its ``UnreadableRecord``, or is left out
    and reported with ``skip`` (store-wide reads). ``rows`` must be fully fetched already:
    a cursor left open by a failure would hold its snapshot."""
    if not isinstance(rows, list):
        rows = list(rows)
    try:
        return [decode(row) for row in rows]
    except DECODE_ERRORS:
        pass  # find the rows at fault, one by one (rare: only on damaged data)
    decoded: list[T] = []
    for row in rows:
        try:
            decoded.append(decode(row))
        except DECODE_ERRORS as exc:
            unreadable = problem(row, exc)
            if not skip:
                raise unreadable from exc
            report(unreadable)
    return decoded


def decode_one(row: Any, decode: Callable[[Any], T], run_id: str, seq: int | None = None) -> T:
    """Decode the row of one run's read; raise ``UnreadableRecord`` naming it on failure."""
    try:
        return decode(row)
    except DECODE_ERRORS as exc:
        raise UnreadableRecord(run_id, seq=seq, reason=reason(exc)) from exc

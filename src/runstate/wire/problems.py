"""RFC 9457 problem documents: runstate errors to problems (server) and back (adapter).

Every problem carries the error's stable ``code`` and its fields, so that the adapter raises
the very exception class, with the very fields, that the store raised on the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import (
    ConcurrencyConflict,
    InvalidInput,
    InvalidTransition,
    RunAlreadyExists,
    RunNotFound,
    RunStateError,
    StoreUnavailable,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"

_STATUS_BY_CODE = {
    "INVALID_INPUT": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "RUN_NOT_FOUND": 404,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "RUN_ALREADY_EXISTS": 409,
    "CONCURRENCY_CONFLICT": 409,
    "INVALID_TRANSITION": 409,
    "BODY_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "INTERNAL_ERROR": 500,
    "NOT_IMPLEMENTED": 501,
    "STORE_UNAVAILABLE": 503,
}

_TITLES = {
    "INVALID_INPUT": "Invalid input",
    "UNAUTHORIZED": "Missing or unknown bearer token",
    "FORBIDDEN": "The token's scope does not allow this",
    "RUN_NOT_FOUND": "Run not found",
    "NOT_FOUND": "No such route",
    "METHOD_NOT_ALLOWED": "Method not allowed",
    "RUN_ALREADY_EXISTS": "Run already exists",
    "CONCURRENCY_CONFLICT": "Concurrency conflict",
    "INVALID_TRANSITION": "Invalid transition",
    "BODY_TOO_LARGE": "Request body too large",
    "UNSUPPORTED_MEDIA_TYPE": "Unsupported media type",
    "INTERNAL_ERROR": "Internal server error",
    "NOT_IMPLEMENTED": "Not implemented by this store",
    "STORE_UNAVAILABLE": "Store unavailable",
}

PROBLEM_CODES = tuple(_STATUS_BY_CODE)


class AccessDenied(InvalidInput):
    """The server refused the token: missing or unknown (401) or of too small a scope (403).

    ``code`` is ``UNAUTHORIZED`` or ``FORBIDDEN``; the token itself never appears in it.
    """

    code = "UNAUTHORIZED"

    def __init__(self, message: str, *, code: str = "UNAUTHORIZED") -> None:
        super().__init__(message, field="token")
        self.code = code


def status_for_code(code: str) -> int:
    """The HTTP status of a problem code."""
    return _STATUS_BY_CODE.get(code, 500)


def problem_document(
    code: str, detail: str, *, instance: str | None = None, **fields: Any
) -> dict[str, Any]:
    """Build a problem document for ``code``; ``fields`` become extension members."""
    document: dict[str, Any] = {
        "type": f"urn:runstate:problem:{code.lower().replace('_', '-')}",
        "title": _TITLES.get(code, code),
        "status": status_for_code(code),
        "code": code,
        "detail": detail,
    }
    if instance is not None:
        document["instance"] = instance
    document.update(fields)
    return document


def error_fields(exc: RunStateError) -> dict[str, Any]:
    """Return the fields of a runstate error, as problem extension members."""
    if isinstance(exc, RunAlreadyExists):
        return {"run_id": exc.run_id, "same_request": exc.same_request}
    if isinstance(exc, RunNotFound):
        return {"run_id": exc.run_id}
    if isinstance(exc, ConcurrencyConflict):
        return {
            "run_id": exc.run_id,
            "expected_seq": exc.expected_seq,
            "actual_seq": exc.actual_seq,
        }
    if isinstance(exc, InvalidTransition):
        return {
            "run_id": exc.run_id,
            "from_status": str(exc.from_status),
            "event_type": exc.event_type,
        }
    if isinstance(exc, InvalidInput):
        return {"field": exc.field}
    if isinstance(exc, StoreUnavailable):
        return {"retryable": exc.retryable}
    return {}


def error_from_problem(status: int, document: Mapping[str, Any]) -> RunStateError:
    """Rebuild the runstate error a problem document describes."""
    code = document.get("code")
    detail = str(document.get("detail") or document.get("title") or f"HTTP {status}")
    try:
        error = _rebuild(code, detail, document)
    except (KeyError, TypeError, ValueError):
        error = None
    if error is not None:
        return error
    if status >= 500:
        return StoreUnavailable(f"server error {status}: {detail}", retryable=True)
    return InvalidInput(f"refused by the server ({status}): {detail}", field=None)


def _rebuild(code: object, detail: str, document: Mapping[str, Any]) -> RunStateError | None:
    if code == "RUN_ALREADY_EXISTS":
        return RunAlreadyExists(document["run_id"], same_request=document.get("same_request"))
    if code == "RUN_NOT_FOUND":
        return RunNotFound(document["run_id"])
    if code == "CONCURRENCY_CONFLICT":
        return ConcurrencyConflict(
            document["run_id"],
            expected_seq=int(document["expected_seq"]),
            actual_seq=int(document["actual_seq"]),
        )
    if code == "INVALID_TRANSITION":
        return InvalidTransition(
            document["run_id"],
            from_status=document["from_status"],
            event_type=document["event_type"],
        )
    if code == "INVALID_INPUT" or code == "BODY_TOO_LARGE" or code == "UNSUPPORTED_MEDIA_TYPE":
        field = document.get("field")
        prefix = f"{field}: "
        message = detail[len(prefix) :] if field and detail.startswith(prefix) else detail
        return InvalidInput(message, field=field if isinstance(field, str) else None)
    if code == "UNAUTHORIZED" or code == "FORBIDDEN":
        return AccessDenied(detail, code=code)
    if code == "STORE_UNAVAILABLE":
        return StoreUnavailable(detail, retryable=bool(document.get("retryable", True)))
    return None

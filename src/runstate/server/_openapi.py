"""The OpenAPI 3.1 document, derived from the operation table and the component schemas."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..wire.problems import PROBLEM_MEDIA_TYPE, status_for_code
from ._auth import Scope
from ._router import Operation
from ._schemas import component_schemas

_DESCRIPTION = (
    "The runstate store (IRunStateStore: bootstrapRunTx, appendAndEnqueueTx, listEvents, "
    "getRunMetadataByRunId), its run engine, its catalog and its outbox over HTTP. Errors are "
    "RFC 9457 problem documents with a stable `code`. Bearer tokens carry a scope: "
    "read < write < admin."
)

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No content",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _parameters(operation: Operation) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": segment[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for segment in operation.path.split("/")
        if segment.startswith("{")
    ]
    for param in operation.params:
        document: dict[str, Any] = {
            "name": param.name,
            "in": param.where,
            "required": param.required,
            "schema": param.schema,
        }
        if param.description:
            document["description"] = param.description
        if param.schema.get("type") == "array":
            document["style"], document["explode"] = "form", True
        parameters.append(document)
    return parameters


def _responses(operation: Operation, tokens: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": _STATUS_TEXT.get(operation.ok_status, "OK")}
    if operation.ok is not None:
        ok["content"] = {operation.ok_media_type: {"schema": _ref(operation.ok)}}
    responses: dict[str, Any] = {str(operation.ok_status): ok}
    codes = list(operation.errors)
    if operation.scope is not None:
        codes += ["UNAUTHORIZED", "FORBIDDEN"] if tokens else ["FORBIDDEN"]
    codes += ["STORE_UNAVAILABLE", "NOT_IMPLEMENTED"]
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(status_for_code(code), []).append(code)
    for status, names in sorted(by_status.items()):
        responses[str(status)] = {
            "description": ", ".join(dict.fromkeys(names)),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": _ref("Problem")}},
        }
    return responses


def _operation(operation: Operation, tokens: bool) -> dict[str, Any]:
    document: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "parameters": _parameters(operation),
        "responses": _responses(operation, tokens),
    }
    if operation.description:
        document["description"] = operation.description
    if operation.body is not None:
        document["requestBody"] = {
            "required": operation.body_required,
            "content": {"application/json": {"schema": _ref(operation.body)}},
        }
    if operation.scope is None:
        document["security"] = []
    else:
        document["x-runstate-scope"] = operation.scope.name.lower()
    return document


def openapi_document(
    operations: Iterable[Operation], *, version: str, tokens: bool
) -> dict[str, Any]:
    """Build the OpenAPI 3.1 document of ``operations``."""
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(
            operation, tokens
        )
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "runstate", "version": version, "description": _DESCRIPTION},
        "paths": paths,
        "components": {"schemas": component_schemas()},
        "tags": [
            {"name": "store", "description": "The store contract: bootstrap, append, reads."},
            {
                "name": "engine",
                "description": "Lifecycle commands; Idempotency-Key makes retries safe.",
            },
            {"name": "catalog", "description": "Store-wide reads and the commit-safe feed."},
            {"name": "live", "description": "Server-Sent Events."},
            {
                "name": "outbox",
                "description": "Outbox status (read) and the relay's operations (admin).",
            },
            {"name": "operations", "description": "Health, readiness, metrics, this document."},
        ],
    }
    if tokens:
        document["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A token of scope read, write or admin ("
                + ", ".join(s.name.lower() for s in Scope)
                + ", each including the ones before it).",
            }
        }
        document["security"] = [{"bearer": []}]
    return document

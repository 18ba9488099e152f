"""The SQLite adapter's run queries: ``query_runs`` and ``count_runs_by_status`` over the
summary columns of ``runstate_runs``.

The statement is assembled from fixed fragments, one per filter given, and every value is a
bound parameter. With one status, ``status = ?`` and the order by ``created_at`` make the
first page a range scan of ``runstate_runs_status_created``.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ...errors import UnreadableRecord
from .._catalog import RunQuery, count_template
from .._decode import decode_rows, reason
from ._connect import to_us
from ._ops import summary_from_row

_COLUMNS = (
    "r.run_id, r.workflow, r.workflow_version, r.tenant_id, r.parent_run_id, r.input, "
    "r.labels, r.created_at, r.schema_version, r.last_seq, r.updated_at, r.status, "
    "r.attempt, r.started_at, r.finished_at"
)
_ORDER_COLUMNS = {
    "created_at": "r.created_at",
    "updated_at": "r.updated_at",
    "workflow": "r.workflow",
    "status": "r.status",
}


def _where(query: RunQuery, *, with_statuses: bool = True) -> tuple[list[str], list[Any]]:
    """The filter's conditions (AND-ed) and their parameters."""
    conditions: list[str] = []
    params: list[Any] = []
    statuses = query.statuses if with_statuses else None
    if statuses is not None:
        if len(statuses) == 1:
            conditions.append("r.status = ?")
        else:
            # An empty list matches nothing, as an empty IN () does.
            conditions.append(f"r.status IN ({', '.join('?' * len(statuses)) or 'NULL'})")
        params.extend(statuses)
    if query.exclude_statuses:
        conditions.append(f"r.status NOT IN ({', '.join('?' * len(query.exclude_statuses))})")
        params.extend(query.exclude_statuses)
    for column, value in (("r.workflow", query.workflow), ("r.tenant_id", query.tenant_id)):
        if value is not None:
            conditions.append(f"{column} = ?")
            params.append(value)
    if query.created_after is not None:
        conditions.append("r.created_at >= ?")
        params.append(to_us(query.created_after))
    if query.created_before is not None:
        conditions.append("r.created_at < ?")
        params.append(to_us(query.created_before))
    if query.run_id_prefix is not None:
        conditions.append("substr(r.run_id, 1, length(?)) = ?")
        params.extend((query.run_id_prefix, query.run_id_prefix))
    for key, value in query.labels:
        # json_extract on a JSON-quoted key path: labels keys may hold any printable text.
        conditions.append("json_extract(r.labels, ?) = ?")
        params.extend((f"$.{json.dumps(key)}", value))
    return conditions, params


def query_runs(connection: sqlite3.Connection, query: RunQuery) -> list[Any]:
    """Up to ``limit + 1`` summaries matching ``query`` after its cursor, in its order."""
    conditions, params = _where(query)
    column = _ORDER_COLUMNS[query.order_by]
    direction = "DESC" if query.descending else "ASC"
    if query.after is not None:
        key, run_id = query.after
        if query.order_by in ("created_at", "updated_at"):
            key = to_us(key)
        conditions.append(f"({column}, r.run_id) {'<' if query.descending else '>'} (?, ?)")
        params.extend((key, run_id))
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = (
        f"SELECT {_COLUMNS} FROM runstate_runs AS r {where} "  # noqa: S608 (fixed fragments)
        f"ORDER BY {column} {direction}, r.run_id {direction} LIMIT ?"
    )
    params.append(query.limit + 1)
    rows = connection.execute(sql, params).fetchall()
    return decode_rows(
        rows,
        summary_from_row,
        lambda row, exc: UnreadableRecord(row[0], reason=reason(exc)),
        skip=True,
    )


def count_runs(connection: sqlite3.Connection, query: RunQuery) -> dict[str, int]:
    """How many runs pass ``query`` per status; its ``statuses`` are ignored."""
    conditions, params = _where(query, with_statuses=False)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = f"SELECT r.status, count(*) FROM runstate_runs AS r {where} GROUP BY r.status"  # noqa: S608
    counts = count_template()
    for status, count in connection.execute(sql, params):
        if status in counts:
            counts[status] = count
    return counts

"""The PostgreSQL adapter's run queries: ``query_runs`` and ``count_runs_by_status`` over
``run_summaries`` (kept by the trigger of migration 0009), and ``list_dead_letters``.

The statement is assembled from fixed fragments, one per filter given, and every value is a
bound parameter; the schema is the store's validated, quoted name, as in ``queries.sql``.
With one status, ``status = $1`` and the order by ``created_at`` make the first page a range
scan of ``run_summaries_status_created``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..._validation import check_run_filters
from ...errors import UnreadableRecord
from ...types import DeadLetter, RunFilter, RunListPage, RunOrder, RunSummary
from .._catalog import (
    RunQuery,
    check_dead_letter_page,
    check_run_filter,
    check_run_query,
    count_template,
    page_of,
)
from .._decode import decode_rows, reason
from ._config import quote_ident
from ._rows import event_from_row, summaries_from_rows, utc_column

_COLUMNS = (
    "m.run_id, m.workflow, m.workflow_version, m.tenant_id, m.parent_run_id, m.input, "
    "m.labels, m.created_at, m.schema_version, s.last_seq, s.updated_at, s.status, "
    "s.attempt, s.started_at, s.finished_at"
)
_ORDER_COLUMNS = {
    "created_at": "s.created_at",
    "updated_at": "s.updated_at",
    "workflow": "s.workflow",
    "status": "s.status",
}


def _where(query: RunQuery, *, with_statuses: bool = True) -> tuple[list[str], list[Any]]:
    """The filter's conditions (AND-ed) and their parameters, numbered from $1."""
    conditions: list[str] = []
    params: list[Any] = []

    def bind(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    statuses = query.statuses if with_statuses else None
    if statuses is not None:
        if len(statuses) == 1:
            conditions.append(f"s.status = {bind(statuses[0])}")
        else:
            conditions.append(f"s.status = ANY({bind(list(statuses))}::text[])")
    if query.exclude_statuses:
        conditions.append(f"s.status <> ALL({bind(list(query.exclude_statuses))}::text[])")
    if query.workflow is not None:
        conditions.append(f"s.workflow = {bind(query.workflow)}")
    if query.tenant_id is not None:
        conditions.append(f"s.tenant_id = {bind(query.tenant_id)}")
    if query.created_after is not None:
        conditions.append(f"s.created_at >= {bind(query.created_after)}")
    if query.created_before is not None:
        conditions.append(f"s.created_at < {bind(query.created_before)}")
    if query.run_id_prefix is not None:
        conditions.append(f"starts_with(s.run_id, {bind(query.run_id_prefix)})")
    if query.labels:
        conditions.append(f"m.labels::jsonb @> {bind(json.dumps(dict(query.labels)))}::jsonb")
    return conditions, params


def query_sql(schema: str, query: RunQuery) -> tuple[str, list[Any]]:
    """The statement of one ``query_runs`` page (``limit + 1`` rows) and its parameters."""
    conditions, params = _where(query)
    column = _ORDER_COLUMNS[query.order_by]
    direction = "DESC" if query.descending else "ASC"
    if query.after is not None:
        key, run_id = query.after
        params.extend((key, run_id))
        compare = "<" if query.descending else ">"
        conditions.append(f"({column}, s.run_id) {compare} (${len(params) - 1}, ${len(params)})")
    params.append(query.limit + 1)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    quoted = quote_ident(schema)
    order = f"ORDER BY {column} {direction}, s.run_id {direction}"
    # The page is cut from run_summaries alone, then joined: with the join in the same query
    # level the planner reads every run of the status and sorts them (seconds at a million
    # runs); this way the first page is a range scan of the status index. Labels live on
    # run_metadata, so a label filter joins it inside as well. The join compares in
    # run_metadata's collation so that its primary key serves the lookups (a "C" = default
    # comparison has no collation an index can use, and becomes a hash join over every run).
    on = 'ON m.run_id = (s.run_id COLLATE "default")'
    join = f"JOIN {quoted}.run_metadata AS m {on} " if query.labels else ""
    sql = (
        f"SELECT {_COLUMNS} FROM (SELECT s.* FROM {quoted}.run_summaries AS s "  # noqa: S608
        f"{join}{where} {order} LIMIT ${len(params)}) AS s "
        f"JOIN {quoted}.run_metadata AS m {on} {order}"
    )
    return sql, params


def count_sql(schema: str, query: RunQuery) -> tuple[str, list[Any]]:
    """The statement counting the runs of ``query`` per status (its statuses ignored)."""
    conditions, params = _where(query, with_statuses=False)
    quoted = quote_ident(schema)
    on = 'ON m.run_id = (s.run_id COLLATE "default")'  # see query_sql
    join = f"JOIN {quoted}.run_metadata AS m {on} " if query.labels else ""
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = (
        f"SELECT s.status, count(*) AS n FROM {quoted}.run_summaries AS s "  # noqa: S608
        f"{join}{where} GROUP BY s.status"
    )
    return sql, params


def dead_letter_from_row(row: Mapping[str, Any]) -> DeadLetter:
    """Build a dead letter from a row of the ``dead_letters`` query."""
    dead_at = row["dead_at"]
    return DeadLetter(
        outbox_id=row["outbox_id"],
        event=event_from_row(row),
        workflow=row["workflow"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        dead_at=None if dead_at is None else utc_column(dead_at),
    )


class RunQueries:
    """The catalog reads of ``PostgresStore``: run queries and lists, dead letters, the store id."""

    if TYPE_CHECKING:
        _q: Mapping[str, str]

        @property
        def schema(self) -> str: ...

        def _check_open(self) -> None: ...

        async def _read(
            self, action: str, sql: str, *args: Any, replica: bool = False
        ) -> list[Any]: ...

    async def query_runs(
        self,
        filter: RunFilter | None = None,
        *,
        order_by: RunOrder = "created_at",
        descending: bool = True,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunListPage:
        """Return one page of run summaries matching the filter (keyset paging, ties by run_id)."""
        self._check_open()
        query = check_run_query(filter, order_by, descending, limit, cursor)
        sql, params = query_sql(self.schema, query)
        rows = summaries_from_rows(await self._read("query_runs", sql, *params, replica=True))
        runs, next_cursor = page_of(query, rows)
        return RunListPage(runs=runs, next_cursor=next_cursor)

    async def count_runs_by_status(self, filter: RunFilter | None = None) -> Mapping[str, int]:
        """Return how many runs match the filter per status (the filter's statuses ignored)."""
        self._check_open()
        sql, params = count_sql(self.schema, check_run_filter(filter))
        counts = count_template()
        for row in await self._read("count_runs_by_status", sql, *params, replica=True):
            if row["status"] in counts:
                counts[row["status"]] = row["n"]
        return counts

    async def list_dead_letters(
        self, *, run_id: str | None = None, limit: int = 100, after_outbox_id: int | None = None
    ) -> list[DeadLetter]:
        """Return dead-lettered records oldest first, with their last error and attempts."""
        self._check_open()
        check_dead_letter_page(run_id, limit, after_outbox_id)
        args = (after_outbox_id or 0, run_id, limit)
        rows = await self._read("list_dead_letters", self._q["dead_letters"], *args)
        return decode_rows(
            rows,
            dead_letter_from_row,
            lambda row, exc: UnreadableRecord(row["run_id"], seq=row["seq"], reason=reason(exc)),
            skip=True,
        )

    async def list_runs(
        self,
        *,
        workflow: str | None = None,
        tenant_id: str | None = None,
        created_after: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunSummary]:
        """Return runs newest first (``created_at``, then ``run_id``, descending)."""
        self._check_open()
        check_run_filters(workflow, tenant_id, created_after, limit, offset)
        args = (workflow, tenant_id, created_after, limit, offset)
        rows = await self._read("list_runs", self._q["list_runs"], *args, replica=True)
        return summaries_from_rows(rows)

    async def store_id(self) -> str:
        """Return the id generated when this store's schema was created."""
        self._check_open()
        (row,) = await self._read("store_id", self._q["store_id"])
        return str(row[0])

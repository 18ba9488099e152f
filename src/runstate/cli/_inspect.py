"""Commands that look inside a store: runs list/show, events, tail."""

from __future__ import annotations

import asyncio
from typing import Any

import typer
from rich.table import Table

from .._open import open_store
from ..engine import RunStatus, project
from ..errors import InvalidInput, RunNotFound
from ..store import OutboxStore, RunCatalog, RunStateStore
from ..types import RunEventPersisted, RunFilter, RunSummary
from ._common import (
    JsonOption,
    UrlOption,
    console,
    format_time,
    parse_since,
    print_json,
    run_async,
    short_json,
)

runs_app = typer.Typer(help="List and inspect runs.", no_args_is_help=True)

FOLLOW_POLL_SECONDS = 0.25


def _catalog(store: RunStateStore) -> RunCatalog:
    if not isinstance(store, RunCatalog):
        raise InvalidInput(f"{type(store).__name__} cannot list runs")
    return store


def _parse_labels(items: list[str] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(
                f"--label {item[:60]!r}: expected a key, '=' and a value", field="labels"
            )
        if key in labels:
            raise InvalidInput(f"--label {key[:40]!r} given twice", field="labels")
        labels[key] = value
    return labels


@runs_app.command("list")
@run_async
async def runs_list(
    url: str = UrlOption,
    status: list[RunStatus] | None = typer.Option(None, "--status", help="Only these statuses."),  # noqa: B008
    exclude_status: list[RunStatus] | None = typer.Option(  # noqa: B008
        None, "--exclude-status", help="Not these statuses."
    ),
    workflow: str | None = typer.Option(None, help="Only runs of this workflow."),
    tenant: str | None = typer.Option(None, help="Only runs of this tenant."),
    label: list[str] | None = typer.Option(  # noqa: B008
        None, "--label", help="key=value: only runs with this label (repeat: all must match)."
    ),
    since: str | None = typer.Option(None, help="Created after: 15m, 2h, 7d or ISO time."),
    created_before: str | None = typer.Option(
        None, "--created-before", help="Created before: 15m, 2h, 7d (ago) or ISO time."
    ),
    run_id_prefix: str | None = typer.Option(
        None, "--run-id-prefix", help="Only runs whose id starts with this."
    ),
    limit: int = typer.Option(20, min=1, help="Runs per page."),
    page: int = typer.Option(1, min=1, help="Page number (newest first)."),
    as_json: bool = JsonOption,
) -> None:
    """List runs, newest first, with their status, from the stores' indexed run summaries."""
    # Everything is checked before the store is opened, so bad input writes or reads nothing.
    filter = RunFilter(
        statuses=frozenset(s.value for s in status or []),
        exclude_statuses=frozenset(s.value for s in exclude_status or []),
        workflow=workflow,
        tenant_id=tenant,
        labels=_parse_labels(label),
        created_after=parse_since(since),
        created_before=parse_since(created_before, "--created-before"),
        run_id_prefix=run_id_prefix,
    )
    rows: tuple[RunSummary, ...] = ()
    async with open_store(url) as store:
        catalog = _catalog(store)
        cursor: str | None = None
        # Page N is reached by following N-1 keyset cursors: each step is one index range.
        for number in range(1, page + 1):
            result = await catalog.query_runs(filter, limit=limit, cursor=cursor)
            rows, cursor = result.runs, result.next_cursor
            if cursor is None and number < page:
                rows = ()
                break
    if as_json:
        print_json(
            [
                {
                    "run_id": s.metadata.run_id,
                    "workflow": s.metadata.workflow,
                    "tenant_id": s.metadata.tenant_id,
                    "status": s.status,
                    "attempt": s.attempt,
                    "last_seq": s.last_seq,
                    "created_at": s.metadata.created_at,
                    "updated_at": s.updated_at,
                    "started_at": s.started_at,
                    "finished_at": s.finished_at,
                }
                for s in rows
            ]
        )
        return
    _print_runs(rows, page)


def _print_runs(rows: tuple[RunSummary, ...], page: int) -> None:
    if not rows:
        console.print("no runs match")
        return
    table = Table(
        title=f"runs (page {page}, times UTC)",
        title_justify="left",
        box=None,
        header_style="bold underline",
        padding=(0, 2, 0, 0),
        pad_edge=False,
    )
    # Ids and statuses are what people copy and scan for: never cut them short.
    longest_id = max(len(summary.metadata.run_id) for summary in rows)
    table.add_column("run id", no_wrap=True, min_width=longest_id)
    for column in ("workflow", "tenant"):
        table.add_column(column, no_wrap=True)
    table.add_column("status", no_wrap=True, min_width=10)
    for column in ("attempt", "events", "created", "updated"):
        table.add_column(column, no_wrap=True)
    for summary in rows:
        metadata = summary.metadata
        table.add_row(
            metadata.run_id,
            metadata.workflow,
            metadata.tenant_id or "-",
            summary.status,
            str(summary.attempt),
            str(summary.last_seq),
            format_time(metadata.created_at, precise=False),
            format_time(summary.updated_at, precise=False),
        )
    console.print(table)


@runs_app.command("show")
@run_async
async def runs_show(
    run_id: str = typer.Argument(..., help="The run to show."),
    url: str = UrlOption,
    as_json: bool = JsonOption,
) -> None:
    """Show a run's metadata, projected state and event timeline."""
    async with open_store(url) as store:
        metadata = await store.get_run_metadata_by_run_id(run_id)
        if metadata is None:
            raise RunNotFound(run_id)
        events = await store.list_events(run_id)
    state = project(metadata, events)
    if as_json:
        print_json({"metadata": metadata, "state": state, "events": events})
        return
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    for label, value in (
        ("run id", metadata.run_id),
        ("workflow", f"{metadata.workflow} {metadata.workflow_version or ''}".strip()),
        ("tenant", metadata.tenant_id or "-"),
        ("parent", metadata.parent_run_id or "-"),
        ("status", state.status.value),
        ("attempt", str(state.attempt)),
        ("created", format_time(metadata.created_at)),
        ("started", format_time(state.started_at)),
        ("finished", format_time(state.finished_at)),
        ("input", short_json(metadata.input, 100)),
        ("labels", short_json(metadata.labels, 100)),
        ("output", short_json(state.output, 100)),
        ("error", short_json(state.error, 100)),
    ):
        summary.add_row(label, value)
    console.print(summary)
    console.print(_timeline(events))


def _timeline(events: list[RunEventPersisted]) -> Table:
    table = Table(title="events", title_justify="left")
    for column in ("seq", "recorded", "type", "payload"):
        table.add_column(column)
    for event in events:
        table.add_row(
            str(event.seq), format_time(event.recorded_at), event.type, short_json(event.payload)
        )
    return table


def _event_json(event: RunEventPersisted) -> dict[str, Any]:
    return {
        "run_id": event.run_id,
        "seq": event.seq,
        "position": event.position,
        "type": event.type,
        "event_id": event.event_id,
        "schema_version": event.schema_version,
        "occurred_at": event.occurred_at,
        "recorded_at": event.recorded_at,
        "payload": event.payload,
    }


def _print_event(event: RunEventPersisted, as_json: bool, *, with_run: bool) -> None:
    if as_json:
        print_json(_event_json(event))
        return
    run = f"{event.run_id}  " if with_run else ""
    console.print(
        f"{format_time(event.recorded_at)}  {run}#{event.seq}  {event.type}  "
        f"{short_json(event.payload)}",
        markup=False,
    )


async def _wait_for_writes(store: RunStateStore, seconds: float) -> None:
    # The outbox wake-up fires on every write; plain polling covers stores without it.
    if isinstance(store, OutboxStore):
        await store.wait_for_outbox(seconds)
    else:
        await asyncio.sleep(seconds)


def events_command(
    run_id: str = typer.Argument(..., help="The run whose events to print."),
    url: str = UrlOption,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events."),
    as_json: bool = JsonOption,
) -> None:
    """Print a run's events in seq order (JSON lines with --json)."""
    run_async(_events)(run_id, url, follow, as_json)


async def _events(run_id: str, url: str, follow: bool, as_json: bool) -> None:
    async with open_store(url) as store:
        if await store.get_run_metadata_by_run_id(run_id) is None:
            raise RunNotFound(run_id)
        last_seq = 0
        while True:
            page = await store.list_events(run_id, after_seq=last_seq, limit=500)
            for event in page:
                _print_event(event, as_json, with_run=False)
            if page:
                last_seq = page[-1].seq
                continue
            if not follow:
                return
            await _wait_for_writes(store, FOLLOW_POLL_SECONDS)


def tail_command(
    url: str = UrlOption,
    from_start: bool = typer.Option(False, "--from-start", help="Print stored events first."),
    as_json: bool = JsonOption,
) -> None:
    """Follow every new event of the store, live, in commit-safe position order."""
    run_async(_tail)(url, from_start, as_json)


async def _tail(url: str, from_start: bool, as_json: bool) -> None:
    async with open_store(url) as store:
        catalog = _catalog(store)
        cursor = None if from_start else await catalog.feed_head()
        while True:
            page = await catalog.read_feed(cursor=cursor, limit=500)
            for event in page.events:
                _print_event(event, as_json, with_run=True)
            cursor = page.cursor
            if not page.events:
                await _wait_for_writes(store, FOLLOW_POLL_SECONDS)

"""``runstate+http://`` and ``runstate+https://``: a store that is a runstate server's HTTP API.

It implements ``RunStateStore``, ``RunCatalog`` and ``OutboxStore`` by calling the API over one
keep-alive connection pool (httpx), and turns problem responses back into the exceptions the
server's store raised, with the same fields. Connection failures, timeouts and 5xx answers are
a retryable ``StoreUnavailable``; a write that timed out may have committed, and retrying a
bootstrap then gets ``RunAlreadyExists`` with ``same_request=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from ..._validation import (
    check_append,
    check_bootstrap,
    check_claim,
    check_failure,
    check_feed_limit,
    check_identifier,
    check_outbox_ids,
    check_page,
    check_purge,
    check_run_filters,
    check_wait_timeout,
)
from ...errors import InvalidInput, RunNotFound, StoreUnavailable
from ...tracing import ENABLED as TRACING
from ...tracing import trace_headers, traced_write
from ...types import (
    AppendResult,
    DeadLetter,
    FeedPage,
    OutboxRecord,
    OutboxStats,
    RunBootstrapInput,
    RunEventInput,
    RunEventPersisted,
    RunFilter,
    RunListPage,
    RunMetadata,
    RunOrder,
    RunSummary,
)
from ...wire.catalog import dead_letter_from_json, run_filter_params
from ...wire.problems import PROBLEM_MEDIA_TYPE, error_from_problem
from ...wire.values import (
    append_result_from_json,
    dumps,
    event_input_json,
    feed_page_from_json,
    loads,
    metadata_json,
    outbox_record_from_json,
    outbox_stats_from_json,
    persisted_from_json,
    stored_metadata_from_json,
    summary_from_json,
)
from .._base import StoreBase
from .._catalog import check_dead_letter_page, check_run_filter, check_run_query

TOKEN_ENV_VAR = "RUNSTATE_API_TOKEN"
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_CONNECTIONS = 100
PAGE_SIZE = 1000
#: Record ids per request: the server takes at most 10,000 at once.
MAX_IDS_PER_CALL = 10_000
MAX_WAIT_CHUNK_SECONDS = 55.0
_JSON_HEADERS = {"Content-Type": "application/json"}
# The payload limit is the server's: here every other rule is checked before sending, and the
# server refuses what is over its limit.
_NO_CLIENT_SIZE_LIMIT = 2**62


def _segment(value: object, field: str) -> str:
    """One percent-encoded path segment; dots too, so no client resolves ``.``/``..``."""
    if type(value) is not str:
        raise InvalidInput(f"must be a string, got {type(value).__name__}", field=field)
    if not value:
        raise InvalidInput("must not be empty", field=field)
    return quote(value, safe="").replace(".", "%2E")


def _encode(document: object) -> bytes:
    try:
        return dumps(document)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"cannot be sent as JSON: {exc}", field="input") from None


class HttpStore(StoreBase):
    """A runstate store reached through a runstate server's HTTP API."""

    def __init__(
        self,
        base_url: str,
        *,
        masked_url: str,
        token: str | None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._masked_url = masked_url
        self._timeout = timeout
        #: The attributes of this store's spans (see ``runstate.tracing``).
        self.trace_attributes = {"db.system.name": "runstate", "db.namespace": masked_url}
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
            trust_env=False,
        )

    def __repr__(self) -> str:
        return f"HttpStore({self._masked_url!r})"

    # -- transport ---------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        params: Mapping[str, str] | list[tuple[str, str]] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON answer (None for 204), or raise."""
        self._check_open()
        content = None if body is None else _encode(body)
        headers = _JSON_HEADERS if content is not None else None
        if TRACING:
            # The server stores the caller's trace with what it writes (runstate.tracing).
            headers = {**(headers or {}), **trace_headers()}
        try:
            response = await self._client.request(
                method,
                path,
                content=content,
                params=_query(params),
                headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else httpx.Timeout(timeout),
            )
        except httpx.TimeoutException:
            raise StoreUnavailable(
                f"{self._masked_url}: no answer in time (a write may have committed)",
                retryable=True,
            ) from None
        except httpx.HTTPError as exc:
            raise StoreUnavailable(
                f"cannot reach {self._masked_url}: {type(exc).__name__}", retryable=True
            ) from None
        status = response.status_code
        if status < 300:
            return None if status == 204 or not response.content else loads(response.content)
        raise self._error(response)

    def _error(self, response: httpx.Response) -> Exception:
        document: object = None
        media = response.headers.get("content-type", "").split(";", 1)[0].strip()
        if media in (PROBLEM_MEDIA_TYPE, "application/json"):
            try:
                document = loads(response.content)
            except InvalidInput:
                document = None
        if not isinstance(document, dict):
            document = {"detail": f"HTTP {response.status_code} from {self._masked_url}"}
        return error_from_problem(response.status_code, document)

    # -- RunStateStore -----------------------------------------------------------------------

    @traced_write("bootstrap_run_tx")
    async def bootstrap_run_tx(self, input: RunBootstrapInput) -> AppendResult:
        """Atomically store a new run's metadata, its first events and their outbox records."""
        self._check_open()
        checked_metadata, checked_events = check_bootstrap(input, _NO_CLIENT_SIZE_LIMIT)
        body = {
            "metadata": metadata_json(checked_metadata.metadata),
            "first_events": [event_input_json(item.event) for item in checked_events],
        }
        return append_result_from_json(await self._call("POST", "/v1/runs", body=body))

    @traced_write("append_and_enqueue_tx")
    async def append_and_enqueue_tx(
        self,
        run_id: str,
        events: Sequence[RunEventInput],
        *,
        expected_seq: int | None = None,
    ) -> AppendResult:
        """Atomically append events to an existing run, with one outbox record per new event."""
        self._check_open()
        checked = check_append(run_id, events, expected_seq, _NO_CLIENT_SIZE_LIMIT)
        path = f"/v1/runs/{_segment(run_id, 'run_id')}/events"
        body = {
            "events": [event_input_json(item.event) for item in checked],
            "expected_seq": expected_seq,
        }
        return append_result_from_json(await self._call("POST", path, body=body))

    async def list_events(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> list[RunEventPersisted]:
        """Return the run's events with ``seq > after_seq`` in seq order, at most ``limit``."""
        self._check_open()
        check_identifier(run_id, "run_id")
        check_page(after_seq, limit)
        path = f"/v1/runs/{_segment(run_id, 'run_id')}/events"
        events: list[RunEventPersisted] = []
        while True:
            want = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(events))
            params = {"after_seq": str(after_seq), "limit": str(want)}
            try:
                page = (await self._call("GET", path, params=params))["events"]
            except RunNotFound:
                return events
            events.extend(persisted_from_json(e) for e in page)
            if len(page) < want or want == 0 or (limit is not None and len(events) >= limit):
                return events
            after_seq = events[-1].seq

    async def get_run_metadata_by_run_id(self, run_id: str) -> RunMetadata | None:
        """Return the run's metadata, or ``None`` if the run does not exist."""
        self._check_open()
        check_identifier(run_id, "run_id")
        path = f"/v1/runs/{_segment(run_id, 'run_id')}/metadata"
        try:
            return stored_metadata_from_json(await self._call("GET", path))
        except RunNotFound:
            return None

    async def _close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    # -- RunCatalog --------------------------------------------------------------------------

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
        filters: dict[str, str] = {}
        if workflow is not None:
            filters["workflow"] = workflow
        if tenant_id is not None:
            filters["tenant_id"] = tenant_id
        if created_after is not None:
            filters["created_after"] = created_after.isoformat()
        runs: list[RunSummary] = []
        while True:
            # The server's pages are bounded: a larger limit is read as several pages.
            want = min(PAGE_SIZE, limit - len(runs))
            params = {**filters, "limit": str(want), "offset": str(offset + len(runs))}
            document = await self._call("GET", "/v1/catalog/runs", params=params)
            page = [summary_from_json(s) for s in document["runs"]]
            runs.extend(page)
            if len(page) < want or want == 0 or len(runs) >= limit:
                return runs

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
        # Checked here too, so that bad arguments fail as on a local store, before any request.
        check_run_query(filter, order_by, descending, limit, cursor)
        params = run_filter_params(filter)
        params += [("order_by", order_by), ("descending", "true" if descending else "false")]
        params.append(("limit", str(limit)))
        if cursor is not None:
            params.append(("cursor", cursor))
        document = await self._call("GET", "/v1/runs", params=params)
        return RunListPage(
            runs=tuple(summary_from_json(s) for s in document["runs"]),
            next_cursor=document["next_cursor"],
        )

    async def count_runs_by_status(self, filter: RunFilter | None = None) -> Mapping[str, int]:
        """Return how many runs match the filter per status (the filter's statuses ignored)."""
        self._check_open()
        check_run_filter(filter)
        document = await self._call(
            "GET", "/v1/catalog/run-counts", params=run_filter_params(filter)
        )
        counts: dict[str, int] = document["counts"]
        return counts

    async def read_feed(self, *, cursor: str | None = None, limit: int = 500) -> FeedPage:
        """Return events of every run committed after ``cursor`` (``None``: from the start)."""
        self._check_open()
        check_feed_limit(limit)
        if cursor is not None and type(cursor) is not str:
            raise InvalidInput(f"not a cursor of this store: {cursor!r}", field="cursor")
        events: list[RunEventPersisted] = []
        while True:
            # The server's pages are bounded: a larger limit is read as several pages.
            want = min(PAGE_SIZE, limit - len(events))
            params = {"limit": str(want)}
            if cursor is not None:
                params["cursor"] = str(cursor)
            page = feed_page_from_json(await self._call("GET", "/v1/feed", params=params))
            events.extend(page.events)
            cursor = page.cursor
            if len(page.events) < want or want == 0 or len(events) >= limit:
                return FeedPage(events=tuple(events), cursor=page.cursor)

    async def feed_head(self) -> str:
        """Return a cursor at the current end of the feed."""
        self._check_open()
        return str((await self._call("GET", "/v1/feed/head"))["cursor"])

    # -- OutboxStore -------------------------------------------------------------------------

    async def list_dead_letters(
        self, *, run_id: str | None = None, limit: int = 100, after_outbox_id: int | None = None
    ) -> list[DeadLetter]:
        """Return dead-lettered records oldest first, with their last error and attempts."""
        self._check_open()
        check_dead_letter_page(run_id, limit, after_outbox_id)
        letters: list[DeadLetter] = []
        after = after_outbox_id or 0
        while True:
            # The server's pages are bounded: a larger limit is read as several pages.
            want = min(PAGE_SIZE, limit - len(letters))
            params = {"limit": str(want), "after_outbox_id": str(after)}
            if run_id is not None:
                params["run_id"] = run_id
            document = await self._call("GET", "/v1/outbox/dead-letters", params=params)
            page = [dead_letter_from_json(d) for d in document["dead_letters"]]
            letters.extend(page)
            if len(page) < want or want == 0 or len(letters) >= limit:
                return letters
            after = page[-1].outbox_id

    async def claim_outbox_batch(
        self, *, owner: str, limit: int, lease_seconds: float
    ) -> list[OutboxRecord]:
        """Lease up to ``limit`` deliverable records to ``owner``, in per-run seq order."""
        self._check_open()
        check_claim(owner, limit, lease_seconds)
        if limit == 0:
            return []
        body = {"owner": owner, "limit": limit, "lease_seconds": lease_seconds}
        document = await self._call("POST", "/v1/outbox/claim", body=body)
        return [outbox_record_from_json(r) for r in document["records"]]

    async def mark_delivered(self, outbox_ids: Sequence[int], *, owner: str) -> int:
        """Record delivery of records leased by ``owner``; return how many were updated."""
        self._check_open()
        ids = check_outbox_ids(outbox_ids, owner)
        updated = 0
        for start in range(0, len(ids), MAX_IDS_PER_CALL):
            body = {"owner": owner, "outbox_ids": ids[start : start + MAX_IDS_PER_CALL]}
            document = await self._call("POST", "/v1/outbox/delivered", body=body)
            updated += int(document["updated"])
        return updated

    async def mark_failed(
        self, outbox_id: int, *, owner: str, error: str, retry_at: datetime | None
    ) -> None:
        """Record a failed delivery: retry at ``retry_at``, or dead-letter when it is ``None``."""
        self._check_open()
        text = check_failure(outbox_id, owner, error, retry_at)
        body = {
            "owner": owner,
            "outbox_id": outbox_id,
            "error": text,
            "retry_at": None if retry_at is None else retry_at.isoformat(),
        }
        await self._call("POST", "/v1/outbox/failed", body=body)

    async def release_outbox(self, outbox_ids: Sequence[int], *, owner: str) -> None:
        """Give back leased records undelivered, without counting an attempt."""
        self._check_open()
        ids = check_outbox_ids(outbox_ids, owner)
        for start in range(0, len(ids), MAX_IDS_PER_CALL):
            body = {"owner": owner, "outbox_ids": ids[start : start + MAX_IDS_PER_CALL]}
            await self._call("POST", "/v1/outbox/release", body=body)

    async def redrive_dead_letters(self, *, run_id: str | None = None) -> int:
        """Make dead-lettered records deliverable again; return how many."""
        self._check_open()
        check_identifier(run_id, "run_id", optional=True)
        document = await self._call("POST", "/v1/outbox/redrive", body={"run_id": run_id})
        return int(document["redriven"])

    async def outbox_stats(self) -> OutboxStats:
        """Summarize the outbox: pending, in flight, dead, delivered, oldest pending."""
        return outbox_stats_from_json(await self._call("GET", "/v1/outbox"))

    async def store_id(self) -> str:
        """Return the id of the server's store."""
        self._check_open()
        body = await self._call("GET", "/v1/outbox/store")
        store_id = body.get("store_id") if isinstance(body, dict) else None
        if type(store_id) is not str or not store_id:
            raise StoreUnavailable("the server sent no store id", retryable=False)
        return store_id

    async def purge_delivered(self, *, older_than: datetime, limit: int = 1000) -> int:
        """Delete up to ``limit`` records delivered before ``older_than``; return how many."""
        self._check_open()
        check_purge(older_than, limit)
        body = {"older_than": older_than.isoformat(), "limit": limit}
        return int((await self._call("POST", "/v1/outbox/purge", body=body))["purged"])

    async def wait_for_outbox(self, timeout: float) -> None:
        """Return when new records may be claimable, or after ``timeout`` seconds."""
        self._check_open()
        timeout = check_wait_timeout(timeout)
        # Long waits go as several long polls, each well inside the server's 60 s bound.
        chunk = min(float(timeout), MAX_WAIT_CHUNK_SECONDS)
        await self._call(
            "POST", "/v1/outbox/wait", body={"timeout": chunk}, timeout=chunk + self._timeout
        )


def _query(
    params: Mapping[str, str] | list[tuple[str, str]] | None,
) -> tuple[tuple[str, str], ...] | None:
    # Pairs, so that a parameter may repeat (status=A&status=B).
    if params is None:
        return None
    return tuple(params.items() if isinstance(params, Mapping) else params)

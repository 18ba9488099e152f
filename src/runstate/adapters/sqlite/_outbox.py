"""The SQLite adapter's outbox: claiming per-run prefixes under a lease, and bookkeeping.

Plain synchronous functions on the connection's own thread; the writes run inside the
transaction that ``ConnectionThread.write`` opens. The SQL is in ``sql/queries.sql``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from ...errors import UnreadableRecord
from ...types import DeadLetter, OutboxRecord, OutboxStats, new_outbox_record, utc_now
from .._decode import DECODE_ERRORS, decode_rows, reason, report
from ._connect import from_us, to_us
from ._ops import event_from_row
from ._queries import Q


def claim(
    connection: sqlite3.Connection, owner: str, limit: int, lease_seconds: float
) -> list[OutboxRecord]:
    """Lease up to ``limit`` records, each run's deliverable prefix in turn (in a write tx).

    A record whose event cannot be read back is dead-lettered here, with the reason as its
    error: its run waits behind it as behind any dead letter, and the other runs go on.
    """
    now = utc_now()
    now_us = to_us(now)
    expires = now + timedelta(seconds=lease_seconds)
    claimed: list[OutboxRecord] = []
    expires_us = to_us(expires)
    leases: list[tuple[str, int, str, int, int]] = []
    # Runs in the order of their oldest undelivered record, as in the memory adapter, so a
    # busy run cannot starve the others.
    heads = connection.execute(Q["outbox_heads"])
    try:
        for run_id, _ in heads:
            prefix = connection.execute(Q["outbox_run_prefix"], (run_id, limit - len(claimed)))
            try:
                taken = _claimable_prefix(connection, run_id, prefix, now_us, owner, expires)
            finally:
                prefix.close()  # never leave a statement open: it would pin a snapshot
            if taken:
                # A prefix: the run's undelivered records from its first seq to its last.
                first, last = taken[0].event.seq, taken[-1].event.seq
                leases.append((owner, expires_us, run_id, first, last))
                claimed += taken
            if len(claimed) >= limit:
                break
    finally:
        heads.close()
    connection.executemany(Q["outbox_lease_run"], leases)
    return claimed


def _claimable_prefix(
    connection: sqlite3.Connection,
    run_id: str,
    prefix: sqlite3.Cursor,
    now_us: int,
    owner: str,
    expires: datetime,
) -> list[OutboxRecord]:
    claimed: list[OutboxRecord] = []
    for row in prefix:
        (outbox_id, attempts, dead, available_at, lease_owner, lease_expires_at) = row[:6]
        if (
            dead
            or (lease_owner is not None and lease_expires_at > now_us)
            or (available_at is not None and available_at > now_us)
        ):
            break
        try:
            event = event_from_row(run_id, *row[6:14])
        except DECODE_ERRORS as exc:
            _dead_letter_unreadable(connection, outbox_id, run_id, row[7], exc)
            break
        claimed.append(
            new_outbox_record(outbox_id, event, row[14], attempts, owner, expires, row[15], row[16])
        )
    return claimed


def _dead_letter_unreadable(
    connection: sqlite3.Connection, outbox_id: int, run_id: str, seq: int, exc: Exception
) -> None:
    problem = UnreadableRecord(run_id, seq=seq, reason=reason(exc))
    connection.execute(
        Q["outbox_dead_unreadable"],
        (f"{problem} ({problem.code})", to_us(utc_now()), outbox_id),
    )
    report(problem, "its outbox record is dead-lettered")


def mark_delivered(connection: sqlite3.Connection, outbox_ids: Sequence[int], owner: str) -> int:
    """Mark records leased by ``owner`` delivered; return how many (in a write tx)."""
    now_us = to_us(utc_now())
    cursor = connection.executemany(
        Q["outbox_delivered"], [(now_us, outbox_id, owner) for outbox_id in outbox_ids]
    )
    return cursor.rowcount


def purge(connection: sqlite3.Connection, older_than: datetime, limit: int) -> int:
    """Delete up to ``limit`` records delivered before ``older_than`` (in a write tx)."""
    return connection.execute(Q["outbox_purge"], (to_us(older_than), limit)).rowcount


def mark_failed(
    connection: sqlite3.Connection,
    outbox_id: int,
    owner: str,
    error: str,
    retry_at: datetime | None,
) -> None:
    """Count a failed attempt: due again at ``retry_at``, or dead (in a write tx)."""
    if retry_at is None:
        connection.execute(Q["outbox_dead"], (error, to_us(utc_now()), outbox_id, owner))
    else:
        connection.execute(Q["outbox_retry"], (error, to_us(retry_at), outbox_id, owner))


def release(connection: sqlite3.Connection, outbox_ids: Sequence[int], owner: str) -> None:
    """Drop ``owner``'s leases on the records, counting no attempt (in a write tx)."""
    connection.executemany(Q["outbox_release"], [(outbox_id, owner) for outbox_id in outbox_ids])


def redrive(connection: sqlite3.Connection, run_id: str | None) -> int:
    """Make dead records deliverable again; return how many (in a write tx)."""
    if run_id is None:
        return connection.execute(Q["outbox_redrive_all"]).rowcount
    return connection.execute(Q["outbox_redrive_run"], (run_id,)).rowcount


def read_store_id(connection: sqlite3.Connection) -> str:
    """The id generated when the database's schema was created."""
    return str(connection.execute(Q["store_id"]).fetchone()[0])


def stats(connection: sqlite3.Connection) -> OutboxStats:
    """Summarize the outbox (inside ``read``)."""
    now_us = to_us(utc_now())
    pending, in_flight, dead = connection.execute(Q["outbox_counts"], (now_us,)).fetchone()
    (oldest,) = connection.execute(Q["outbox_oldest_pending"]).fetchone()
    (delivered,) = connection.execute(Q["outbox_delivered_count"]).fetchone()
    return OutboxStats(
        pending=pending,
        in_flight=in_flight,
        dead=dead,
        delivered=delivered,
        oldest_pending_at=_oldest(oldest),
    )


def _oldest(value: int | None) -> datetime | None:
    # A statistic: an unreadable time (a damaged row) is reported as unknown, not raised.
    try:
        return None if value is None else from_us(value)
    except DECODE_ERRORS:
        return None


def dead_letters(
    connection: sqlite3.Connection, run_id: str | None, limit: int, after: int
) -> list[DeadLetter]:
    """Dead-lettered records after ``after``, oldest first; an unreadable one is left out."""
    rows = connection.execute(Q["dead_letters"], (after, run_id, limit)).fetchall()
    return decode_rows(
        rows,
        lambda row: DeadLetter(
            outbox_id=row[0],
            event=event_from_row(*row[5:]),
            workflow=row[4],
            attempts=row[1],
            last_error=row[2],
            dead_at=None if row[3] is None else from_us(row[3]),
        ),
        lambda row, exc: UnreadableRecord(row[5], seq=row[7], reason=reason(exc)),
        skip=True,
    )

"""Operator commands: outbox status and redrive, relay, migrate, bench, version."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from .. import __version__
from .._open import open_store
from .._url import mask_url
from ..errors import InvalidInput
from ..store import OutboxStore, RunStateStore

if TYPE_CHECKING:
    from ._demo import DemoResult
from ._common import (
    EXIT_INVALID_INPUT,
    EXIT_SELF_CHECK_FAILED,
    JsonOption,
    UrlOption,
    console,
    error_console,
    fail,
    format_time,
    parse_duration,
    print_json,
    run_async,
    to_jsonable,
)

outbox_app = typer.Typer(help="Inspect and repair the outbox.", no_args_is_help=True)


def _outbox(store: RunStateStore) -> OutboxStore:
    if not isinstance(store, OutboxStore):
        raise InvalidInput(f"{type(store).__name__} has no outbox")
    return store


@outbox_app.command("status")
@run_async
async def outbox_status(url: str = UrlOption, as_json: bool = JsonOption) -> None:
    """Show the backlog, the age of the oldest undelivered record and the dead letters."""
    async with open_store(url) as store:
        stats = await _outbox(store).outbox_stats()
    oldest = stats.oldest_pending_at
    age = None if oldest is None else (datetime.now(UTC) - oldest).total_seconds()
    if as_json:
        print_json(
            {
                "pending": stats.pending,
                "in_flight": stats.in_flight,
                "dead": stats.dead,
                "delivered": stats.delivered,
                "oldest_pending_at": oldest,
                "oldest_pending_age_seconds": age,
            }
        )
        return
    table = Table(title=f"outbox of {mask_url(url, url)}", title_justify="left")
    for column in ("pending", "in flight", "dead letters", "delivered", "oldest pending", "age"):
        table.add_column(column, justify="right")
    table.add_row(
        str(stats.pending),
        str(stats.in_flight),
        str(stats.dead),
        str(stats.delivered),
        format_time(oldest),
        "-" if age is None else f"{age:.1f}s",
    )
    console.print(table)


@outbox_app.command("redrive")
@run_async
async def outbox_redrive(
    url: str = UrlOption,
    run_id: str | None = typer.Option(None, "--run", help="Only this run's dead letters."),
    as_json: bool = JsonOption,
) -> None:
    """Make dead-lettered records deliverable again."""
    async with open_store(url) as store:
        count = await _outbox(store).redrive_dead_letters(run_id=run_id)
    if as_json:
        print_json({"redriven": count})
    else:
        console.print(f"{count} dead letter(s) made deliverable again")


@run_async
async def relay_command(
    sink: str = typer.Option(
        ..., "--sink", help="Sink URL: nats://, amqp://, redis://, http(s)://, file://, stdout://"
    ),
    url: str = UrlOption,
    once: bool = typer.Option(False, "--once", help="Deliver everything pending, then exit."),
    workers: int = typer.Option(1, min=1, max=1024, help="Concurrent delivery workers."),
    batch_size: int = typer.Option(100, min=1, help="Records claimed per batch."),
    max_attempts: int = typer.Option(10, min=1, help="Attempts before a record is dead-lettered."),
    lease: float = typer.Option(
        30.0,
        "--lease",
        min=0.001,
        max=86400.0,
        help="Seconds a claimed batch stays leased to this relay; a relay that is killed holds "
        "its records back from the others for at most this long.",
    ),
    metrics_port: int | None = typer.Option(
        None, min=1, max=65535, help="Serve Prometheus metrics on this port."
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1",
        help="Address the metrics server binds (give 0.0.0.0 or :: to let other hosts scrape).",
    ),
    source: str | None = typer.Option(
        None,
        help="CloudEvents source of the events (default: the sink URL's source option, "
        "else runstate://<store id>).",
    ),
    retention: str | None = typer.Option(
        None, help="Delete delivered records older than this (30m, 12h, 7d); default: keep."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Deliver the outbox to a sink, at least once and in per-run order, as CloudEvents."""
    from ..relay import run_relay

    if metrics_port is not None:
        _serve_metrics(metrics_host, metrics_port)
    report = await run_relay(
        url,
        sink,
        once=once,
        workers=workers,
        batch_size=batch_size,
        max_attempts=max_attempts,
        lease_seconds=lease,
        retention=parse_duration(retention, "--retention"),
        source=source,
    )
    # With the events on stdout, the report goes to stderr: stdout stays pure JSON lines.
    events_on_stdout = sink.split("://", 1)[0].lower() == "stdout"
    if as_json:
        print_json(report, file=sys.stderr if events_on_stdout else sys.stdout)
    else:
        (error_console if events_on_stdout else console).print(
            f"relay stopped: {report.delivered} delivered, {report.retried} retried, "
            f"{report.dead} dead-lettered",
            markup=False,
        )
    if once and (report.retried or report.dead):
        raise fail(
            f"{report.retried + report.dead} delivery attempt(s) to {mask_url(sink, sink)} failed; "
            "the records stay in the outbox (see `runstate outbox status`); check that the "
            "broker is reachable and accepts the messages"
        )


def _serve_metrics(host: str, port: int) -> None:
    from prometheus_client import start_http_server

    from ..relay import default_metrics

    default_metrics()  # registered now, so the first scrape already has every relay metric

    try:
        start_http_server(port, addr=host)
    except (OSError, UnicodeError) as exc:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise fail(
            f"cannot serve metrics on {where}: {getattr(exc, 'strerror', None) or exc}; "
            "choose another --metrics-port or --metrics-host"
        ) from None


@run_async
async def migrate_command(
    url: str = UrlOption,
    status_only: bool = typer.Option(False, "--status", help="Show migrations, apply nothing."),
    as_json: bool = JsonOption,
) -> None:
    """Apply the schema migrations (or, with --status, show them)."""
    from .._open import migration_status

    status = await migration_status(url, apply=not status_only)
    if as_json:
        print_json(status)
        return
    table = Table(title=f"migrations of {mask_url(url, url)}", title_justify="left")
    for column in ("version", "name", "state"):
        table.add_column(column)
    for migration in status.migrations:
        table.add_row(str(migration.version), migration.name, migration.state)
    console.print(table)
    console.print(f"schema version {status.applied_version} of {status.latest_version}")


def bench_command(
    which: list[str] | None = typer.Argument(  # noqa: B008
        None,
        help="Benchmarks to run (default: all); arguments after -- go to each of them, "
        "as in `runstate bench sqlite -- --rounds 3`.",
    ),
) -> None:
    """Run the project's benchmarks (from a source checkout) and print their ratio tables."""
    names, extra = _split_bench_arguments(which or [])
    folder = Path.cwd() / "benchmarks"
    if not folder.is_dir():
        raise fail(
            "no benchmarks/ folder here: run `runstate bench` from a runstate source checkout",
            EXIT_INVALID_INPUT,
        )
    available = {p.stem.removeprefix("bench_"): p for p in sorted(folder.glob("bench_*.py"))}
    chosen = names or list(available)
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise fail(
            f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}",
            EXIT_INVALID_INPUT,
        )
    failed = []
    for name in chosen:
        console.print(f"[bold]== {name}[/bold]")
        command = [sys.executable, str(available[name]), *extra]
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(name)
    if failed:
        raise fail(f"benchmark(s) failed: {', '.join(failed)}")


def _split_bench_arguments(words: list[str]) -> tuple[list[str], list[str]]:
    """Split ``runstate bench`` words into benchmark names and the arguments passed on.

    Click drops the ``--`` itself, so the first word that looks like an option starts the
    arguments that every chosen benchmark receives.
    """
    for index, word in enumerate(words):
        if word.startswith("-"):
            return words[:index], words[index:]
    return words, []


def version_command() -> None:
    """Print the runstate version."""
    console.print(f"runstate {__version__}")


def demo_command(
    url: str = UrlOption,
    sink: str | None = typer.Option(None, "--sink", help="Sink URL (default: a JSON lines file)."),
    runs: int = typer.Option(500, min=1, max=1_000_000, help="How many runs to drive."),
    workers: int = typer.Option(8, min=1, max=1024, help="Concurrent tasks of the queued worker."),
    seed: int | None = typer.Option(None, help="Random seed, for a repeatable demo."),
    as_json: bool = JsonOption,
) -> None:
    """Drive ~500 runs through realistic lifecycles while relaying, then self-check."""
    from ._demo import default_sink_url, run_demo

    sink_url = sink or default_sink_url()
    result = run_async(run_demo)(
        url=url,
        sink_url=sink_url,
        runs=runs,
        workers=workers,
        seed=seed,
        show_progress=not as_json,
    )
    if as_json:
        print_json({**to_jsonable(result), "ok": result.ok})
    else:
        _print_demo(result)
    if not result.ok:
        raise typer.Exit(EXIT_SELF_CHECK_FAILED)


def _print_demo(result: DemoResult) -> None:
    statuses = Table(title="runs by final status", title_justify="left")
    statuses.add_column("status")
    statuses.add_column("runs", justify="right")
    for status, count in result.statuses.items():
        statuses.add_row(status, str(count))
    console.print(statuses)
    figures = Table(title=f"demo on {result.store_url}", title_justify="left")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    rate = result.events_written / result.seconds if result.seconds else 0.0
    for label, value in (
        ("runs", str(result.runs)),
        ("events written", str(result.events_written)),
        ("events delivered", str(result.events_delivered)),
        ("sink", result.sink_url),
        ("wall time", f"{result.seconds:.1f} s"),
        ("writes/s (events)", f"{rate:,.0f}"),
        ("commit-to-delivery p50", _ms(result.latency_p50_ms)),
        ("commit-to-delivery p99", _ms(result.latency_p99_ms)),
    ):
        figures.add_row(label, value)
    console.print(figures)
    if result.ok:
        console.print(
            "[bold green]self-check passed[/]: every stored event delivered exactly once, "
            "in per-run order; every final state legal"
        )
        return
    console.print(f"[bold red]self-check FAILED[/]: {len(result.problems)} problem(s)")
    for problem in result.problems[:20]:
        console.print(f"  - {problem}", markup=False)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"

"""The typer application: global options and the command tree."""

from __future__ import annotations

import logging

import typer

from ._common import settings
from ._inspect import events_command, runs_app, tail_command
from ._ops import (
    bench_command,
    demo_command,
    migrate_command,
    outbox_app,
    relay_command,
    version_command,
)

app = typer.Typer(
    name="runstate",
    help="A durable, consistent, observable record of every workflow run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
) -> None:
    """runstate: run metadata, event logs and a transactional outbox, with a relay."""
    settings.debug = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


app.add_typer(runs_app, name="runs")
app.add_typer(outbox_app, name="outbox")
app.command("events")(events_command)
app.command("tail")(tail_command)
app.command("relay")(relay_command)
app.command("migrate")(migrate_command)
app.command("bench")(bench_command)
app.command("demo")(demo_command)
app.command("version")(version_command)
app.command("serve")(__import__("runstate.cli._serve", fromlist=["_"]).serve_command)


def main() -> None:
    """Entry point of the ``runstate`` console script."""
    app()

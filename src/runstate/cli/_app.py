"""The typer application: global options, the command tree, and one-line usage errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from ._common import EXIT_FAILURE, MaskingFormatter, masked, settings
from ._inspect import events_command, runs_app, tail_command
from ._ops import (
    bench_command,
    demo_command,
    migrate_command,
    outbox_app,
    relay_command,
    version_command,
)

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class OneLineErrors(TyperGroup):
    """The command tree, printing a usage error (a bad option value, an unknown command) as
    one line on stderr with exit status 2, as every other error, instead of a framed box."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command; in standalone mode, exit with its status."""
        show_flags_as_flags(self)
        try:
            result = super().main(
                args,
                prog_name,
                complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except typer.TyperException as exc:
            if not standalone_mode:
                raise
            sys.exit(_report_usage_error(exc))
        except typer.Abort:
            if not standalone_mode:
                raise
            print("runstate: aborted", file=sys.stderr)
            sys.exit(EXIT_FAILURE)
        if not standalone_mode:
            return result
        # Commands return None; an Exit raised by a command comes back as its status.
        sys.exit(result if isinstance(result, int) else 0)


def show_flags_as_flags(command: Any) -> None:
    """Give every boolean flag of the command tree an empty metavar, so ``--help`` shows
    ``--once`` as it is given rather than typer's ``--once <bool>``: a flag takes no value,
    and ``--once true`` is refused. (Typer's commands are of its own bundled click, so this
    goes by attributes, not classes.)"""
    help_option = command.get_help_option(typer.Context(command))
    for param in [*command.params, *([help_option] if help_option else [])]:
        flag = getattr(param, "is_flag", False) and not getattr(param, "count", False)
        if flag and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        show_flags_as_flags(sub)


def _report_usage_error(exc: typer.TyperException) -> int:
    code: int = getattr(exc, "exit_code", 2)
    if type(exc).__name__ == "NoArgsIsHelpError":
        print(exc.format_message())  # `runstate` alone: the help text, as before
        return code
    context = getattr(exc, "ctx", None)
    command = getattr(context, "command_path", None) or "runstate"
    message = " ".join(exc.format_message().split())
    print(
        f"runstate: error: {masked(message)} (see `{command} --help`)",
        file=sys.stderr,
    )
    return code


app = typer.Typer(
    name="runstate",
    cls=OneLineErrors,
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
    handler = logging.StreamHandler()
    handler.setFormatter(MaskingFormatter(_LOG_FORMAT))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])


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

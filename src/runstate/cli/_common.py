"""What every command shares: the store URL option, error reporting, JSON output."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TextIO, TypeVar

import typer
from rich.console import Console

from .._open import DEFAULT_URL, URL_ENV_VAR
from .._url import mask_url
from .._validation import MIN_DATETIME
from ..errors import InvalidInput, RunNotFound, RunStateError, StoreUnavailable

P = ParamSpec("P")
T = TypeVar("T")

console = Console(highlight=False)
error_console = Console(highlight=False, stderr=True)

URL_HELP = f"Store URL (default: ${URL_ENV_VAR}, else {DEFAULT_URL})."
UrlOption = typer.Option(DEFAULT_URL, "--url", envvar=URL_ENV_VAR, help=URL_HELP)
JsonOption = typer.Option(False, "--json", help="Print JSON for scripts instead of tables.")

EXIT_FAILURE = 1
EXIT_INVALID_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4
EXIT_SELF_CHECK_FAILED = 5

_HINTS = {
    "STORE_UNAVAILABLE": "check that the database is running and the URL (--url or $RUNSTATE_URL)",
    "INVALID_INPUT": "check the arguments and the URL",
    "RUN_NOT_FOUND": "list runs with `runstate runs list`",
    "UNREADABLE_RECORD": "the stored row was written by an older version or changed outside "
    "runstate; see docs/reliability.md",
}
# Arguments of commands that hold URLs, whose secrets every message masks.
_URL_ARGUMENTS = ("url", "sink", "sink_url")


class _Settings:
    debug = False
    known_urls: list[str] = []  # one process runs one command


settings = _Settings()


def masked(text: str) -> str:
    """``text`` with the secrets of every URL in it, and of the command's URLs, masked."""
    environment = os.environ.get(URL_ENV_VAR)
    known = [*settings.known_urls, *([environment] if environment else [])]
    return mask_url(text, *known)


class MaskingFormatter(logging.Formatter):
    """Log lines with every URL secret masked, whatever the logger put in them."""

    def format(self, record: logging.LogRecord) -> str:
        """The formatted record, masked."""
        return masked(super().format(record))


def exit_code_for(exc: RunStateError) -> int:
    """Map an error to the command's exit status."""
    if isinstance(exc, InvalidInput):
        return EXIT_INVALID_INPUT
    if isinstance(exc, RunNotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, StoreUnavailable):
        return EXIT_UNAVAILABLE
    return EXIT_FAILURE


def fail(message: str, code: int = EXIT_FAILURE) -> typer.Exit:
    """Print one error line on stderr and return the ``Exit`` to raise."""
    # Plain print: one line, never re-wrapped to the terminal width.
    print(f"runstate: error: {masked(message)}", file=sys.stderr)
    return typer.Exit(code)


def warn(message: str) -> None:
    """Print one warning line on stderr."""
    print(f"runstate: warning: {masked(message)}", file=sys.stderr)


def _print_traceback() -> None:
    if settings.debug:
        sys.stderr.write(masked(traceback.format_exc()))


def _root_failure(exc: BaseException) -> BaseException:
    if isinstance(exc, BaseExceptionGroup):
        from ..relay.delivery import first_failure

        return first_failure(exc)
    return exc


def run_async(func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Run an async command on a fresh event loop, turning errors into one line on stderr."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        settings.known_urls += [
            value
            for key, value in kwargs.items()
            if key in _URL_ARGUMENTS and isinstance(value, str)
        ]
        try:
            return asyncio.run(func(*args, **kwargs))
        except (RunStateError, BaseExceptionGroup) as raised:
            exc = _root_failure(raised)
            _print_traceback()
            if not isinstance(exc, RunStateError):
                raise fail(_unexpected(exc)) from None
            hint = _HINTS.get(exc.code)
            detail = f"{exc} ({exc.code})" + (f"; {hint}" if hint else "")
            raise fail(detail, exit_code_for(exc)) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # The reader went away (`runstate events ... | head`): stop quietly, like cat does.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            _print_traceback()
            raise fail(_unexpected(exc)) from None

    return wrapper


def _unexpected(exc: BaseException) -> str:
    return f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for a traceback)"


def to_jsonable(value: Any) -> Any:
    """Turn dataclasses, datetimes and enums into plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return value


def print_json(value: Any, file: TextIO | None = None) -> None:
    """Print one JSON document on ``file`` (default: stdout)."""
    out = sys.stdout if file is None else file
    out.write(json.dumps(to_jsonable(value), ensure_ascii=False) + "\n")
    out.flush()


def short_json(value: Any, width: int = 60) -> str:
    """Render a payload on one line, cut to ``width`` characters."""
    text = json.dumps(to_jsonable(value), ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | None, option: str) -> timedelta | None:
    """Parse a duration like 30s, 15m, 2h or 7d, reaching no further back than the oldest
    time a store holds (``MIN_DATETIME``)."""
    if text is None:
        return None
    if text[-1:] in _UNITS and text[:-1].isascii() and text[:-1].isdigit():
        seconds = int(text[:-1]) * _UNITS[text[-1]]
        if seconds <= (datetime.now(UTC) - MIN_DATETIME).total_seconds():
            return timedelta(seconds=seconds)
        raise fail(
            f"{option} {text!r}: reaches back before {MIN_DATETIME.date().isoformat()}, the "
            "oldest time a store holds",
            EXIT_INVALID_INPUT,
        )
    raise fail(
        f"{option} {text!r}: expected a duration such as 30s, 15m, 2h or 7d", EXIT_INVALID_INPUT
    )


def parse_since(text: str | None, flag: str = "--since") -> datetime | None:
    """Parse ``--since`` (or ``flag``): a duration ago like 15m, 2h, 7d, or an ISO 8601 time."""
    if text is None:
        return None
    if text[-1:] in _UNITS and text[:-1].isdigit():
        duration = parse_duration(text, flag)
        assert duration is not None
        return datetime.now(UTC) - duration
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise fail(
            f"{flag} {text!r}: expected a duration (30s, 15m, 2h, 7d) or an ISO 8601 time",
            EXIT_INVALID_INPUT,
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime | None, *, precise: bool = True) -> str:
    """Render a timestamp compactly for tables (UTC; milliseconds when ``precise``)."""
    if value is None:
        return "-"
    if not precise:
        return value.astimezone(UTC).strftime("%m-%d %H:%M:%S")
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"

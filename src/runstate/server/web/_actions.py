"""The lifecycle commands as buttons: which are allowed now, and the form posts that run them.

A button is enabled exactly when the lifecycle table lets the command's event follow the
run's status. Each rendered form carries a fresh nonce that becomes the command's idempotency
key, so a double click or a re-posted form appends the event once.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...engine import RunEngine, RunState, RunStatus
from ...engine.lifecycle import (
    RUN_CANCEL_REQUESTED,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_PAUSED,
    RUN_RESUMED,
    RUN_RETRY_SCHEDULED,
    RUN_STARTED,
    RUN_SUCCEEDED,
    RUN_TIMED_OUT,
    TRANSITIONS,
)
from ...errors import ConcurrencyConflict, InvalidInput, InvalidTransition
from .._context import ServerContext
from .._http import Problem
from ._html import Markup, join, render, run_href
from ._layout import csrf_field
from ._session import Session
from ._ui import View

REASON = "operator, via the web view"
Runner = Callable[[RunEngine, str, str], Awaitable[RunState]]


@dataclass(frozen=True, kw_only=True, slots=True)
class Command:
    """One button: the engine command it runs and the events it may write."""

    name: str
    label: str
    event_types: tuple[str, ...]
    run: Runner
    danger: bool = False

    def allowed(self, status: RunStatus) -> bool:
        """Whether the lifecycle table lets this command act on a run in ``status``."""
        return any(status in TRANSITIONS[t].from_statuses for t in self.event_types)


async def _start(engine: RunEngine, run_id: str, key: str) -> RunState:
    return await engine.start(run_id, worker="web view", idempotency_key=key)


async def _pause(engine: RunEngine, run_id: str, key: str) -> RunState:
    return await engine.pause(run_id, reason=REASON, idempotency_key=key)


async def _resume(engine: RunEngine, run_id: str, key: str) -> RunState:
    return await engine.resume(run_id, reason=REASON, idempotency_key=key)


async def _retry(engine: RunEngine, run_id: str, key: str) -> RunState:
    return await engine.retry(run_id, reason=REASON, idempotency_key=key)


async def _cancel(engine: RunEngine, run_id: str, key: str) -> RunState:
    return await engine.cancel(run_id, reason=REASON, idempotency_key=key)


async def _succeed(engine: RunEngine, run_id: str, key: str) -> RunState:
    return await engine.succeed(run_id, output=None, idempotency_key=key)


async def _fail(engine: RunEngine, run_id: str, key: str) -> RunState:
    return await engine.fail(
        run_id, error={"message": "failed by an operator"}, idempotency_key=key
    )


async def _time_out(engine: RunEngine, run_id: str, key: str) -> RunState:
    return await engine.time_out(run_id, reason=REASON, idempotency_key=key)


COMMANDS: tuple[Command, ...] = (
    Command(name="start", label="Start", event_types=(RUN_STARTED,), run=_start),
    Command(name="pause", label="Pause", event_types=(RUN_PAUSED,), run=_pause),
    Command(name="resume", label="Resume", event_types=(RUN_RESUMED,), run=_resume),
    Command(name="retry", label="Retry", event_types=(RUN_RETRY_SCHEDULED,), run=_retry),
    Command(
        name="cancel",
        label="Cancel",
        event_types=(RUN_CANCEL_REQUESTED, RUN_CANCELLED),
        run=_cancel,
        danger=True,
    ),
    Command(name="succeed", label="Mark succeeded", event_types=(RUN_SUCCEEDED,), run=_succeed),
    Command(name="fail", label="Mark failed", event_types=(RUN_FAILED,), run=_fail, danger=True),
    Command(
        name="time_out", label="Time out", event_types=(RUN_TIMED_OUT,), run=_time_out, danger=True
    ),
)
_BY_NAME = {command.name: command for command in COMMANDS}


def command_buttons(run_id: str, status: RunStatus, session: Session) -> Markup:
    """The command forms for a write-scoped session; nothing at all for a read-only one."""
    if not session.can_write:
        return Markup("")
    forms = []
    for command in COMMANDS:
        allowed = command.allowed(status)
        forms.append(
            render(
                '<form method="post" action="$action" class="inline">$csrf'
                '<input type="hidden" name="nonce" value="$nonce">'
                '<button type="submit" class="cmd$danger" data-command="$name"$disabled'
                ' title="$title">$label</button></form>',
                action=run_href(run_id, f"/commands/{command.name}"),
                csrf=csrf_field(session),
                nonce=secrets.token_urlsafe(12),
                danger=" danger" if command.danger else "",
                name=command.name,
                disabled=Markup("") if allowed else Markup(" disabled"),
                title="" if allowed else f"not allowed while the run is {status.value}",
                label=command.label,
            )
        )
    return render('<div class="commands" id="commands">$f</div>', f=join(forms))


async def run_command(
    ctx: ServerContext, request: Request, path: dict[str, str], view: View
) -> Response:
    """POST /runs/{run_id}/commands/{command}: run one lifecycle command, back to the run."""
    form = await view.posted(request)
    if not view.session.can_write:
        raise Problem("FORBIDDEN", "lifecycle commands need a write token")
    command = _BY_NAME.get(path["command"])
    if command is None:
        raise Problem("NOT_FOUND", "no such command")
    nonce = form.get("nonce", "")
    if not 8 <= len(nonce) <= 64 or not nonce.replace("-", "").replace("_", "").isalnum():
        raise InvalidInput("must be the form's nonce", field="nonce")
    run_id = path["run_id"]
    try:
        await command.run(ctx.engine, run_id, f"web-{command.name}-{nonce}")
    except (InvalidTransition, ConcurrencyConflict) as exc:
        # The page was stale (someone else moved the run): back to it, saying why.
        query = urlencode({"refused": f"{command.label}: {exc}"})
        return RedirectResponse(run_href(run_id, f"?{query}"), status_code=303)
    ctx.notify_write()
    return RedirectResponse(run_href(run_id, f"?done={command.name}"), status_code=303)

"""The web view's routes: sign-in, sessions, static assets, and the wrapper every page uses.

Pages are ordinary operations of the server's router (so they share its dispatch and metrics)
but are kept out of the OpenAPI document, and they authenticate with the session cookie instead
of a bearer header. Without tokens (a loopback-only server) a browser gets a session at once,
with the scope the API grants there; with tokens, ``/login`` exchanges one for a session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...errors import RunStateError
from ...wire.problems import status_for_code
from .._auth import Scope
from .._context import ServerContext
from .._http import Problem
from .._router import Operation
from .._routes_live import feed_stream, run_stream
from ._html import render
from ._layout import ASSETS, add_security_headers, error_body, html_response, page
from ._session import (
    COOKIE_NAME,
    SESSION_SECONDS,
    Session,
    SessionStore,
    check_csrf,
    check_same_origin,
    read_form,
    session_cookie,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class View:
    """Who is looking: the session, and whether it came from a sign-in (tokens configured)."""

    session: Session
    signed_in: bool

    async def posted(self, request: Request) -> dict[str, str]:
        """Read a state-changing form: same origin and the session's CSRF token, or refused."""
        check_same_origin(request)
        form = await read_form(request)
        check_csrf(self.session, form.get("csrf"))
        return form


PageHandler = Callable[[ServerContext, Request, dict[str, str], View], Awaitable[Response]]


class SignInNeeded(Exception):
    """No valid session: pages redirect to the sign-in form, data routes answer 401."""


_LOGIN = """<section class="login panel"><h1>Sign in</h1>
<p class="muted">Paste an API token (read, write or admin). The browser keeps only a session
cookie; the token itself is never stored.</p>
<form method="post" action="/login">
<input type="hidden" name="next" value="$next">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
$error<button type="submit" class="primary">Sign in</button></form></section>"""


def safe_next(value: str | None) -> str:
    """A local path to go back to after sign-in (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


class WebUI:
    """The routes of the web view over one server context."""

    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx
        self.sessions = SessionStore()

    def _session_of(self, request: Request) -> tuple[View, str | None]:
        """The view of a request, and a Set-Cookie value when a new session was started."""
        access = self._ctx.access
        host = request.headers.get("host")
        if access.open and access.check(None, host, Scope.READ) is not None:
            raise Problem("FORBIDDEN", "without tokens the server answers loopback hosts only")
        session = self.sessions.get(request.cookies.get(COOKIE_NAME))
        if session is not None:
            return View(session=session, signed_in=not access.open), None
        if not access.open:
            raise SignInNeeded
        # Without tokens the API lets loopback clients do everything: so does the view.
        cookie, session = self.sessions.create(Scope.ADMIN)
        return View(session=session, signed_in=False), session_cookie(
            request, cookie, SESSION_SECONDS
        )

    def wrap(
        self, handler: PageHandler, *, data: bool = False
    ) -> Callable[..., Awaitable[Response]]:
        """Authenticate with the session, render failures as HTML, add the security headers."""

        async def handle(ctx: ServerContext, request: Request, path: dict[str, str]) -> Response:
            cookie = None
            view: View | None = None
            try:
                view, cookie = self._session_of(request)
                response = await handler(ctx, request, path, view)
            except SignInNeeded:
                if data:
                    response = Response("sign in first", status_code=401, media_type="text/plain")
                else:
                    target = quote(
                        request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                        safe="",
                    )
                    response = RedirectResponse(f"/login?next={target}", status_code=303)
            except (RunStateError, Problem) as exc:
                code = exc.code
                detail = exc.detail if isinstance(exc, Problem) else str(exc)
                response = page(
                    code,
                    error_body(code, detail),
                    page_name="error",
                    session=view.session if view else None,
                    signed_in=bool(view and view.signed_in),
                    status=status_for_code(code),
                )
            if cookie is not None:
                response.headers.append("set-cookie", cookie)
            return add_security_headers(response)

        return handle

    async def login_form(self, ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
        """GET /login: the sign-in form (straight to the runs without tokens)."""
        if ctx.access.open:
            return RedirectResponse("/", status_code=303)
        target = safe_next(request.query_params.get("next"))
        return add_security_headers(self._login_page(target, ""))

    def _login_page(self, target: str, error: str, status: int = 200) -> Response:
        message = render('<p class="form-error" role="alert">$e</p>', e=error) if error else ""
        body = render(_LOGIN, next=target, error=message)
        return page(
            "Sign in", body, page_name="login", session=None, signed_in=False, status=status
        )

    async def login(self, ctx: ServerContext, request: Request, _: dict[str, str]) -> Response:
        """POST /login: exchange a token for a session cookie."""
        check_same_origin(request)
        form = await read_form(request)
        target = safe_next(form.get("next"))
        if ctx.access.open:
            return add_security_headers(RedirectResponse(target, status_code=303))
        scope = ctx.access.scope_of_token(form.get("token", "").strip())
        if scope is None:
            return add_security_headers(self._login_page(target, "That token is not valid.", 401))
        self.sessions.drop(request.cookies.get(COOKIE_NAME))  # a new id on every sign-in
        cookie, _session = self.sessions.create(scope)
        response = RedirectResponse(target, status_code=303)
        response.headers.append("set-cookie", session_cookie(request, cookie, SESSION_SECONDS))
        return add_security_headers(response)

    async def logout(
        self, ctx: ServerContext, request: Request, _: dict[str, str], view: View
    ) -> Response:
        """POST /logout: end the session."""
        await view.posted(request)
        self.sessions.drop(request.cookies.get(COOKIE_NAME))
        response = RedirectResponse("/login" if view.signed_in else "/", status_code=303)
        response.headers.append("set-cookie", session_cookie(request, "", 0))
        return response

    async def static(self, ctx: ServerContext, request: Request, path: dict[str, str]) -> Response:
        """GET /static/{name}: a file that ships in the package."""
        asset = ASSETS.get(path["name"])
        if asset is None:
            return add_security_headers(html_response("not found", 404))
        headers = {"ETag": asset.etag, "Cache-Control": "public, max-age=86400"}
        if request.headers.get("if-none-match") == asset.etag:
            return add_security_headers(Response(status_code=304, headers=headers))
        response = Response(asset.body, media_type=asset.media_type, headers=headers)
        return add_security_headers(response)


async def feed_events(
    ctx: ServerContext, request: Request, path: dict[str, str], view: View
) -> Response:
    """GET /ui/feed: the store's new events as SSE, for the live runs list."""
    return await feed_stream(ctx, request, path)


async def run_events(
    ctx: ServerContext, request: Request, path: dict[str, str], view: View
) -> Response:
    """GET /runs/{run_id}/stream: one run's events after a seq as SSE, for the live run page."""
    return await run_stream(ctx, request, path)


def web_operation(method: str, path: str, handler: Callable[..., Awaitable[Response]]) -> Operation:
    """A route of the web view (no bearer scope: the session decides)."""
    name = path.strip("/").replace("/", "_").replace("{", "").replace("}", "") or "index"
    return Operation(
        operation_id=f"web_{method.lower()}_{name}",
        method=method,
        path=path,
        scope=None,
        handler=handler,
        summary="web view",
        tag="web",
    )

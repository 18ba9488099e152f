"""The page shell, the static assets that ship in the package, and the security headers.

Every page loads one stylesheet and one script from ``/static`` (no CDN, no inline script or
style), under a Content-Security-Policy that allows nothing else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.responses import Response

from ._html import Markup, esc, render
from ._session import Session

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Asset:
    """One static file, read once at start-up."""

    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Read the package's static files (``runstate/server/web/static``)."""
    assets: dict[str, Asset] = {}
    for entry in (resources.files(__package__) / "static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if suffix not in _TYPES:
            continue
        body = entry.read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:16]
        assets[entry.name] = Asset(body=body, media_type=_TYPES[suffix], etag=f'"{digest}"')
    return assets


ASSETS = load_assets()
#: Bound into asset URLs so a new release is never served from a stale browser cache.
ASSET_VERSION = hashlib.sha256(b"".join(a.etag.encode() for a in ASSETS.values())).hexdigest()[:10]

_SHELL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title · runstate</title>
<link rel="icon" href="/static/favicon.svg?v=$v" type="image/svg+xml">
<link rel="stylesheet" href="/static/app.css?v=$v">
<script src="/static/app.js?v=$v" defer></script>
</head><body data-page="$page">
<header class="top"><a class="brand" href="/"><span class="logo"></span>runstate</a>
<nav><a href="/" class="$runs_on">Runs</a><a href="/outbox" class="$outbox_on">Outbox</a></nav>
<div class="who">$who</div></header>
<main>$body</main></body></html>"""


def csrf_field(session: Session) -> Markup:
    """The hidden CSRF input every state-changing form carries."""
    return render('<input type="hidden" name="csrf" value="$v">', v=session.csrf)


def _who(session: Session | None, signed_in: bool) -> Markup:
    if session is None:
        return Markup("")
    scope = render('<span class="scope">$s access</span>', s=session.scope.name.lower())
    if not signed_in:
        return Markup(scope + '<span class="muted">loopback, no sign-in</span>')
    logout = render(
        '<form method="post" action="/logout" class="inline">$csrf'
        '<button type="submit" class="link">Sign out</button></form>',
        csrf=csrf_field(session),
    )
    return Markup(scope + logout)


def page(
    title: str,
    body: Markup,
    *,
    page_name: str,
    session: Session | None,
    signed_in: bool,
    status: int = 200,
) -> Response:
    """A full HTML page in the shell."""
    html = render(
        _SHELL,
        title=title,
        v=ASSET_VERSION,
        page=page_name,
        runs_on="on" if page_name in ("runs", "run") else "",
        outbox_on="on" if page_name == "outbox" else "",
        who=_who(session, signed_in),
        body=body,
    )
    return html_response(html, status)


def html_response(html: str, status: int = 200) -> Response:
    """An HTML response (fragment or page)."""
    return Response(html, status_code=status, media_type="text/html; charset=utf-8")


def add_security_headers(response: Response) -> Response:
    """Set the CSP and friends on a web response (assets keep their own caching)."""
    for name, value in SECURITY_HEADERS.items():
        if name not in response.headers:
            response.headers[name] = value
    return response


def error_body(code: str, detail: str) -> Markup:
    """The body of an error page."""
    return render(
        '<section class="panel error-page"><h1>$code</h1><p>$detail</p>'
        '<p><a href="/">Back to the runs</a></p></section>',
        code=code,
        detail=detail,
    )


__all__ = ["ASSETS", "ASSET_VERSION", "Asset", "csrf_field", "esc", "page"]

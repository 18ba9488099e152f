"""Web sessions: sign-in with a token, an opaque session cookie, CSRF tokens, form bodies.

The cookie carries a random session id, never the token: the server keeps, per session, only
the scope the token granted, a CSRF secret and an expiry (in memory, so a restart signs
everyone out). Sessions are looked up by the SHA-256 of the id, so the table holds nothing a
cookie could be rebuilt from. Every state-changing form posts the session's CSRF token, checked
in constant time, and must come from the same origin (``Origin`` and ``Sec-Fetch-Site``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.requests import Request

from .._auth import Scope
from .._http import Problem

COOKIE_NAME = "runstate_session"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000
MAX_FORM_BYTES = 16 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class Session:
    """One signed-in browser: what it may do, its CSRF token, when it ends."""

    scope: Scope
    csrf: str
    expires_at: float

    @property
    def can_write(self) -> bool:
        """Whether the session may run lifecycle commands."""
        return self.scope >= Scope.WRITE

    @property
    def can_admin(self) -> bool:
        """Whether the session may re-drive dead letters (an admin operation in the API)."""
        return self.scope >= Scope.ADMIN


def _key(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).digest()


class SessionStore:
    """The server's sessions, oldest first, bounded in number."""

    def __init__(self, lifetime_seconds: float = SESSION_SECONDS) -> None:
        self._lifetime = lifetime_seconds
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()

    def create(self, scope: Scope) -> tuple[str, Session]:
        """Start a session of ``scope``; return the cookie value and the session."""
        session_id = secrets.token_urlsafe(32)
        session = Session(
            scope=scope,
            csrf=secrets.token_urlsafe(24),
            expires_at=time.monotonic() + self._lifetime,
        )
        self._sessions[_key(session_id)] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value, if any."""
        if not session_id or len(session_id) > 100:
            return None
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is not None and session.expires_at < time.monotonic():
            del self._sessions[key]
            return None
        return session

    def drop(self, session_id: str | None) -> None:
        """End a session (sign-out)."""
        if session_id:
            self._sessions.pop(_key(session_id), None)


def session_cookie(request: Request, value: str, max_age: int) -> str:
    """A ``Set-Cookie`` value: HttpOnly, SameSite=Strict, Secure when served over HTTPS."""
    secure = "; Secure" if request.url.scheme == "https" else ""
    return f"{COOKIE_NAME}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"


def check_same_origin(request: Request) -> None:
    """Refuse a form post another site made the browser send."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Problem("FORBIDDEN", "cross-site form posts are refused")
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        host = request.headers.get("host", "")
        if origin.split("://", 1)[-1] != host:
            raise Problem("FORBIDDEN", "the form's origin is not this server")


def check_csrf(session: Session, presented: str | None) -> None:
    """Refuse a form whose CSRF token is not the session's."""
    if presented is None or not hmac.compare_digest(
        presented.encode("utf-8", "surrogateescape"), session.csrf.encode()
    ):
        raise Problem("FORBIDDEN", "the form's CSRF token is missing or stale; reload the page")


async def read_form(request: Request) -> dict[str, str]:
    """Read a small ``application/x-www-form-urlencoded`` body (last value of a name wins)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Problem("BODY_TOO_LARGE", f"the form is over {MAX_FORM_BYTES} bytes")
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if body and media != "application/x-www-form-urlencoded":
        raise Problem("UNSUPPORTED_MEDIA_TYPE", "send the form as a urlencoded body")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Problem("INVALID_INPUT", "the form is not UTF-8") from None
    return dict(pairs)

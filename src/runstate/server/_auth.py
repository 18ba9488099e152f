"""Bearer tokens with scopes: loading them, checking a request, and the loopback rule."""

from __future__ import annotations

import enum
import hmac
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInput

TOKENS_ENV_VAR = "RUNSTATE_API_TOKENS"


class Scope(enum.IntEnum):
    """What a token may do; each scope includes the ones below it."""

    READ = 1
    WRITE = 2
    ADMIN = 3


@dataclass(frozen=True, kw_only=True, slots=True)
class Token:
    """One configured token: its scope and its secret, kept as bytes for the comparison."""

    scope: Scope
    secret: bytes

    def __repr__(self) -> str:
        # Tokens must never reach a log line or a traceback's locals through repr.
        return f"Token(scope={self.scope.name}, secret=***)"


def parse_token_lines(lines: Iterable[str], source: str) -> tuple[Token, ...]:
    """Parse ``SCOPE TOKEN`` lines (``#`` starts a comment); errors name the line, not the token."""
    tokens: list[Token] = []
    seen: set[bytes] = set()
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise InvalidInput(
                f"{source} line {number}: expected 'SCOPE TOKEN' (scope read, write or admin)",
                field="tokens",
            )
        scope_name, secret = parts
        try:
            scope = Scope[scope_name.upper()]
        except KeyError:
            raise InvalidInput(
                f"{source} line {number}: unknown scope {scope_name!r} "
                "(expected read, write or admin)",
                field="tokens",
            ) from None
        encoded = secret.encode("utf-8")
        if encoded in seen:
            raise InvalidInput(f"{source} line {number}: a token is listed twice", field="tokens")
        seen.add(encoded)
        tokens.append(Token(scope=scope, secret=encoded))
    return tuple(tokens)


def load_tokens(path: str | None) -> tuple[Token, ...]:
    """Read tokens from ``path`` if given, else from ``$RUNSTATE_API_TOKENS`` (maybe none)."""
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise InvalidInput(
                f"cannot read tokens file {path}: {reason}", field="tokens"
            ) from None
        return parse_token_lines(text.splitlines(), path)
    return parse_token_lines(os.environ.get(TOKENS_ENV_VAR, "").splitlines(), TOKENS_ENV_VAR)


def is_loopback_host(host: str) -> bool:
    """Tell whether a bind address (or Host header name) is on the loopback interface."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """The name part of a Host header: ``[::1]:8080`` -> ``::1``, ``a:80`` -> ``a``."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class AccessPolicy:
    """Decides whether a request may run an operation of a given scope.

    With tokens, every request needs ``Authorization: Bearer <token>`` of a sufficient scope,
    compared in constant time against every configured token. Without tokens, the server is
    bound to loopback only; requests must then also name a loopback host, which stops a web
    page from reaching the unauthenticated API through DNS rebinding.
    """

    def __init__(self, tokens: Iterable[Token]) -> None:
        self._tokens = tuple(tokens)
        # Host headers seen, and whether each is loopback: parsing one costs microseconds.
        self._loopback_hosts: dict[str, bool] = {}

    @property
    def open(self) -> bool:
        """True when no tokens are configured (loopback only, no authentication)."""
        return not self._tokens

    def describe(self) -> str:
        """Say how access works, without any secret: for the start-up line."""
        if not self._tokens:
            return "no tokens: loopback only, no authentication"
        counts = dict.fromkeys(Scope, 0)
        for token in self._tokens:
            counts[token.scope] += 1
        parts = ", ".join(f"{n} {scope.name.lower()}" for scope, n in counts.items() if n)
        return f"bearer tokens required ({parts})"

    def check(self, authorization: str | None, host: str | None, needed: Scope) -> str | None:
        """Return ``None`` if allowed, else the problem code (``UNAUTHORIZED``, ``FORBIDDEN``)."""
        if not self._tokens:
            if host is None:
                return None
            known = self._loopback_hosts.get(host)
            if known is None:
                known = is_loopback_host(_host_name(host))
                if len(self._loopback_hosts) < 1024:
                    self._loopback_hosts[host] = known
            return None if known else "FORBIDDEN"
        granted = self._scope_of(authorization)
        if granted is None:
            return "UNAUTHORIZED"
        return None if granted >= needed else "FORBIDDEN"

    def scope_of_token(self, presented: str) -> Scope | None:
        """The scope of a token given in a sign-in form, or ``None`` (constant-time compares)."""
        return self._scope_of(f"Bearer {presented}")

    def _scope_of(self, authorization: str | None) -> Scope | None:
        if authorization is None:
            return None
        kind, _, presented = authorization.partition(" ")
        if kind.lower() != "bearer" or not presented:
            return None
        candidate = presented.strip().encode("utf-8", "surrogateescape")
        granted: Scope | None = None
        # Compare with every token, never stopping early, so timing tells nothing.
        for token in self._tokens:
            if hmac.compare_digest(candidate, token.secret):
                granted = token.scope
        return granted

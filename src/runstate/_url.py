"""Parsing store URLs and masking the secrets inside them.

``mask_url`` is the one function every message goes through before it reaches a user: CLI
errors and tracebacks, ``StoreUnavailable`` and ``InvalidInput`` messages, logs, reprs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlsplit

from .errors import InvalidInput

MASK = "***"

# The password of a URL's userinfo: scheme://user:PASSWORD@host. It runs to the authority's
# last "@", as urlsplit reads it, so a raw "@" inside a password is hidden too.
_USERINFO_PASSWORD = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s'\"]*:)(?P<secret>[^/?#\s'\"]*)(?=@)"
)
# A key=value pair of a query or fragment (or of a libpq "key=value key=value" string). The
# value ends where the URL does in a message: at a quote, a space, or a colon before a space.
_PARAMETER = re.compile(
    r"(?P<head>(?:^|[?&#;\s])(?P<key>[^=&#;\s'\"]+)=)(?P<value>(?:[^&#;\s'\":]|:(?!\s|$))*)"
)
# Parameter names whose values are secrets: passwords, tokens, keys, signatures.
_SECRET_WORDS = (
    "pass",
    "pwd",
    "secret",
    "token",
    "auth",
    "credential",
    "signature",
    "apikey",
    "api_key",
    "api-key",
    "access_key",
    "private",
)
_SECRET_NAMES = frozenset({"key", "sig", "code"})
# Known secrets shorter than this are masked only where they stand in a URL: replacing one or
# two characters everywhere in a message would garble it without protecting anything.
_MIN_KNOWN_SECRET = 3
# How deep URLs inside URL parameters (a PostgreSQL store's ``read_url``) are searched.
_MAX_NESTING = 3
# What stays readable when a masked URL is put back into a parameter value.
_NESTED_SAFE = ":/@*,"


def is_secret_parameter(name: str) -> bool:
    """Tell whether a URL parameter's name says that its value is a secret."""
    lowered = unquote_plus(name).lower()
    return lowered in _SECRET_NAMES or any(word in lowered for word in _SECRET_WORDS)


def _mask_parameter(match: re.Match[str]) -> str:
    if match["value"] and is_secret_parameter(match["key"]):
        return match["head"] + MASK
    inner = unquote(match["value"])
    if "://" in inner:
        # A URL inside a parameter (read_url=postgresql%3A%2F%2Fuser%3Apass%40host...): its
        # own secrets are hidden, percent-encoded again so the outer URL still reads right.
        masked = mask_url(inner)
        if masked != inner:
            return match["head"] + quote(masked, safe=_NESTED_SAFE)
    return match[0]


def _known_secrets(url: str, depth: int = 0) -> set[str]:
    """Every secret a URL carries, in each spelling a driver might echo it.

    Read by hand rather than with urlsplit, which refuses some malformed URLs (a bad IPv6
    host) whose secrets must still be hidden in the error that says so.
    """
    found = {m["secret"] for m in _USERINFO_PASSWORD.finditer(url) if m["secret"]}
    rest = url.split("://", 1)[1] if "://" in url else ""
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    userinfo, at, _ = authority.rpartition("@")
    if at and ":" in userinfo:
        found.add(userinfo.split(":", 1)[1])  # whatever the pattern missed (a space, say)
    before_fragment, _, fragment = rest.partition("#")
    query = before_fragment.partition("?")[2]
    for part in (query, fragment):
        for key, value in parse_qsl(part, keep_blank_values=True):
            if value and is_secret_parameter(key):
                found.add(value)
            elif "://" in value and depth < _MAX_NESTING:
                found |= _known_secrets(value, depth + 1)
        found.update(m["value"] for m in _PARAMETER.finditer(part) if is_secret_parameter(m["key"]))
    spellings = set()
    for secret in found:
        spellings.update({secret, unquote(secret), unquote_plus(secret), quote(secret, safe="")})
    return {s for s in spellings if len(s) >= _MIN_KNOWN_SECRET and s != MASK}


def mask_url(text: str, *known_urls: str) -> str:
    """Return ``text`` with every secret of every URL in it replaced by ``***``.

    Hidden wherever they appear in a URL: the userinfo password (``user:***@``) and the
    value of every query or fragment parameter whose name says it is a secret
    (``password``, ``sslpassword``, ``token``, ``api_key``, ``secret``, ...). The secrets of
    ``known_urls`` are also hidden wherever else they appear in ``text``, raw or
    percent-decoded, as drivers may echo them on their own.
    """
    masked = _USERINFO_PASSWORD.sub(rf"\g<head>{MASK}", text)
    masked = _PARAMETER.sub(_mask_parameter, masked)
    secrets: set[str] = set()
    for url in known_urls:
        secrets |= _known_secrets(url)
    for secret in sorted(secrets, key=len, reverse=True):
        masked = masked.replace(secret, MASK)
    return masked


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreUrl:
    """A store URL split into its scheme, the rest, and its query options."""

    raw: str = field(repr=False)
    scheme: str
    query: dict[str, str] = field(repr=False)

    @property
    def masked(self) -> str:
        """The URL with its secrets hidden."""
        return mask_url(self.raw, self.raw)

    def __repr__(self) -> str:
        return f"StoreUrl({self.masked!r})"


def parse_store_url(url: object) -> StoreUrl:
    """Split a store URL; refuse anything that is not ``scheme://...``."""
    if not isinstance(url, str) or "://" not in url:
        shown = mask_url(url, url) if isinstance(url, str) else type(url).__name__
        raise InvalidInput(f"not a store URL: {shown!r} (expected scheme://...)", field="url")
    try:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
    except ValueError as exc:
        raise InvalidInput(
            f"malformed store URL {mask_url(url, url)!r}: {mask_url(str(exc), url)}", field="url"
        ) from None
    return StoreUrl(raw=url, scheme=parts.scheme.lower(), query=query)

"""Parsing store URLs and masking the secrets inside them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import InvalidInput

_USERINFO_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@/\s]*(?=@)")


def mask_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``; safe for logs and errors."""
    return _USERINFO_PASSWORD.sub(r"\g<head>***", url)


def mask_secret(text: str, url: str) -> str:
    """Replace the password of ``url`` wherever it appears inside ``text``."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    masked = mask_url(text)
    if password:
        # Drivers may echo the password raw or percent-decoded: hide both spellings.
        for spelling in {password, unquote(password)}:
            masked = masked.replace(spelling, "***")
    return masked


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreUrl:
    """A store URL split into its scheme, the rest, and its query options."""

    raw: str
    scheme: str
    query: dict[str, str]

    @property
    def masked(self) -> str:
        """The URL with its password hidden."""
        return mask_url(self.raw)


def parse_store_url(url: object) -> StoreUrl:
    """Split a store URL; refuse anything that is not ``scheme://...``."""
    if not isinstance(url, str) or "://" not in url:
        shown = mask_url(url) if isinstance(url, str) else type(url).__name__
        raise InvalidInput(f"not a store URL: {shown!r} (expected scheme://...)", field="url")
    try:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
    except ValueError as exc:
        raise InvalidInput(f"malformed store URL {mask_url(url)!r}: {exc}", field="url") from None
    return StoreUrl(raw=url, scheme=parts.scheme.lower(), query=query)

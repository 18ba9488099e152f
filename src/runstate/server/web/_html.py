"""A tiny HTML template layer: every value is escaped unless it is already ``Markup``.

``render(template, **values)`` fills ``$name`` placeholders (``string.Template``), escaping each
value with ``html.escape`` (quotes included, so values are safe in attributes too). Fragments
built by ``render`` or ``join`` are ``Markup`` and pass through unescaped, so a page is composed
of escaped pieces without any place where raw text can slip in.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from string import Template
from typing import Any
from urllib.parse import quote, urlencode

#: Query values of links: (name, value) pairs, repeated names allowed.
QueryItems = Iterable[tuple[str, str]]


class Markup(str):
    """Text that is already HTML: inserted as it is by ``render`` and ``join``."""

    __slots__ = ()


def esc(value: object) -> Markup:
    """Escape a value for HTML text or a quoted attribute (``None`` becomes empty)."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    return Markup(html.escape(str(value), quote=True))


def render(template: str, **values: object) -> Markup:
    """Fill ``$name`` placeholders of ``template`` with escaped values."""
    return Markup(Template(template).substitute({k: esc(v) for k, v in values.items()}))


def join(parts: Iterable[object], separator: str = "") -> Markup:
    """Concatenate escaped parts."""
    return Markup(separator.join(esc(part) for part in parts))


def run_href(run_id: str, suffix: str = "") -> str:
    """The web path of a run (its id percent-encoded as one path segment)."""
    return f"/runs/{quote(run_id, safe='')}{suffix}"


def version_text(version: str | None) -> str:
    """A workflow version as shown beside its name: ``v3`` stays ``v3``, ``3`` becomes ``v3``."""
    if not version:
        return ""
    return f" {version}" if version[:1] in ("v", "V") else f" v{version}"


def href(path: str, items: QueryItems = ()) -> str:
    """A local link with a query string."""
    query = urlencode(list(items))
    return f"{path}?{query}" if query else path


def fmt_time(value: datetime | None) -> str:
    """A time in UTC to the millisecond, as operators read it; empty for ``None``."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def iso_time(value: datetime | None) -> str:
    """A time as RFC 3339 (for ``datetime`` attributes and scripts)."""
    return "" if value is None else value.isoformat()


def fmt_duration(seconds: float | None) -> str:
    """A short human duration: ``850 ms``, ``12.4 s``, ``3m 05s``, ``2h 10m``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    return f"{hours // 24}d {hours % 24}h"


def between(start: datetime | None, end: datetime | None) -> float | None:
    """Seconds from ``start`` to ``end``, or ``None`` when either is missing."""
    if start is None or end is None:
        return None
    return max((end - start) / timedelta(seconds=1), 0.0)


def pretty_json(value: Any) -> str:
    """Indented JSON for a ``<pre>`` (escaped by the caller's template)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def compact_json(value: Any, limit: int = 160) -> str:
    """One-line JSON, cut at ``limit`` characters."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def script_json(value: Any) -> Markup:
    """JSON safe inside ``<script type="application/json">``: ``<``, ``>``, ``&`` escaped."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)

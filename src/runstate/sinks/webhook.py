"""Webhook sink: CloudEvents over HTTP POST, signed with HMAC-SHA256, one run at a time."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx

from .._url import mask_url
from ..errors import InvalidInput
from ..types import OutboxRecord
from .base import (
    BaseSink,
    DeliveryOutcome,
    PermanentDeliveryError,
    SinkError,
    option_float,
    option_int,
    publish_per_run,
)
from .cloudevents import (
    CONTENT_TYPE,
    DATA_CONTENT_TYPE,
    SOURCE,
    SPEC_VERSION,
    dumps,
    to_cloudevent,
    trace_headers,
)

logger = logging.getLogger("runstate.relay.sinks.webhook")

SECRET_ENV_VAR = "RUNSTATE_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-Runstate-Signature"
RETRYABLE_STATUS = frozenset({408, 425, 429})
_OPTIONS = {"mode", "timeout", "concurrency"}
# CloudEvents HTTP binding: header values percent-encode space, '"', '%' and non-printables.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def sign(secret: str | bytes, body: bytes, *, timestamp: int | None = None) -> str:
    """Return the signature header value ``t=<unix seconds>,sha256=<hex HMAC>`` for ``body``."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return f"t={stamp},sha256={_digest(secret, stamp, body)}"


def verify_signature(
    secret: str | bytes,
    body: bytes,
    header: str | None,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """Check a ``X-Runstate-Signature`` header: right HMAC and a timestamp within tolerance."""
    if not header:
        return False
    fields = dict(part.strip().partition("=")[::2] for part in header.split(","))
    try:
        stamp = int(fields.get("t", ""))
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance:
        return False
    return hmac.compare_digest(fields.get("sha256", ""), _digest(secret, stamp, body))


def _digest(secret: str | bytes, stamp: int, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    # The timestamp is signed with the body so a captured request cannot be replayed later.
    return hmac.new(key, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()


class WebhookSink(BaseSink):
    """POST each CloudEvent to a URL; 2xx acknowledges it.

    408, 425, 429, 5xx and network errors are retried (``Retry-After`` is honoured as a lower
    bound); any other status dead-letters the record. ``mode`` is ``structured`` (the default:
    the CloudEvent is the JSON body) or ``binary`` (``ce-*`` headers, the payload is the body).
    ``ce-id`` and ``Idempotency-Key`` carry the id. With a secret (option ``secret`` or
    ``$RUNSTATE_WEBHOOK_SECRET``) every request is signed; see ``verify_signature``. Sink
    options can also be given in the URL fragment (never sent), e.g. ``https://h/p#mode=binary``.
    """

    messaging_system = "http"

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes | None = None,
        mode: str = "structured",
        timeout: float = 10.0,
        concurrency: int = 4,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if mode not in {"structured", "binary"}:
            raise InvalidInput(f"must be 'structured' or 'binary', got {mode!r}", field="mode")
        self._url = url
        parts = urlsplit(url)
        self.name = mask_url(urlunsplit(parts._replace(query="", fragment="")))
        self._query_values = [v for _, v in parse_qsl(parts.query) if len(v) >= 4]
        self._secret = secret if secret is not None else os.environ.get(SECRET_ENV_VAR) or None
        self.mode = mode
        self._timeout = timeout
        self._concurrency = concurrency
        self._headers = dict(headers or {})
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> WebhookSink:
        """Build from ``http(s)://…``; options come as keywords or in the URL fragment."""
        parts = urlsplit(url)
        in_url = dict(parse_qsl(parts.fragment, keep_blank_values=True))
        unknown = sorted(set(in_url) - _OPTIONS)
        if unknown:
            raise InvalidInput(
                f"unknown webhook option(s) in the URL fragment: {', '.join(unknown)} "
                f"(supported: {', '.join(sorted(_OPTIONS))}; the secret is an option or "
                f"${SECRET_ENV_VAR}, never part of the URL)",
                field="sink_url",
            )
        merged: dict[str, Any] = {**in_url, **options}
        target = urlunsplit(parts._replace(fragment=""))
        return cls(
            target,
            secret=merged.get("secret"),
            mode=str(merged.get("mode", "structured")),
            timeout=option_float(merged, "timeout", 10.0),
            concurrency=option_int(merged, "concurrency", 4) or 4,
            headers=merged.get("headers"),
            transport=merged.get("transport"),
        )

    async def open(self) -> None:
        """Create the HTTP client (connections are made on demand)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport, follow_redirects=False
            )

    async def close(self) -> None:
        """Close the HTTP client and its connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def describe(self, exc: BaseException) -> str:
        """Describe a failure with the URL's password and query values masked."""
        text = super().describe(exc)
        for value in self._query_values:
            text = text.replace(value, "***")
        return mask_url(text, self._url)

    def build_request(self, record: OutboxRecord) -> tuple[bytes, dict[str, str]]:
        """Return the body and headers to POST for one record."""
        envelope = to_cloudevent(record)
        message_id = quote(record.message_id, safe=_HEADER_SAFE)
        headers = {**self._headers, "Idempotency-Key": message_id}
        if self.mode == "binary":
            body = dumps(envelope.pop("data"))
            headers["Content-Type"] = str(envelope.pop("datacontenttype", DATA_CONTENT_TYPE))
            for key, value in envelope.items():
                headers[f"ce-{key}"] = quote(str(value), safe=_HEADER_SAFE)
        else:
            body = dumps(envelope)
            headers["Content-Type"] = CONTENT_TYPE
            headers["ce-id"] = message_id
            headers["ce-specversion"] = SPEC_VERSION
            headers["ce-source"] = SOURCE
        # W3C Trace Context: the trace the event was written under, as HTTP headers.
        headers.update(trace_headers(record))
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        return body, headers

    async def publish(self, batch: Sequence[OutboxRecord]) -> list[DeliveryOutcome]:
        """POST every record; runs in parallel, each run's records one after another."""
        await self.open()
        return await publish_per_run(self, batch, self._post, concurrency=self._concurrency)

    async def _post(self, record: OutboxRecord) -> None:
        assert self._client is not None
        body, headers = self.build_request(record)
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise SinkError(f"{self.name}: {type(exc).__name__}: {exc}") from None
        await response.aclose()
        status = response.status_code
        if 200 <= status < 300:
            return
        message = f"HTTP {status} from {self.name}"
        if status in RETRYABLE_STATUS or status >= 500:
            raise SinkError(message, retry_after=_retry_after(response.headers.get("Retry-After")))
        raise PermanentDeliveryError(message)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None

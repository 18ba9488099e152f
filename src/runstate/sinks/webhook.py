"""Webhook sink: CloudEvents over HTTP POST, signed per Standard Webhooks, one run at a time.

Signing (with a secret): by default the Standard Webhooks scheme, which every language has a
verifier for: ``webhook-id`` (the CloudEvent id), ``webhook-timestamp`` (unix seconds) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one ``v1,`` signature
per secret, space separated, so a consumer can rotate secrets. ``whsec_<base64>`` secrets are
decoded; any other secret is used as its UTF-8 bytes. ``signature=x-runstate-signature``
selects the scheme of earlier versions instead (``X-Runstate-Signature: t=..,sha256=<hex>``,
checked by ``verify_signature``).
"""

from __future__ import annotations

import base64
import binascii
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
    check_source,
    dumps,
    to_cloudevent,
    trace_headers,
)

logger = logging.getLogger("runstate.relay.sinks.webhook")

SECRET_ENV_VAR = "RUNSTATE_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-Runstate-Signature"
STANDARD_WEBHOOKS = "standard-webhooks"
X_RUNSTATE_SIGNATURE = "x-runstate-signature"
SIGNATURE_SCHEMES = (STANDARD_WEBHOOKS, X_RUNSTATE_SIGNATURE)
SECRET_PREFIX = "whsec_"
RETRYABLE_STATUS = frozenset({408, 425, 429})
_OPTIONS = {"mode", "timeout", "concurrency", "signature", "source"}
# CloudEvents HTTP binding: header values percent-encode space, '"', '%' and non-printables.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


Secret = str | bytes
Secrets = Secret | Sequence[Secret]


def parse_secrets(value: Secrets | None) -> tuple[Secret, ...]:
    """The secrets in ``value``: a string holds one or several, separated by whitespace.

    Bytes are one raw secret; a sequence holds one secret per item. Nothing is echoed in
    errors: secrets never appear in logs or messages.
    """
    if value is None:
        return ()
    items = (
        value.split()
        if isinstance(value, str)
        else [value]
        if isinstance(value, bytes)
        else list(value)
    )
    secrets: list[Secret] = []
    for item in items:
        if not isinstance(item, (str, bytes)) or not item:
            raise InvalidInput("each webhook secret must be a non-empty string", field="secret")
        signing_key(item)  # a malformed whsec_ secret is refused now, not at the first send
        secrets.append(item)
    return tuple(secrets)


def signing_key(secret: Secret) -> bytes:
    """The Standard Webhooks HMAC key of a secret: ``whsec_`` base64 decoded, else its bytes."""
    if isinstance(secret, bytes):
        return secret
    if secret.startswith(SECRET_PREFIX):
        encoded = secret.removeprefix(SECRET_PREFIX)
        try:
            # Padding is optional, as in the Standard Webhooks verifiers.
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            raise InvalidInput(
                "a whsec_ webhook secret must be base64 after the prefix", field="secret"
            )
        return key
    return secret.encode()


def sign_standard(
    secrets: Secrets, message_id: str, body: bytes, *, timestamp: int | None = None
) -> tuple[int, str]:
    """Return ``(timestamp, webhook-signature value)``: one ``v1,<base64>`` per secret."""
    stamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{message_id}.{stamp}.".encode() + body
    signatures = [
        "v1," + base64.b64encode(hmac.new(signing_key(s), signed, hashlib.sha256).digest()).decode()
        for s in parse_secrets(secrets)
    ]
    return stamp, " ".join(signatures)


def sign(secret: Secrets, body: bytes, *, timestamp: int | None = None) -> str:
    """Return the ``X-Runstate-Signature`` value ``t=<unix seconds>,sha256=<hex HMAC>,...``.

    The scheme of earlier versions (``signature=x-runstate-signature``): one ``sha256=`` per
    secret, each keyed by the secret's literal UTF-8 bytes.
    """
    stamp = int(time.time()) if timestamp is None else timestamp
    digests = ",".join(f"sha256={_digest(s, stamp, body)}" for s in parse_secrets(secret))
    return f"t={stamp},{digests}"


def verify_signature(
    secret: str | bytes,
    body: bytes,
    header: str | None,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """Check a ``X-Runstate-Signature`` header: an HMAC of ``secret`` matches (any one of
    its ``sha256=`` values, for rotation) and the timestamp is within tolerance."""
    if not header:
        return False
    fields = [part.strip().partition("=")[::2] for part in header.split(",")]
    stamps = [value for key, value in fields if key == "t"]
    try:
        stamp = int(stamps[0]) if len(stamps) == 1 else None
    except ValueError:
        return False
    current = time.time() if now is None else now
    if stamp is None or abs(current - stamp) > tolerance:
        return False
    expected = _digest(secret, stamp, body)
    return any(hmac.compare_digest(v, expected) for k, v in fields if k == "sha256")


def _digest(secret: str | bytes, stamp: int, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    # The timestamp is signed with the body so a captured request cannot be replayed later.
    return hmac.new(key, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()


class WebhookSink(BaseSink):
    """POST each CloudEvent to a URL; 2xx acknowledges it.

    408, 425, 429, 5xx and network errors are retried (``Retry-After`` is honoured as a lower
    bound); any other status dead-letters the record. ``mode`` is ``structured`` (the default:
    the CloudEvent is the JSON body) or ``binary`` (``ce-*`` headers, the payload is the body).
    Structured requests carry no ``ce-*`` header (CloudEvents SDKs would read them as binary
    mode); ``Idempotency-Key`` (and ``ce-id`` in binary mode) carry the id. With a secret
    (option ``secret``, or ``$RUNSTATE_WEBHOOK_SECRET``; several separated by whitespace)
    every request is signed, per Standard Webhooks unless ``signature`` is
    ``x-runstate-signature`` (see the module docstring). Options other than the secret can
    also be given in the URL fragment (never sent), e.g. ``https://h/p#mode=binary``.
    """

    messaging_system = "http"

    def __init__(
        self,
        url: str,
        *,
        secret: Secrets | None = None,
        mode: str = "structured",
        timeout: float = 10.0,
        concurrency: int = 4,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        signature: str = STANDARD_WEBHOOKS,
        source: str | None = None,
    ) -> None:
        if mode not in {"structured", "binary"}:
            raise InvalidInput(f"must be 'structured' or 'binary', got {mode!r}", field="mode")
        if signature not in SIGNATURE_SCHEMES:
            raise InvalidInput(
                f"must be one of {', '.join(SIGNATURE_SCHEMES)}, got {signature!r}",
                field="signature",
            )
        self._url = url
        parts = urlsplit(url)
        self.name = mask_url(urlunsplit(parts._replace(query="", fragment="")))
        self._query_values = [v for _, v in parse_qsl(parts.query) if len(v) >= 4]
        self._secrets = parse_secrets(
            secret if secret is not None else os.environ.get(SECRET_ENV_VAR) or None
        )
        self.signature = signature
        self.source = check_source(source)
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
            signature=str(merged.get("signature", STANDARD_WEBHOOKS)),
            source=merged.get("source"),
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
        envelope = to_cloudevent(record, self.event_source)
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
        # W3C Trace Context: the trace the event was written under, as HTTP headers.
        headers.update(trace_headers(record))
        if not self._secrets:
            return body, headers
        if self.signature == X_RUNSTATE_SIGNATURE:
            headers[SIGNATURE_HEADER] = sign(self._secrets, body)
        else:
            # Signed over the header value as sent, which is what verifiers read back.
            stamp, signatures = sign_standard(self._secrets, message_id, body)
            headers["webhook-id"] = message_id
            headers["webhook-timestamp"] = str(stamp)
            headers["webhook-signature"] = signatures
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

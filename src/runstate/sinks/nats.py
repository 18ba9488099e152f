"""NATS JetStream sink: acknowledged publishes, deduplicated by ``Nats-Msg-Id``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import NO_RESPONDERS_STATUS, Client
from nats.aio.msg import Msg
from nats.js.api import Header
from nats.js.client import JetStreamContext

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
    render_subject,
    sink_options,
    subject_wildcard,
)
from .cloudevents import check_source, encode_cloudevent, trace_headers

logger = logging.getLogger("runstate.relay.sinks.nats")

DEFAULT_SUBJECT = "runstate.events"

#: JetStream keeps at most five replicas of a stream.
MAX_REPLICAS = 5

EXPECTED_STREAM = Header.EXPECTED_STREAM.value
STATUS_HEADER = Header.STATUS.value
#: JetStream's error code for a message over its stream's ``max_msg_size``.
MESSAGE_TOO_LARGE_FOR_STREAM = 10054


def parse_servers(url: str) -> list[str]:
    """Split ``nats://[user:pass@]h1:4222,h2:4223`` into one URL per server, each checked.

    Every host must be present and every port an integer in 1..65535 (4222 when left out); a
    bad entry is refused with ``InvalidInput`` naming its position, never the credentials.
    """
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    prefix = f"{parts.scheme}://{userinfo + '@' if userinfo else ''}"
    servers: list[str] = []
    for index, entry in enumerate(hosts.split(","), start=1):
        host, port = _host_port(entry.strip(), index)
        servers.append(f"{prefix}{host}:{port}")
    return servers


def _host_port(entry: str, index: int) -> tuple[str, int]:
    if entry.startswith("["):  # [::1]:4222
        host, _, rest = entry[1:].partition("]")
        host, port_text = f"[{host}]", rest.removeprefix(":")
        if rest and not rest.startswith(":"):
            port_text = rest
    else:
        host, _, port_text = entry.partition(":")
    if not host or host == "[]" or any(c in host for c in "/?#@ "):
        raise InvalidInput(f"server {index} of the NATS URL has no valid host", field="sink_url")
    if not port_text:
        return host, 4222
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidInput(
            f"server {index} of the NATS URL has an invalid port {port_text[:16]!r} "
            "(expected 1..65535)",
            field="sink_url",
        )
    return host, int(port_text)


class NatsSink(BaseSink):
    """Publish CloudEvents to a JetStream subject, pipelined, each one acknowledged.

    The subject may contain ``{workflow}``, ``{type}`` or ``{run_id}`` (one token each). With
    ``stream`` set, the stream is created when missing (covering the subject, with a
    ``duplicate_window`` in seconds, default 120, and ``replicas`` copies, default 1) and every
    publish must land in it. ``servers`` may list several servers of one cluster, separated by
    commas; the connection moves to a surviving one when its server goes away. Within one
    connection the server stores messages in the order they were written, so pipelining keeps
    each run's order; the relay re-sends everything after a run's first failure and the
    ``Nats-Msg-Id`` header lets JetStream drop what it already stored.
    """

    messaging_system = "nats"

    def __init__(
        self,
        servers: str,
        *,
        subject: str = DEFAULT_SUBJECT,
        stream: str | None = None,
        create_stream: bool = True,
        duplicate_window: float = 120.0,
        replicas: int = 1,
        timeout: float = 5.0,
        connect_timeout: float = 2.0,
        source: str | None = None,
    ) -> None:
        if type(replicas) is not int or not 1 <= replicas <= MAX_REPLICAS:
            raise InvalidInput(f"must be 1..{MAX_REPLICAS}, got {replicas!r}", field="replicas")
        self._url = servers
        self.source = check_source(source)
        self._servers = parse_servers(servers)
        self.name = mask_url(servers, servers)
        self.replicas = replicas
        self.subject = subject
        self.stream = stream
        self._create_stream = create_stream
        self._duplicate_window = duplicate_window
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._stream_ready = False
        # Acknowledgements come to one subscription, ``<reply prefix><batch>.<index>``.
        self._reply_prefix = ""
        self._awaiting: dict[str, _BatchAcks] = {}
        self._batches = 0

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> NatsSink:
        """Build from ``nats://[user:pass@]host:4222[,host2:4223...]?subject=S&stream=N``."""
        known = {
            "subject",
            "stream",
            "create_stream",
            "duplicate_window",
            "replicas",
            "timeout",
            "connect_timeout",
            "source",
        }
        base, merged = sink_options(url, options, known)
        create = str(merged.get("create_stream", "true")).lower() not in {"0", "false", "no"}
        return cls(
            base,
            subject=str(merged.get("subject") or DEFAULT_SUBJECT),
            stream=str(merged["stream"]) if merged.get("stream") else None,
            create_stream=create,
            duplicate_window=option_float(merged, "duplicate_window", 120.0),
            replicas=option_int(merged, "replicas", 1) or 1,
            timeout=option_float(merged, "timeout", 5.0),
            connect_timeout=option_float(merged, "connect_timeout", 2.0),
            source=merged.get("source"),
        )

    def trace_destination(self, record: OutboxRecord) -> str:
        """The subject the record is published to."""
        return render_subject(self.subject, record)

    async def open(self) -> None:
        """Connect and make sure the stream exists; a broker that is down is retried later."""
        try:
            await self._ensure_ready()
        except Exception as exc:
            logger.warning("NATS sink %s not ready yet: %s", self.name, self.describe(exc))

    async def close(self) -> None:
        """Drain nothing (every publish was awaited) and close the connection."""
        nc, self._nc, self._js = self._nc, None, None
        self._stream_ready = False
        if nc is not None:
            await nc.close()

    async def _ensure_ready(self) -> Client:
        if self._nc is None or self._js is None:
            await self._connect()
        assert self._nc is not None
        assert self._js is not None
        if not self._stream_ready:
            await self._ensure_stream(self._js)
            self._stream_ready = True
        return self._nc

    async def _connect(self) -> None:
        nc = Client()

        async def on_error(exc: Exception) -> None:
            logger.debug("NATS sink %s: %s", self.name, self.describe(exc))

        async def on_disconnected() -> None:
            # Commands still buffered for the dead connection would be sent first thing on the
            # next one, after the ones written to the dead socket were lost: a run's later
            # records would be stored before its earlier ones. Dropping them keeps what the
            # servers stored a prefix of what was published; their acknowledgements time out and
            # the relay re-sends from the first unacknowledged record, under the same ids.
            # (Subscriptions are replayed on reconnect, and the client keeps no other state in
            # this buffer.)
            # (nats-py has no public call for this.)
            nc._pending.clear()
            nc._pending_data_size = 0
            logger.info("NATS sink %s disconnected", self.name)

        async def on_reconnected() -> None:
            logger.info("NATS sink %s reconnected", self.name)

        try:
            # Reconnecting forever keeps one connection (and its write order) across outages;
            # the initial attempt is bounded here instead.
            await asyncio.wait_for(
                nc.connect(
                    servers=self._servers,
                    name="runstate-relay",
                    error_cb=on_error,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                    connect_timeout=max(1, int(self._connect_timeout)),
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    # No buffering while reconnecting: a publish then fails at once (and is
                    # retried by the relay) rather than being sent after later ones were lost.
                    pending_size=0,
                ),
                timeout=self._connect_timeout,
            )
        except TimeoutError:
            await nc.close()
            raise SinkError(
                f"could not connect to {self.name} within {self._connect_timeout:g}s"
            ) from None
        except BaseException:
            await nc.close()
            raise
        # Publishes carry their reply subjects, and one subscription takes every answer: this
        # costs far less per message than nats-py's publish_async, whose future, semaphore and
        # parsed PubAck per message made up half of the relay's time.
        reply_prefix = f"{nc.new_inbox()}."
        try:
            await nc.subscribe(f"{reply_prefix}*.*", cb=self._on_ack)
        except BaseException:
            await nc.close()
            raise
        self._reply_prefix = reply_prefix
        self._nc = nc
        self._js = nc.jetstream(timeout=self._timeout)

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        if self.stream is None or not self._create_stream:
            return
        try:
            await js.stream_info(self.stream)
            return
        except nats.js.errors.NotFoundError:
            pass
        try:
            await js.add_stream(
                name=self.stream,
                subjects=[subject_wildcard(self.subject)],
                duplicate_window=self._duplicate_window,
                num_replicas=self.replicas,
            )
            logger.info("NATS sink %s created stream %s", self.name, self.stream)
        except nats.js.errors.BadRequestError:
            # Another relay created it first; publishes will tell if it does not fit.
            await js.stream_info(self.stream)

    async def publish(self, batch: Sequence[OutboxRecord]) -> list[DeliveryOutcome]:
        """Publish the batch pipelined, then wait for every acknowledgement."""
        try:
            nc = await self._ensure_ready()
        except Exception as exc:
            return self.all_retry(batch, exc)
        self._batches += 1
        token = str(self._batches)
        acks = _BatchAcks(len(batch))
        self._awaiting[token] = acks
        # Per batch, not per record: the relay's drain runs through this loop.
        send, source, stream = nc.publish, self.event_source, self.stream
        fixed_subject = None if "{" in self.subject else self.subject
        reply_prefix = f"{self._reply_prefix}{token}."
        sent = 0
        try:
            for index, record in enumerate(batch):
                headers = {"Nats-Msg-Id": record.message_id}
                if stream is not None:
                    headers[EXPECTED_STREAM] = stream
                if record.traceparent is not None:
                    headers.update(trace_headers(record))
                try:
                    await send(
                        fixed_subject or render_subject(self.subject, record),
                        encode_cloudevent(record, source),
                        reply=f"{reply_prefix}{index}",
                        headers=headers,
                    )
                except nats.errors.MaxPayloadError as exc:
                    acks.refuse(index, PermanentDeliveryError(str(exc)))
                except Exception as exc:
                    # The connection is gone or stalled: the rest of the batch would fail alike.
                    for rest in range(index, len(batch)):
                        acks.refuse(rest, exc)
                    break
                else:
                    sent += 1
            await acks.wait(sent, self._timeout)
        finally:
            del self._awaiting[token]
        return self._outcomes(batch, acks.answers)

    def _outcomes(
        self, batch: Sequence[OutboxRecord], answers: list[BaseException | None]
    ) -> list[DeliveryOutcome]:
        outcomes: list[DeliveryOutcome] = []
        for record, error in zip(batch, answers, strict=True):
            if error is None:
                outcomes.append(DeliveryOutcome.delivered(record))
                continue
            if isinstance(error, nats.js.errors.NoStreamResponseError):
                self._stream_ready = False
            outcomes.append(self.outcome_for(record, error))
        return outcomes

    async def _on_ack(self, msg: Msg) -> None:
        """Route one acknowledgement (``<prefix><batch>.<index>``) to the batch waiting for it."""
        batch, _, index = msg.subject[len(self._reply_prefix) :].partition(".")
        acks = self._awaiting.get(batch)
        if acks is None:  # a batch that gave up waiting
            return
        try:
            position = int(index)
        except ValueError:
            return
        acks.answer(position, ack_error(msg))


class _BatchAcks:
    """The answers to one batch's publishes, and a future done once every sent one has one."""

    __slots__ = ("answered", "answers", "complete", "expected")

    def __init__(self, size: int) -> None:
        self.answers: list[BaseException | None] = [_NO_ANSWER] * size
        self.answered = 0
        self.expected = -1  # unknown until every publish of the batch is written
        self.complete: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def refuse(self, index: int, error: BaseException) -> None:
        """Record why record ``index`` was not sent at all."""
        self.answers[index] = error

    def answer(self, index: int, error: BaseException | None) -> None:
        """Record the server's answer for record ``index`` (the first answer counts)."""
        if not 0 <= index < len(self.answers) or self.answers[index] is not _NO_ANSWER:
            return
        self.answers[index] = error
        self.answered += 1
        if self.answered == self.expected and not self.complete.done():
            self.complete.set_result(None)

    async def wait(self, sent: int, timeout: float) -> None:
        """Wait until all ``sent`` publishes are answered; the rest time out after ``timeout``."""
        self.expected = sent
        if self.answered < sent:
            await asyncio.wait((self.complete,), timeout=timeout)
        if self.answered < sent:
            late = SinkError(f"no JetStream acknowledgement within {timeout:g}s")
            self.answers = [late if a is _NO_ANSWER else a for a in self.answers]


#: The stand-in answer of a publish the server has not acknowledged (yet).
_NO_ANSWER = SinkError("no answer yet")


def ack_error(msg: Msg) -> BaseException | None:
    """What a JetStream publish acknowledgement says: ``None`` when stored, else the error."""
    data = msg.data
    # Every successful acknowledgement starts so; an error object's key is never escaped.
    if data.startswith(b'{"stream":') and b'"error":' not in data:
        return None
    headers = msg.headers
    if headers and headers.get(STATUS_HEADER) == NO_RESPONDERS_STATUS:
        return nats.js.errors.NoStreamResponseError()
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if isinstance(answer, dict):
        error = answer.get("error")
        if isinstance(error, dict):
            text = (
                f"JetStream refused the message: {error.get('description')} "
                f"(status {error.get('code')}, error {error.get('err_code')})"
            )
            if error.get("err_code") == MESSAGE_TOO_LARGE_FOR_STREAM:
                return PermanentDeliveryError(text)  # it will never fit this stream
            return SinkError(text)
        if "stream" in answer and "seq" in answer:
            return None
    return SinkError(f"unexpected JetStream acknowledgement: {data[:120]!r}")

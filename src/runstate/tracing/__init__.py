"""OpenTelemetry tracing: spans for engine commands, store writes and relay publishes.

Everything here depends on ``opentelemetry-api`` only (the ``otel`` extra), imported in this
one module. Without it, ``ENABLED`` is false, the decorators return the functions they wrap
unchanged and ``current_trace_context`` returns ``None``: nothing is traced, nothing is
stored, nothing costs anything. With the API but no SDK configured, spans are the API's
no-op ones. The application configures the SDK (its tracer provider and exporter); runstate
never does.

The trace context current when a store writes events (the store write's own span) is stored
with them as W3C ``traceparent``/``tracestate`` text; the relay sends it on with each message
and makes its publish span a child of it, so one trace runs from the command that wrote an
event to its delivery. See docs/tracing.md.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

try:
    from opentelemetry import context as _context
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    # W3C Trace Context explicitly, whatever global propagator the application set: the
    # stored contexts are W3C text, and so are the headers the relay sends.
    _propagator: Any = TraceContextTextMapPropagator()
except ImportError:  # the otel extra is not installed: tracing is off
    _trace = None  # type: ignore[assignment]
    _context = None  # type: ignore[assignment]
    _propagator = None

from ..errors import RunStateError
from ..types import DeliveryOutcome, DeliveryStatus, OutboxRecord

__all__ = [
    "ENABLED",
    "TRACER_NAME",
    "PublishTracer",
    "current_trace_context",
    "remote_context",
    "trace_headers",
    "traced_command",
    "traced_write",
    "use_tracer_provider",
]

#: Whether ``opentelemetry-api`` is importable (spans are recorded only if an SDK is set up).
ENABLED = _trace is not None
#: The instrumentation scope of every runstate span.
TRACER_NAME = "runstate"

F = TypeVar("F", bound=Callable[..., Any])

# The tracer of use_tracer_provider's provider, if one was given; else the global provider's,
# looked up again whenever the global provider changes (None while it is the API's proxy).
_explicit: Any = None
_provider: Any = None
_tracer: Any = None


def use_tracer_provider(provider: Any | None) -> None:
    """Record runstate's spans with ``provider`` instead of the global one (``None``: global).

    For applications (and tests) that keep a tracer provider of their own rather than
    setting OpenTelemetry's global one. Without OpenTelemetry this does nothing.
    """
    global _explicit
    if _trace is not None:
        _explicit = None if provider is None else provider.get_tracer(TRACER_NAME)


def _active_tracer() -> Any:
    """The tracer to record with now, or ``None`` while no SDK is configured.

    Unconfigured, the API's spans are no-ops that keep the caller's context current, which
    changes nothing that skipping them would not: so they are skipped, and cost nothing.
    """
    global _provider, _tracer
    if _explicit is not None:
        return _explicit
    provider = _trace.get_tracer_provider()
    if provider is not _provider:
        no_op = isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider)
        _tracer = None if no_op else provider.get_tracer(TRACER_NAME)
        _provider = provider
    return _tracer


def current_trace_context() -> tuple[str, str | None] | None:
    """The current span's W3C ``(traceparent, tracestate)``, or ``None`` when there is none."""
    if _trace is None:
        return None
    context = _trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    state = context.trace_state.to_header() if context.trace_state else ""
    return traceparent, state or None


def trace_headers() -> dict[str, str]:
    """The current trace context as W3C ``traceparent``/``tracestate`` request headers."""
    trace = current_trace_context()
    if trace is None:
        return {}
    traceparent, tracestate = trace
    return {"traceparent": traceparent, **({"tracestate": tracestate} if tracestate else {})}


@contextlib.contextmanager
def remote_context(traceparent: str | None, tracestate: str | None = None) -> Iterator[None]:
    """Make a caller's W3C trace context (request headers) current inside the block.

    A missing or malformed ``traceparent`` changes nothing, as does a missing API.
    """
    if _trace is None or not traceparent:
        yield
        return
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    token = _context.attach(_propagator.extract(carrier))
    try:
        yield
    finally:
        _context.detach(token)


def _error_type(span: Any, exc: BaseException) -> None:
    # error.type: the stable code of a runstate error, else the exception's class name.
    code = exc.code if isinstance(exc, RunStateError) else type(exc).__qualname__
    span.set_attribute("error.type", code)


def _wrap(
    function: F,
    span_name: Callable[[Any], str],
    kind: Any,
    attributes: Callable[[Any, tuple[Any, ...], dict[str, Any]], Mapping[str, Any]],
    finish: Callable[[Any, Any], None],
) -> F:
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def traced_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            tracer = _active_tracer()
            if tracer is None:
                return await function(self, *args, **kwargs)
            with tracer.start_as_current_span(
                span_name(self), kind=kind, attributes=attributes(self, args, kwargs)
            ) as span:
                try:
                    result = await function(self, *args, **kwargs)
                except BaseException as exc:
                    _error_type(span, exc)
                    raise
                if span.is_recording():
                    finish(span, result)
                return result

        return traced_async  # type: ignore[return-value]

    @functools.wraps(function)
    def traced_sync(self: Any, *args: Any, **kwargs: Any) -> Any:
        tracer = _active_tracer()
        if tracer is None:
            return function(self, *args, **kwargs)
        with tracer.start_as_current_span(
            span_name(self), kind=kind, attributes=attributes(self, args, kwargs)
        ) as span:
            try:
                result = function(self, *args, **kwargs)
            except BaseException as exc:
                _error_type(span, exc)
                raise
            if span.is_recording():
                finish(span, result)
            return result

    return traced_sync  # type: ignore[return-value]


def _run_id_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    # The first argument is a run id (commands, appends) or a bootstrap/metadata value; bad
    # input is the wrapped method's to reject, so anything else just goes unlabelled.
    first = args[0] if args else kwargs.get("run_id", kwargs.get("input", kwargs.get("metadata")))
    if isinstance(first, str):
        return first
    metadata = getattr(first, "metadata", first)
    run_id = getattr(metadata, "run_id", None)
    return run_id if isinstance(run_id, str) else None


def _finish_write(span: Any, result: Any) -> None:
    appended = getattr(result, "appended", None)
    if appended is not None:
        span.set_attribute("runstate.events.appended", len(appended))
        span.set_attribute("runstate.run.last_seq", result.last_seq)


def traced_write(operation: str) -> Callable[[F], F]:
    """Decorate a store method with a CLIENT span following the database conventions.

    The store provides ``trace_attributes`` (``db.system.name``, ``db.namespace``, ...); the
    span is named ``<operation> <db.namespace>`` and carries ``db.operation.name``.
    """

    def decorate(function: F) -> F:
        if _trace is None:
            return function

        def name(store: Any) -> str:
            namespace = getattr(store, "trace_attributes", {}).get("db.namespace")
            return f"{operation} {namespace}" if namespace else operation

        def attributes(store: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            values = {**getattr(store, "trace_attributes", {}), "db.operation.name": operation}
            run_id = _run_id_of(args, kwargs)
            if run_id is not None:
                values["runstate.run_id"] = run_id
            return values

        return _wrap(function, name, _trace.SpanKind.CLIENT, attributes, _finish_write)

    return decorate


def _finish_command(span: Any, result: Any) -> None:
    status = getattr(result, "status", None)
    if status is not None:
        span.set_attribute("runstate.run.status", str(status.value))
        span.set_attribute("runstate.run.last_seq", result.last_seq)


def traced_command(command: str) -> Callable[[F], F]:
    """Decorate a run engine command with an INTERNAL span ``RunEngine.<command>``."""

    def decorate(function: F) -> F:
        if _trace is None:
            return function

        def attributes(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            run_id = _run_id_of(args, kwargs)
            values = {"runstate.command": command}
            if run_id is not None:
                values["runstate.run_id"] = run_id
            return values

        span_name = f"RunEngine.{command}"
        return _wrap(
            function, lambda _: span_name, _trace.SpanKind.INTERNAL, attributes, _finish_command
        )

    return decorate


class PublishTracer:
    """PRODUCER spans for a relay's publishes: one per message, child of its stored context.

    ``system`` is ``messaging.system`` (``nats``, ``rabbitmq``, ``redis``, ``http``, ...);
    ``destination`` gives ``messaging.destination.name`` for a record.
    """

    def __init__(self, system: str, destination: Callable[[OutboxRecord], str]) -> None:
        self.system = system
        self.destination = destination

    def start(self, batch: Sequence[OutboxRecord]) -> list[Any] | None:
        """Start one span per record (``None`` without OpenTelemetry)."""
        tracer = None if _trace is None else _active_tracer()
        if tracer is None:
            return None
        spans = []
        for record in batch:
            parent = None
            if record.traceparent is not None:
                carrier = {"traceparent": record.traceparent}
                if record.tracestate is not None:
                    carrier["tracestate"] = record.tracestate
                parent = _propagator.extract(carrier)
            destination = self.destination(record)
            event = record.event
            spans.append(
                tracer.start_span(
                    f"send {destination}",
                    context=parent,
                    kind=_trace.SpanKind.PRODUCER,
                    attributes={
                        "messaging.system": self.system,
                        "messaging.operation.type": "send",
                        "messaging.operation.name": "send",
                        "messaging.destination.name": destination,
                        "messaging.message.id": record.message_id,
                        "cloudevents.event_id": record.message_id,
                        "cloudevents.event_type": event.type,
                        "cloudevents.event_subject": event.run_id,
                        "runstate.run_id": event.run_id,
                        "runstate.event.seq": event.seq,
                        "runstate.delivery.attempt": record.attempts + 1,
                    },
                )
            )
        return spans

    def end(
        self,
        spans: list[Any] | None,
        batch: Sequence[OutboxRecord],
        outcomes: Sequence[DeliveryOutcome],
    ) -> None:
        """End the spans with each record's outcome (an error status unless delivered)."""
        if spans is None:
            return
        by_id = {outcome.outbox_id: outcome for outcome in outcomes}
        for record, span in zip(batch, spans, strict=True):
            outcome = by_id.get(record.outbox_id)
            if outcome is not None and span.is_recording():
                self._set_outcome(span, outcome)
            span.end()

    @staticmethod
    def _set_outcome(span: Any, outcome: DeliveryOutcome) -> None:
        span.set_attribute("runstate.delivery.outcome", outcome.status.value)
        if outcome.status is not DeliveryStatus.DELIVERED:
            span.set_attribute("error.type", outcome.status.value)
            span.set_status(_trace.StatusCode.ERROR, outcome.error or outcome.status.value)

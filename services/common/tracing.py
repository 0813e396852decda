"""OpenTelemetry tracing: off by default, configured from the standard ``OTEL_*`` variables.

:func:`setup_tracing` (called once by each entry point) installs an SDK tracer provider only when
the environment asks for traces: ``OTEL_TRACES_EXPORTER`` set to something other than ``none``,
or an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``);
``OTEL_SDK_DISABLED=true`` wins over both. It then instruments gRPC servers and channels (the
``opentelemetry-instrumentation-grpc`` interceptors, which carry W3C ``traceparent`` in the
call metadata) and :func:`asgi_middleware` wraps the REST apps (``opentelemetry-instrumentation
-asgi``). When tracing is off nothing is instrumented, and the helpers here return at once.

Across the outboxes the trace context travels *inside the event*: :func:`inject_event` adds the
current span's ``traceparent`` (and ``tracestate``) to the fields of an outbox event written in
the same Lua script as the business data, and the relay's :func:`delivery_span` continues that
trace for every delivery attempt. A batch call (several events of one receiver) is a span of its
own trace with one link per event (:func:`batch_span`). Log lines carry the current trace id
(:func:`current_trace_id`, see :mod:`services.common.logging`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common.errors import ConfigError

__all__ = [
    "TRACEPARENT_FIELD",
    "TRACESTATE_FIELD",
    "asgi_middleware",
    "batch_item_spans",
    "batch_span",
    "current_span_ids",
    "current_trace_id",
    "delivery_span",
    "enabled",
    "event_context",
    "inject_event",
    "record_failure",
    "setup_tracing",
    "span",
    "tag_request_id",
    "tracing_requested",
]

logger = logging.getLogger(__name__)

TRACEPARENT_FIELD: Final = "traceparent"
"""The outbox event field holding the W3C trace context of the write that recorded it."""
TRACESTATE_FIELD: Final = "tracestate"

_TRACER_NAME: Final = "missive"
_EXCLUDED_URLS: Final = "/health,/metrics"
"""REST paths traced by no span unless OTEL_PYTHON_ASGI_EXCLUDED_URLS says otherwise."""
_EXPORTERS: Final = ("otlp", "console")

# Process-wide on/off switch, set once by setup_tracing() at start-up (like logging's handler).
_state: dict[str, bool] = {"enabled": False}
_propagator: Final = TraceContextTextMapPropagator()


def tracing_requested(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` asks for traces (see the module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")]
    names = [n for n in names if n and n != "none"]
    unknown = [n for n in names if n not in _EXPORTERS]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER: unknown exporter {unknown[0]!r} (use otlp, console or none)"
        )
    protocol = environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    )
    if "otlp" in names and protocol.strip().lower() not in ("", "grpc"):
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: only 'grpc' is supported, not {protocol!r}"
        )
    return names


def setup_tracing(
    service_name: str, environ: Mapping[str, str] = os.environ, *, exporter: Any = None
) -> bool:
    """Install the tracer provider and the gRPC instrumentation if ``environ`` asks for traces.

    Call once, before any gRPC server or channel is created. ``exporter`` (a SpanExporter) adds
    an exporter of the caller's (tests use an in-memory one) and turns tracing on by itself.
    ``service.name`` is ``OTEL_SERVICE_NAME`` when set, else ``service_name``. Returns whether
    tracing is on. ConfigError (exit code 2 from an entry point) names the variable when the
    configuration is unusable.
    """
    if not (tracing_requested(environ) or exporter is not None):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    names = _exporter_names(environ) if tracing_requested(environ) else []
    attributes = {"service.name": environ.get("OTEL_SERVICE_NAME") or service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _instrument_grpc(environ)
    _state["enabled"] = True
    logger.info("tracing on: service.name %s, exporters %s", attributes["service.name"], names)
    return True


def _instrument_grpc(environ: Mapping[str, str]) -> None:
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
    )
    from opentelemetry.instrumentation.grpc.filters import any_of, negate, service_prefix

    # Health probes and reflection make no traces, unless OTEL_PYTHON_GRPC_EXCLUDED_SERVICES
    # (read by the instrumentation itself) names the services to leave out instead.
    probes = None
    if not environ.get("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES"):
        probes = negate(any_of(service_prefix("grpc.health."), service_prefix("grpc.reflection.")))
    server = GrpcAioInstrumentorServer(filter_=probes)  # type: ignore[no-untyped-call]
    if not server.is_instrumented_by_opentelemetry:
        server.instrument()
    client = GrpcAioInstrumentorClient(filter_=probes)  # type: ignore[no-untyped-call]
    if not client.is_instrumented_by_opentelemetry:
        client.instrument()


def enabled() -> bool:
    """Whether :func:`setup_tracing` turned tracing on in this process."""
    return _state["enabled"]


def _tracer() -> trace.Tracer:
    return trace.get_tracer(_TRACER_NAME)


def asgi_middleware(app: Any) -> Any:
    """``app`` wrapped in the ASGI instrumentation when tracing is on, else ``app`` itself."""
    if not _state["enabled"]:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    excluded = os.environ.get("OTEL_PYTHON_ASGI_EXCLUDED_URLS", _EXCLUDED_URLS)
    # One span per request: not one per ASGI receive/send message besides.
    return OpenTelemetryMiddleware(app, excluded_urls=excluded, exclude_spans=["receive", "send"])


def tag_request_id(request_id: str) -> None:
    """Record ``request_id`` on the current span (``missive.request_id``), if one is recorded."""
    if _state["enabled"]:
        current = trace.get_current_span()
        if current.is_recording():
            current.set_attribute("missive.request_id", request_id)


def current_trace_id() -> str | None:
    """The current trace id (32 hex digits), or None outside a recorded trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def current_span_ids() -> tuple[str, str] | None:
    """The current (trace id, span id) in hex, or None outside a recorded trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def inject_event(event: dict[str, str]) -> dict[str, str]:
    """``event`` with the current trace context added (``traceparent``, ``tracestate``).

    Unchanged when tracing is off or no span is current, so events then carry no trace field.
    """
    if _state["enabled"] and trace.get_current_span().get_span_context().is_valid:
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        if TRACEPARENT_FIELD in carrier:
            event[TRACEPARENT_FIELD] = carrier[TRACEPARENT_FIELD]
            if carrier.get(TRACESTATE_FIELD):
                event[TRACESTATE_FIELD] = carrier[TRACESTATE_FIELD]
    return event


def _event_context(fields: Mapping[str, str]) -> Any:
    """The trace context an outbox event carries (an empty context when it carries none)."""
    carrier = {key: fields[key] for key in (TRACEPARENT_FIELD, TRACESTATE_FIELD) if key in fields}
    return _propagator.extract(carrier)


def batch_item_spans(
    stream: str,
    entries: Sequence[tuple[str, Mapping[str, str]]],
    started_ns: int,
    failure: str | None,
) -> None:
    """Record, in each event's own trace, its part in the current batch call (``started_ns`` to
    now): a CONSUMER span ``deliver <stream>`` linking to the batch's span, failed with
    ``failure`` when the call failed. So the trace of a message delivered in a batch still ends
    with its delivery, and leads to the batch's trace. A no-op when tracing is off.
    """
    if not _state["enabled"]:
        return
    batch = trace.get_current_span().get_span_context()
    links = [Link(batch)] if batch.is_valid else []
    tracer = _tracer()
    for entry_id, fields in entries:
        parent = _event_context(fields)
        if not trace.get_current_span(parent).get_span_context().is_valid:
            continue
        item = tracer.start_span(
            f"deliver {stream}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            start_time=started_ns,
            attributes={
                "messaging.system": "redis",
                "messaging.operation.type": "process",
                "messaging.destination.name": stream,
                "messaging.message.id": entry_id,
                "missive.delivery.batched": True,
            },
        )
        if failure is not None:
            item.set_status(Status(StatusCode.ERROR, failure))
        item.end()


@contextmanager
def event_context(fields: Mapping[str, str]) -> Iterator[None]:
    """Run a block in the trace context an outbox event carries (nothing when tracing is off)."""
    if not _state["enabled"] or TRACEPARENT_FIELD not in fields:
        yield
        return
    token = otel_context.attach(_event_context(fields))
    try:
        yield
    finally:
        otel_context.detach(token)


def record_failure(exc: BaseException) -> None:
    """Mark the current span failed with ``exc`` (recorded as an exception event)."""
    if _state["enabled"]:
        current = trace.get_current_span()
        if current.is_recording():
            current.record_exception(exc)
            current.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def delivery_span(
    stream: str, entry_id: str, fields: Mapping[str, str], attempt: int
) -> AbstractContextManager[Any]:
    """A CONSUMER span for one delivery attempt of an outbox entry, child of its event's trace.

    A no-op when tracing is off. An event without trace context starts a new trace.
    """
    if not _state["enabled"]:
        return nullcontext()
    return _tracer().start_as_current_span(
        f"deliver {stream}",
        context=_event_context(fields),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.destination.name": stream,
            "messaging.message.id": entry_id,
            "missive.delivery.attempt": attempt,
        },
    )


def batch_span(
    stream: str, entries: Sequence[tuple[str, Mapping[str, str]]]
) -> AbstractContextManager[Any]:
    """A CONSUMER span for one batch call: its own trace, with a link to each event's context.

    A no-op when tracing is off.
    """
    if not _state["enabled"]:
        return nullcontext()
    links = []
    for entry_id, fields in entries:
        context = trace.get_current_span(_event_context(fields)).get_span_context()
        if context.is_valid:
            links.append(Link(context, {"messaging.message.id": entry_id}))
    return _tracer().start_as_current_span(
        f"deliver {stream} batch",
        context=trace.set_span_in_context(trace.INVALID_SPAN),  # a root: no single parent
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.destination.name": stream,
            "messaging.batch.message_count": len(entries),
        },
    )


def span(name: str, **attributes: str | int | bool) -> AbstractContextManager[Any]:
    """An INTERNAL child span of the current one, or a no-op when tracing is off."""
    if not _state["enabled"]:
        return nullcontext()
    return _tracer().start_as_current_span(name, attributes=attributes)

"""Tracing: its switch, its off path, and on (in-memory spans) across a real outbox and relay.

The trace of a message through the whole system is tested in tests/e2e/test_tracing.py.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.common import tracing
from services.common.delivery import (
    OutboxConfig,
    PermanentDeliveryError,
    Relay,
    TransientDeliveryError,
)
from services.common.errors import ConfigError
from services.common.logging import configure_logging, get_request_id
from services.common.outbox import OUTBOX_LUA, outbox_lua_args
from services.common.redis import create_redis


@pytest.mark.parametrize(
    ("environ", "requested"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, True),
    ],
)
def test_tracing_is_requested_only_by_the_standard_variables(
    environ: dict[str, str], requested: bool
) -> None:
    assert tracing.tracing_requested(environ) is requested


def test_off_by_default_installs_nothing() -> None:
    assert tracing.setup_tracing("test-service", {}) is False
    assert not tracing.enabled()
    # No SDK provider: the API's default one, whose spans record nothing.
    from opentelemetry import trace

    assert not trace.get_tracer("x").start_span("s").is_recording()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER: unknown exporter 'jaeger'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "OTEL_EXPORTER_OTLP_PROTOCOL: only 'grpc' is supported",
        ),
    ],
)
def test_an_unusable_configuration_names_its_variable_and_installs_nothing(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        tracing.setup_tracing("test-service", environ)
    assert not tracing.enabled()


def test_off_events_carry_no_trace_context() -> None:
    event = {"message_id": "1", "receiver_email": "bob@example.com"}
    args = outbox_lua_args(event)
    assert args == ["4", "message_id", "1", "receiver_email", "bob@example.com"]
    assert tracing.inject_event(dict(event)) == event


def test_off_helpers_are_no_ops() -> None:
    carried = {"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}
    with tracing.delivery_span("outbox:x", "1-0", carried, 1) as span:
        assert span is None
    with tracing.batch_span("outbox:x", [("1-0", {})]) as span:
        assert span is None
    with tracing.span("live push") as span:
        assert span is None
    with tracing.event_context(carried):
        assert tracing.current_trace_id() is None
    tracing.record_failure(RuntimeError("no span to mark"))
    assert tracing.current_trace_id() is None
    assert tracing.current_span_ids() is None
    app = object()
    assert tracing.asgi_middleware(app) is app


def test_log_lines_carry_null_trace_ids_when_off() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("INFO", "json", "svc", stream=stream)
    try:
        logging.getLogger("services.test").info("hello")
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["trace_id"] is None and line["span_id"] is None


def test_an_entry_point_refuses_an_unusable_configuration_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "jaeger", "KEYS_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "services.frontend"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "OTEL_TRACES_EXPORTER: unknown exporter 'jaeger'" in done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr


# --- tracing on, in this process: a local SDK provider with an in-memory exporter -------------
# (setup_tracing() installs a process-wide provider, once; these tests use a provider of their
# own and leave the process as they found it.)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setitem(tracing._state, "enabled", True)
    monkeypatch.setattr(tracing, "_tracer", lambda: provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = create_redis(redis_url, 0)
    yield client
    await client.aclose()


_PUBLISH = OUTBOX_LUA + "return outbox_xadd(KEYS[1], ARGV, 1)"
_CFG = OutboxConfig(
    stream="outbox:traced",
    group="traced-relay",
    dead_letter_stream="outbox:traced:dead",
    block_ms=50,
    backoff_initial=0.005,
    backoff_max=0.02,
)


def _hex(span: Any) -> tuple[str, str]:
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


async def _write(r: redis.asyncio.Redis, key: str) -> tuple[str, str]:
    """Write an event inside a span of its own, as a request would; that span's ids."""
    with tracing._tracer().start_as_current_span(f"send {key}") as writer:
        await r.eval(_PUBLISH, 1, _CFG.stream, *outbox_lua_args({"key": key}))
    return _hex(writer)


async def _drain(relay: Relay, done: Any) -> None:
    for _ in range(100):
        if done():
            return
        await relay.drain_once()
    raise AssertionError(relay.stats())


async def test_the_event_carries_the_writers_context_and_each_attempt_continues_it(
    spans: InMemorySpanExporter, r: redis.asyncio.Redis
) -> None:
    trace_id, writer_id = await _write(r, "a")
    entries: Any = await r.xrange(_CFG.stream)
    stored = entries[0][1]
    assert stored["traceparent"].startswith(f"00-{trace_id}-{writer_id}-")  # then its flags

    seen: list[tuple[str | None, str | None]] = []
    log = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging("INFO", "json", "relay", stream=log)

    async def handler(entry_id: str, fields: dict[str, str]) -> None:
        seen.append((tracing.current_trace_id(), get_request_id()))
        logging.getLogger("services.test").info("delivering %s", entry_id)
        if len(seen) == 1:
            raise TransientDeliveryError("the receiver is down")

    relay = Relay(r, _CFG, "c1", handler)
    try:
        await relay.ensure_group()
        await _drain(relay, lambda: relay.stats()["delivered"] == 1)
    finally:
        for added in list(root.handlers):
            if added not in handlers:
                root.removeHandler(added)
                added.close()
        root.setLevel(level)

    entry_id = entries[0][0]
    assert seen == [(trace_id, entry_id), (trace_id, entry_id)]
    attempts = [s for s in spans.get_finished_spans() if s.name == "deliver outbox:traced"]
    assert len(attempts) == 2
    for attempt in attempts:
        assert attempt.parent is not None
        assert format(attempt.parent.span_id, "016x") == writer_id
        assert _hex(attempt)[0] == trace_id
        assert attempt.kind == SpanKind.CONSUMER
    assert [a.status.status_code for a in attempts] == [StatusCode.ERROR, StatusCode.UNSET]
    assert [(a.attributes or {}).get("missive.delivery.attempt") for a in attempts] == [1, 2]
    # Both the handler's line and the relay's warning about the failed attempt carry the trace.
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    traced = [line for line in lines if line["trace_id"] == trace_id]
    assert {line["logger"] for line in traced} >= {
        "services.test",
        "services.common.delivery.attempts",
    }
    assert all(line["request_id"] == entry_id for line in traced)


async def test_a_batch_links_every_event_and_each_event_records_its_part(
    spans: InMemorySpanExporter, r: redis.asyncio.Redis
) -> None:
    writers = [await _write(r, f"k{i}") for i in range(3)]
    batch_traces: list[str | None] = []

    async def handler(entry_id: str, fields: dict[str, str]) -> None:
        raise AssertionError("a backlog of one lane goes in one batch")

    async def batch_handler(
        items: list[tuple[str, dict[str, str]]],
    ) -> list[PermanentDeliveryError | None]:
        batch_traces.append(tracing.current_trace_id())
        return [None] * len(items)

    relay = Relay(r, _CFG, "c1", handler, batch_handler=batch_handler)
    await relay.ensure_group()
    await _drain(relay, lambda: relay.stats()["delivered"] == 3)

    finished = spans.get_finished_spans()
    batch = next(s for s in finished if s.name == "deliver outbox:traced batch")
    assert batch.parent is None and batch_traces == [_hex(batch)[0]]
    linked = {
        (format(k.context.trace_id, "032x"), format(k.context.span_id, "016x")) for k in batch.links
    }
    assert linked == set(writers)
    parts = [s for s in finished if s.name == "deliver outbox:traced"]
    assert len(parts) == 3
    for part in parts:
        assert (part.attributes or {}).get("missive.delivery.batched") is True
        assert part.parent is not None
        assert (_hex(part)[0], format(part.parent.span_id, "016x")) in set(writers)
        assert [_hex_context(k.context) for k in part.links] == [_hex(batch)]


def _hex_context(context: Any) -> tuple[str, str]:
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


async def test_an_event_written_outside_any_span_starts_a_trace_at_its_delivery(
    spans: InMemorySpanExporter, r: redis.asyncio.Redis
) -> None:
    await r.eval(_PUBLISH, 1, _CFG.stream, *outbox_lua_args({"key": "x"}))
    entries: Any = await r.xrange(_CFG.stream)
    assert "traceparent" not in entries[0][1]
    delivered: list[str | None] = []

    async def handler(entry_id: str, fields: dict[str, str]) -> None:
        delivered.append(tracing.current_trace_id())

    relay = Relay(r, _CFG, "c1", handler)
    await relay.ensure_group()
    await _drain(relay, lambda: relay.stats()["delivered"] == 1)
    (attempt,) = [s for s in spans.get_finished_spans() if s.name == "deliver outbox:traced"]
    assert attempt.parent is None and delivered == [_hex(attempt)[0]]


def test_log_lines_inside_a_span_carry_its_ids_in_both_formats(
    spans: InMemorySpanExporter,
) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    json_out, text_out = io.StringIO(), io.StringIO()
    try:
        with tracing._tracer().start_as_current_span("work") as current:
            configure_logging("INFO", "json", "svc", stream=json_out)
            logging.getLogger("services.test").info("one")
            configure_logging("INFO", "text", "svc", stream=text_out)
            logging.getLogger("services.test").info("two")
    finally:
        for added in list(root.handlers):
            if added not in handlers:
                root.removeHandler(added)
                added.close()
        root.setLevel(level)
    trace_id, span_id = _hex(current)
    line = json.loads(json_out.getvalue())
    assert (line["trace_id"], line["span_id"]) == (trace_id, span_id)
    assert f"trace={trace_id}" in text_out.getvalue()

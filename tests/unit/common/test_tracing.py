"""Tracing's switch and its off path (the tests of traces themselves are in tests/e2e)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.common import tracing
from services.common.errors import ConfigError
from services.common.logging import configure_logging
from services.common.outbox import outbox_lua_args


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

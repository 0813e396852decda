"""Tracing through the whole system: one SendMessage, one trace across four services and two relays.

The services run as processes through their real entry points, exporting with the real OTLP/gRPC
exporter to an in-memory span collector in this test (a TraceService on loopback), configured
only with the standard ``OTEL_*`` variables.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis.asyncio
from missive.frontend.v1 import frontend_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from services.common.ports import free_port
from tests.helpers.clients import Stubs, next_notification, register_and_login
from tests.helpers.system import System

pytestmark = pytest.mark.e2e

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
CONSUMER = trace_pb2.Span.SPAN_KIND_CONSUMER
INTERNAL = trace_pb2.Span.SPAN_KIND_INTERNAL


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...] = ()
    failed: bool = False


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver keeping every span in memory."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        received = []
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    attributes = {a.key: _value(a.value) for a in s.attributes}
                    received.append(
                        Span(
                            service,
                            s.name,
                            s.kind,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            attributes,
                            tuple((k.trace_id.hex(), k.span_id.hex()) for k in s.links),
                            s.status.code == trace_pb2.Status.STATUS_CODE_ERROR,
                        )
                    )
        with self._lock:
            self.spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, int]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    receiver = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield receiver, port
    finally:
        server.stop(grace=None)


def _otel_env(port: int, **more: str) -> Any:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
        **more,
    }


@pytest.fixture(scope="module")
def traced(
    tmp_path_factory: pytest.TempPathFactory, collector: tuple[Collector, int]
) -> Iterator[System]:
    running = System.create(tmp_path_factory.mktemp("traced"), **_otel_env(collector[1]))
    try:
        running.start()
        yield running
    finally:
        running.close()


async def _send_over_rest(
    system: System, sender: Any, receiver: Any, content: str, request_id: str = ""
) -> int:
    headers = sender.headers | ({"X-Request-Id": request_id} if request_id else {})
    async with httpx.AsyncClient(base_url=system.rest_url("message"), timeout=10) as http:
        body = {"sender_email": sender.email, "receiver_email": receiver.email, "content": content}
        reply = await http.post("/messages", json=body, headers=headers)
        assert reply.status_code == 201, reply.text
        return int(reply.json()["id"])


def _rest_send_span(collector: Collector, message_id: int, within: float = 15) -> Span:
    """The message service's HTTP server span of the POST /messages that stored the message."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for s in list(collector.spans):
            if (
                s.service == "message-service"
                and s.kind == SERVER
                and s.attributes.get("http.request.method", s.attributes.get("http.method"))
                == "POST"
                and s.parent_id == ""
                and any(d.name == "live push" and d.trace_id == s.trace_id for d in collector.spans)
            ):
                return s
        time.sleep(0.1)
    raise AssertionError(
        f"no complete trace; spans: {[(s.service, s.name) for s in collector.spans]}"
    )


def _chain(spans: list[Span], leaf: Span) -> list[Span]:
    """``leaf`` and its ancestors up to the root, each parent found in ``spans``."""
    by_id = {s.span_id: s for s in spans}
    chain = [leaf]
    while chain[-1].parent_id:
        parent = by_id.get(chain[-1].parent_id)
        assert parent is not None, f"the parent of {chain[-1]} is missing from the trace"
        chain.append(parent)
    return chain


async def test_one_send_is_one_trace_across_every_service_and_both_relays(
    traced: System, collector: tuple[Collector, int]
) -> None:
    spans_in = collector[0]
    await traced.wait_healthy()
    stubs = Stubs.connect(traced)
    try:
        ada = await register_and_login(traced, "Ada")
        bob = await register_and_login(traced, "Bob")
        stream = stubs.frontend.SubscribeNotifications(
            frontend_pb2.SubscribeNotificationsRequest(email=bob.email), metadata=bob.metadata
        )
        try:
            await asyncio.sleep(0.3)
            message_id = await _send_over_rest(traced, ada, bob, "traced all the way")
            live = await next_notification(stream)
            assert live.message_id == message_id
        finally:
            stream.cancel()
    finally:
        await stubs.close()

    root = await asyncio.to_thread(_rest_send_span, spans_in, message_id)
    await asyncio.sleep(0.5)  # the last batches of spans
    spans = spans_in.trace(root.trace_id)
    assert {s.service for s in spans} >= {
        "user-service",
        "message-service",
        "notification-service",
        "frontend-service",
    }
    push = next(s for s in spans if s.name == "live push")
    chain = [(s.service, s.kind, s.name) for s in _chain(spans, push)]
    frontend_rpc = "/missive.frontend.v1.FrontendService/ReceiveNotification"
    notification_rpc = "/missive.notification.v1.NotificationService/CreateNotification"
    expected_top = [
        ("frontend-service", INTERNAL, "live push"),
        ("frontend-service", SERVER, frontend_rpc),
        ("notification-service", CLIENT, frontend_rpc),
        ("notification-service", CONSUMER, "deliver outbox:frontend"),
        ("notification-service", SERVER, notification_rpc),
        ("message-service", CLIENT, notification_rpc),
        ("message-service", CONSUMER, "deliver outbox:notifications"),
    ]
    assert chain[: len(expected_top)] == expected_top, chain
    assert chain[-1] == (root.service, root.kind, root.name)  # the REST request is the root
    assert all(service == "message-service" for service, _, _ in chain[len(expected_top) :])
    # The users were checked from inside the same request, over gRPC.
    check = [s for s in spans if s.service == "user-service" and s.kind == SERVER]
    assert check and all(_chain(spans, s)[-1] == root for s in check)
    assert {s.name for s in check} >= {"/missive.user.v1.UserService/CheckUserExists"}
    # Health probes (every service follows its peers' health) make no traces.
    assert not [s for s in spans_in.spans if "grpc.health" in s.name]

    # Every service that handled the message wrote log lines carrying this trace id.
    for name in ("user", "message", "notification", "frontend"):
        lines = [json.loads(line) for line in _json_lines(traced.services[name].log_path)]
        mine = [line for line in lines if line.get("trace_id") == root.trace_id]
        assert mine, f"no log line of {name} carries trace {root.trace_id}"
        assert all(line["request_id"] for line in mine)
        if name in ("message", "notification"):  # the relay's own lines too
            assert any(line["logger"] == "services.common.receivers" for line in mine), name


async def _eventually(find: Any, within: float = 20) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError("not found in time")


async def test_a_batch_delivery_links_to_the_trace_of_each_event(
    traced: System, collector: tuple[Collector, int]
) -> None:
    spans_in = collector[0]
    await traced.wait_healthy()
    ada = await register_and_login(traced, "Ada")
    bob = await register_and_login(traced, "Bob")
    traced.stop("notification")
    try:
        ids = [f"batch-{i}-{uuid.uuid4().hex}" for i in range(3)]
        for i, request_id in enumerate(ids):
            await _send_over_rest(traced, ada, bob, f"backlog {i}", request_id)
    finally:
        traced.start("notification")
    await traced.wait_healthy("notification")

    def roots() -> list[Span]:
        found = [
            s
            for s in list(spans_in.spans)
            if s.kind == SERVER
            and s.attributes.get("missive.request_id") in ids
            and s.service == "message-service"
        ]
        return found if len(found) == 3 else []

    sent = {(s.trace_id, s.span_id) for s in await _eventually(roots)}

    def batch() -> Span | None:
        return next(
            (
                s
                for s in list(spans_in.spans)
                if s.name == "deliver outbox:notifications batch" and sent & set(s.links)
            ),
            None,
        )

    found = await _eventually(batch)
    # A root of its own trace (no single parent), linked to every event's trace it delivered.
    assert found.parent_id == "" and found.kind == CONSUMER
    assert len(found.links) == found.attributes["messaging.batch.message_count"]
    events_left = sent - set(found.links)
    # The first event may have gone alone while the receiver was down (a single call).
    assert len(events_left) <= 1

    def batch_call() -> list[Span]:
        return [
            s
            for s in spans_in.trace(found.trace_id)
            if s.service == "notification-service"
            and s.kind == SERVER
            and s.name.endswith("/CreateNotifications")
        ]

    assert await _eventually(batch_call)
    # Each event's own trace ends with its part in the batch, linking to the batch's span.
    for trace_id, span_id in set(found.links):
        part = [
            s
            for s in spans_in.trace(trace_id)
            if s.name == "deliver outbox:notifications"
            and s.attributes.get("missive.delivery.batched")
        ]
        assert len(part) == 1 and part[0].parent_id == span_id and not part[0].failed
        assert part[0].links == ((found.trace_id, found.span_id),)


async def test_each_delivery_attempt_is_a_span_of_the_events_trace(
    traced: System, collector: tuple[Collector, int]
) -> None:
    spans_in = collector[0]
    await traced.wait_healthy()
    ada = await register_and_login(traced, "Ada")
    bob = await register_and_login(traced, "Bob")
    request_id = f"retried-{uuid.uuid4().hex}"
    traced.stop("frontend")
    try:
        await _send_over_rest(traced, ada, bob, "while the frontend is down", request_id)
        await asyncio.sleep(3)  # at least one attempt runs out its 2 s deadline
    finally:
        traced.start("frontend")
    await traced.wait_healthy("frontend")

    def root() -> Span | None:
        return next(
            (
                s
                for s in list(spans_in.spans)
                if s.attributes.get("missive.request_id") == request_id
                and s.service == "message-service"
                and s.kind == SERVER
            ),
            None,
        )

    sent = await _eventually(root)

    def attempts() -> list[Span]:
        found = [s for s in spans_in.trace(sent.trace_id) if s.name == "deliver outbox:frontend"]
        return found if any(not s.failed for s in found) else []

    tried = await _eventually(attempts)
    assert any(s.failed for s in tried), "the attempts while the frontend was down failed"
    # Every attempt is a child of the call that wrote the event: CreateNotification.
    spans = spans_in.trace(sent.trace_id)
    by_id = {s.span_id: s for s in spans}
    parents = {by_id[s.parent_id].name for s in tried}
    assert parents == {"/missive.notification.v1.NotificationService/CreateNotification"}
    assert sorted(s.attributes["missive.delivery.attempt"] for s in tried)[0] == 1


def _json_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("{")]


async def test_tracing_off_exports_nothing_and_stores_no_trace_context(
    tmp_path: Path, collector: tuple[Collector, int]
) -> None:
    spans_in = collector[0]
    # An endpoint is configured, but OTEL_TRACES_EXPORTER=none keeps tracing off.
    env = _otel_env(collector[1], OTEL_TRACES_EXPORTER="none", OTEL_SERVICE_NAME="untraced")
    system = System.create(tmp_path, **env)
    try:
        system.start("user", "message", "frontend")  # NotificationService stays down
        await system.wait_healthy("user", "message", "frontend")
        stubs = Stubs.connect(system)
        try:
            ada = await register_and_login(system, "Ada")
            bob = await register_and_login(system, "Bob")
            message_id = await _send_over_rest(system, ada, bob, "untraced")
        finally:
            await stubs.close()
        r = redis.asyncio.Redis.from_url(system.valkey.url, db=1, decode_responses=True)
        try:
            entries: Any = await r.xrange("outbox:notifications")
        finally:
            await r.aclose()
        events = [fields for _, fields in entries if fields.get("message_id") == str(message_id)]
        assert len(events) == 1
        assert "traceparent" not in events[0] and "tracestate" not in events[0]
        lines = [json.loads(line) for line in _json_lines(system.services["message"].log_path)]
        assert lines and all(line["trace_id"] is None for line in lines)
        await asyncio.sleep(0.5)
        assert not [s for s in spans_in.spans if s.service == "untraced"]
    finally:
        system.close()

"""The metrics module against real parts: a grpc.aio server and channel on loopback, a uvicorn
server with the ASGI middleware, the embedded Valkey, and promtool on the exposition."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY, generate_latest
from redis.exceptions import ResponseError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from services.common import metrics
from services.common.delivery import OutboxConfig
from services.common.errors import PortInUse
from services.common.metrics import families as f
from services.common.metrics.mounting import metrics_listener
from services.common.ports import free_port
from services.common.redis import auto_pipeline_of, create_redis

ROOT = Path(__file__).resolve().parents[3]
PROMTOOL = Path("/usr/bin/promtool")
PROBE = "missive.test.v1.Probe"
HEALTH = "grpc.health.v1.Health"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """Sample values before a block, to assert exact increments (the registry is process-wide)."""

    def __init__(self, *samples: tuple[str, dict[str, str]]) -> None:
        self._before = {(n, tuple(sorted(lb.items()))): value(n, **lb) for n, lb in samples}

    def __call__(self, name: str, **labels: str) -> float:
        return value(name, **labels) - self._before[(name, tuple(sorted(labels.items())))]


# --- gRPC ---------------------------------------------------------------------------------------


async def _ok(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _abort(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request")
    raise AssertionError("unreachable")


async def _set_code(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    context.set_code(grpc.StatusCode.NOT_FOUND)
    context.set_details("no such thing")
    return b""


async def _crash(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    raise RuntimeError("a handler bug")


async def _stream(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    for i in range(int(request.decode())):
        yield str(i).encode()


async def _stream_then_abort(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    yield b"first"
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "reading too slowly")


def _probe_handler() -> grpc.GenericRpcHandler:
    unary = grpc.unary_unary_rpc_method_handler
    return grpc.method_handlers_generic_handler(
        PROBE,
        {
            "Ok": unary(_ok),
            "Abort": unary(_abort),
            "SetCode": unary(_set_code),
            "Crash": unary(_crash),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
            "StreamAbort": grpc.unary_stream_rpc_method_handler(_stream_then_abort),
        },
    )


@dataclass
class Grpc:
    server: grpc.aio.Server
    channel: grpc.aio.Channel
    port: int


@pytest.fixture
async def rpc() -> AsyncIterator[Grpc]:
    server = grpc.aio.server(interceptors=[metrics.ServerMetricsInterceptor()])
    server.add_generic_rpc_handlers((_probe_handler(),))
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", interceptors=metrics.client_interceptors()
    )
    yield Grpc(server, channel, port)
    await channel.close()
    await server.stop(None)


def _rpc_samples(side: str, method: str, codes: tuple[str, ...], kind: str = "unary"):
    base = {"grpc_type": kind, "grpc_service": PROBE, "grpc_method": method}
    out = [(f"grpc_{side}_started_total", base), (f"grpc_{side}_handling_seconds_count", base)]
    out += [(f"grpc_{side}_handled_total", {**base, "grpc_code": c}) for c in codes]
    return out


async def _call(channel: grpc.aio.Channel, method: str) -> grpc.StatusCode:
    try:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            f"/{PROBE}/{method}"
        )
        await call(b"x", timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


CODES = {"Ok": "OK", "Abort": "INVALID_ARGUMENT", "SetCode": "NOT_FOUND", "Crash": "UNKNOWN"}


async def test_grpc_server_and_client_count_every_call_by_code(rpc: Grpc) -> None:
    samples = [
        s
        for method, code in CODES.items()
        for side in ("server", "client")
        for s in _rpc_samples(side, method, tuple(CODES.values()))
    ]
    delta = Delta(*samples)
    calls = {"Ok": 3, "Abort": 2, "SetCode": 1, "Crash": 2}
    for method, n in calls.items():
        for _ in range(n):
            assert (await _call(rpc.channel, method)).name == CODES[method]
    for side in ("server", "client"):
        for method, n in calls.items():
            base = {"grpc_type": "unary", "grpc_service": PROBE, "grpc_method": method}
            assert delta(f"grpc_{side}_started_total", **base) == n
            assert delta(f"grpc_{side}_handling_seconds_count", **base) == n
            for code in CODES.values():
                expected = n if code == CODES[method] else 0
                got = delta(f"grpc_{side}_handled_total", **base, grpc_code=code)
                assert got == expected, (side, method, code)


async def test_grpc_health_service_and_unknown_methods(rpc: Grpc) -> None:
    base = {"grpc_type": "unary", "grpc_service": HEALTH, "grpc_method": "Check"}
    delta = Delta(
        ("grpc_server_handled_total", {**base, "grpc_code": "OK"}),
        ("grpc_server_handled_total", {**base, "grpc_code": "NOT_FOUND"}),
    )
    stub: Any = health_pb2_grpc.HealthStub(rpc.channel)
    await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert delta("grpc_server_handled_total", **base, grpc_code="OK") == 1
    assert delta("grpc_server_handled_total", **base, grpc_code="NOT_FOUND") == 1
    # An unregistered method is answered UNIMPLEMENTED by gRPC and creates no server label.
    bare = grpc.aio.insecure_channel(f"127.0.0.1:{rpc.port}")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            evil: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = bare.unary_unary(
                "/evil.Service/user@example.com"
            )
            await evil(b"", timeout=5)
    finally:
        await bare.close()
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert b"user@example.com" not in generate_latest(REGISTRY)


async def test_grpc_server_stream_counts_messages_and_status(rpc: Grpc) -> None:
    base = {"grpc_type": "server_stream", "grpc_service": PROBE, "grpc_method": "Stream"}
    delta = Delta(
        ("grpc_server_msg_sent_total", base),
        ("grpc_server_handled_total", {**base, "grpc_code": "OK"}),
        ("grpc_client_handled_total", {**base, "grpc_code": "OK"}),
        ("grpc_client_started_total", base),
    )
    stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = rpc.channel.unary_stream(
        f"/{PROBE}/Stream"
    )
    call = stream(b"4", timeout=5)
    received = [item async for item in call]
    assert received == [b"0", b"1", b"2", b"3"]
    assert delta("grpc_server_msg_sent_total", **base) == 4
    assert delta("grpc_server_handled_total", **base, grpc_code="OK") == 1
    assert delta("grpc_client_started_total", **base) == 1
    for _ in range(50):  # the client records a stream's status from a task once it ends
        if delta("grpc_client_handled_total", **base, grpc_code="OK") == 1:
            break
        await asyncio.sleep(0.01)
    assert delta("grpc_client_handled_total", **base, grpc_code="OK") == 1


@dataclass
class _Details:
    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


class _Context:
    """The one method of a servicer context the wrapper reads after a handler returns."""

    def code(self) -> None:
        return None


async def test_grpc_stream_ended_by_the_server_counts_its_code(rpc: Grpc) -> None:
    base = {"grpc_type": "server_stream", "grpc_service": PROBE, "grpc_method": "StreamAbort"}
    watched = [
        ("grpc_server_msg_sent_total", base),
        ("grpc_server_handled_total", {**base, "grpc_code": "RESOURCE_EXHAUSTED"}),
        ("grpc_server_handling_seconds_count", base),
        ("grpc_client_handled_total", {**base, "grpc_code": "RESOURCE_EXHAUSTED"}),
    ]
    delta = Delta(*watched)
    stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = rpc.channel.unary_stream(
        f"/{PROBE}/StreamAbort"
    )
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for item in stream(b"", timeout=5):
            received.append(item)
    assert received == [b"first"]
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert delta("grpc_server_msg_sent_total", **base) == 1
    assert delta("grpc_server_handled_total", **base, grpc_code="RESOURCE_EXHAUSTED") == 1
    assert delta("grpc_server_handling_seconds_count", **base) == 1
    for _ in range(50):
        if delta("grpc_client_handled_total", **base, grpc_code="RESOURCE_EXHAUSTED") == 1:
            break
        await asyncio.sleep(0.01)
    assert delta("grpc_client_handled_total", **base, grpc_code="RESOURCE_EXHAUSTED") == 1


async def test_server_interceptor_cost_per_call() -> None:
    """Micro-benchmark: the wrapped handler against the bare one (printed with -s)."""
    handler: Any = grpc.unary_unary_rpc_method_handler(_ok)
    details = _Details(f"/{PROBE}/Bench")

    async def continuation(_: grpc.HandlerCallDetails) -> Any:
        return handler

    interceptor = metrics.ServerMetricsInterceptor()
    context = _Context()

    async def per_call(intercept: bool, n: int = 20_000) -> float:
        start = time.perf_counter()
        for _ in range(n):
            chosen: Any = (
                await interceptor.intercept_service(continuation, details)  # type: ignore[arg-type]
                if intercept
                else handler
            )
            await chosen.unary_unary(b"x", context)
        return (time.perf_counter() - start) / n

    bare = min([await per_call(False) for _ in range(3)])
    metered = min([await per_call(True) for _ in range(3)])
    cost_us = (metered - bare) * 1e6

    # The services' edge interceptor builds a handler per call: the wrapper is rebuilt each time.
    async def fresh(_: grpc.HandlerCallDetails) -> Any:
        return grpc.unary_unary_rpc_method_handler(_ok)

    start = time.perf_counter()
    for _ in range(20_000):
        rebuilt: Any = await interceptor.intercept_service(fresh, details)  # type: ignore[arg-type]
        await rebuilt.unary_unary(b"x", context)
    fresh_us = ((time.perf_counter() - start) / 20_000 - bare) * 1e6
    print(
        f"server interceptor: {cost_us:.2f} µs per call, {fresh_us:.2f} µs with a handler "
        f"built per call (bare handler {bare * 1e6:.2f} µs)"
    )
    assert (
        value(
            "grpc_server_started_total", grpc_type="unary", grpc_service=PROBE, grpc_method="Bench"
        )
        == 80_000
    )
    assert fresh_us < 50
    assert cost_us < 50  # about 3 µs here; the bound only catches a pathological regression


class _DoneCall:
    """A finished call, as the continuation of a client interceptor returns it."""

    async def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.OK


async def test_client_interceptor_and_middleware_cost_per_call() -> None:
    """Micro-benchmarks of the client interceptor and the ASGI middleware (printed with -s)."""
    done = _DoneCall()
    interceptor = metrics.UnaryClientMetricsInterceptor()
    details: Any = grpc.aio.ClientCallDetails(f"/{PROBE}/Bench", None, None, None, None)

    async def continuation(_: Any, __: Any) -> _DoneCall:
        return done

    async def client(intercept: bool, n: int = 20_000) -> float:
        start = time.perf_counter()
        for _ in range(n):
            if intercept:
                await interceptor.intercept_unary_unary(continuation, details, b"x")
            else:
                await (await continuation(details, b"x")).code()
        return (time.perf_counter() - start) / n

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = metrics.MetricsMiddleware(app, routes=["/users/{email}"])
    scope = {"type": "http", "method": "GET", "path": "/users/a@b.c"}

    async def receive() -> Any:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        return None

    async def http(wrapped: bool, n: int = 20_000) -> float:
        chosen: Any = middleware if wrapped else app
        start = time.perf_counter()
        for _ in range(n):
            await chosen(scope, receive, send)
        return (time.perf_counter() - start) / n

    client_us = (
        min([await client(True) for _ in range(3)]) - min([await client(False) for _ in range(3)])
    ) * 1e6
    http_us = (
        min([await http(True) for _ in range(3)]) - min([await http(False) for _ in range(3)])
    ) * 1e6
    print(f"client interceptor: {client_us:.2f} µs per call; middleware: {http_us:.2f} µs")
    assert client_us < 50
    assert http_us < 50


async def test_loopback_round_trip_with_and_without_metrics(rpc: Grpc) -> None:
    """Both interceptors on a real loopback unary call, interleaved runs (printed with -s)."""
    plain = grpc.aio.server()
    plain.add_generic_rpc_handlers((_probe_handler(),))
    port = plain.add_insecure_port("127.0.0.1:0")
    await plain.start()
    bare = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        runs: dict[str, list[float]] = {"bare": [], "metered": []}
        for _ in range(5):
            runs["bare"].append(await _time_calls(bare))
            runs["metered"].append(await _time_calls(rpc.channel))
    finally:
        await bare.close()
        await plain.stop(None)
    without, with_metrics = min(runs["bare"]), min(runs["metered"])
    print(
        f"unary loopback round trip: {without * 1e6:.0f} µs bare, "
        f"{with_metrics * 1e6:.0f} µs with both interceptors"
    )
    assert with_metrics < 2 * without  # 2 shared cores: only a gross regression fails


async def _time_calls(channel: grpc.aio.Channel, n: int = 300) -> float:
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{PROBE}/Ok")
    for _ in range(20):
        await call(b"x")
    start = time.perf_counter()
    for _ in range(n):
        await call(b"x")
    return (time.perf_counter() - start) / n


# --- HTTP ---------------------------------------------------------------------------------------


async def _user(request: Request) -> JSONResponse:
    return JSONResponse({"email": request.path_params["email"]})


async def _boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("a handler bug")


def _starlette() -> Starlette:
    return Starlette(
        routes=[
            Route("/users/{email}", _user),
            Route("/users", lambda r: PlainTextResponse("list")),
            Route("/login", _boom, methods=["POST"]),
        ]
    )


@pytest.fixture
async def http_base() -> AsyncIterator[str]:
    templates = metrics.openapi_route_templates(ROOT / "openapi" / "user.yaml")
    app = metrics.MetricsMiddleware(_starlette(), routes=templates)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_http_counts_by_route_template_without_raw_paths(http_base: str) -> None:
    def labels(method: str, route: str, status: str) -> dict[str, str]:
        return {"method": method, "route": route, "status": status}

    watched = [
        labels("GET", "/users/{email}", "200"),
        labels("GET", "/users", "200"),
        labels("GET", "unmatched", "404"),
        labels("POST", "/login", "500"),
        labels("other", "/users", "405"),
    ]
    delta = Delta(
        *[("http_requests_total", w) for w in watched],
        *[("http_request_duration_seconds_count", w) for w in watched],
    )
    async with httpx.AsyncClient(base_url=http_base) as client:
        for email in ("alice@example.com", "bob@example.org", "carol%40example.net"):
            assert (await client.get(f"/users/{email}")).status_code == 200
        assert (await client.get("/users")).status_code == 200
        assert (await client.get("/no/such/dave@example.com")).status_code == 404
        assert (await client.post("/login")).status_code == 500
        assert (await client.request("PURGE", "/users")).status_code == 405
        exposition = await client.get("/metrics")
    assert exposition.status_code == 200
    assert exposition.headers["content-type"].startswith("text/plain; version=")
    expected = [3, 1, 1, 1, 1]
    for w, n in zip(watched, expected, strict=True):
        assert delta("http_requests_total", **w) == n, w
        assert delta("http_request_duration_seconds_count", **w) == n, w
    text = exposition.text
    assert "http_requests_total{" in text
    for raw in ("example.com", "example.org", "example.net", "/no/such", "PURGE"):
        assert raw not in text
    # /metrics itself is not counted
    assert 'route="/metrics"' not in text


def test_route_matcher_prefers_the_more_specific_template() -> None:
    match = metrics.RouteMatcher(["/users", "/users/{email}", "/users/{email}/revoke_tokens"])
    assert match("/users") == "/users"
    assert match("/users/a@b.c") == "/users/{email}"
    assert match("/users/a@b.c/revoke_tokens") == "/users/{email}/revoke_tokens"
    assert match("/users/a@b.c/other") == "unmatched"
    assert match("/users/") == "unmatched"
    prefixed = metrics.RouteMatcher(["/users/{email}"], prefix="/v1/")
    assert prefixed("/v1/users/x") == "/v1/users/{email}"


async def test_middleware_falls_back_to_the_starlette_route() -> None:
    app = metrics.MetricsMiddleware(_starlette())
    key = {"method": "GET", "route": "/users/{email}", "status": "200"}
    delta = Delta(("http_requests_total", key))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/users/eve@example.com")).status_code == 200
    assert delta("http_requests_total", **key) == 1


def test_metrics_port_scheme() -> None:
    assert metrics.metrics_port_env("frontend") == "FRONTEND_METRICS_PORT"
    assert metrics.metrics_port({}, "frontend", metrics.FRONTEND_METRICS_PORT) == 9464
    assert metrics.metrics_port({"FRONTEND_METRICS_PORT": "9500"}, "frontend", 9464) == 9500
    assert metrics.metrics_port({}, "user", None) is None  # served on the REST port
    assert metrics.metrics_port({"USER_METRICS_PORT": "0"}, "user", None) == 0
    with pytest.raises(Exception, match="USER_METRICS_PORT"):
        metrics.metrics_port({"USER_METRICS_PORT": "eighty"}, "user", None)


def test_standalone_server_serves_the_exposition_and_reports_a_taken_port() -> None:
    server = metrics.start_metrics_server("127.0.0.1", 0, "FRONTEND_METRICS_PORT")
    try:
        metrics.streams_open.inc()
        answer = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        assert answer.status_code == 200
        assert "missive_frontend_live_streams" in answer.text
        with pytest.raises(Exception, match="FRONTEND_METRICS_PORT"):
            metrics.start_metrics_server("127.0.0.1", server.port, "FRONTEND_METRICS_PORT")
    finally:
        metrics.streams_open.dec()
        server.close()


# --- Delivery and Redis -------------------------------------------------------------------------

OUTBOX = OutboxConfig(
    stream="outbox:test", group="test-relay", dead_letter_stream="outbox:test:dead"
)


async def test_outbox_collector_reads_lag_pending_and_dead_letters(redis_url: str) -> None:
    client = create_redis(redis_url, 0)
    try:
        collector = metrics.OutboxCollector(client, [OUTBOX], interval=0.05)
        [empty] = await collector.collect_once()  # no stream yet
        assert (empty.length, empty.lag, empty.pending, empty.dead_letters) == (0, 0.0, 0, 0)
        ids = [await client.xadd(OUTBOX.stream, {"n": str(i)}) for i in range(5)]
        [no_group] = await collector.collect_once()  # the relay has not created its group
        assert (no_group.length, no_group.lag) == (5, 5.0)
        await client.xgroup_create(OUTBOX.stream, OUTBOX.group, id="0")
        await client.xreadgroup(OUTBOX.group, "c1", {OUTBOX.stream: ">"}, count=3)
        await client.xack(OUTBOX.stream, OUTBOX.group, ids[0])
        await client.xadd(OUTBOX.dead_letter_stream, {"n": "x"})
        await asyncio.sleep(0.02)
        [snap] = await collector.collect_once()
        assert (snap.length, snap.lag, snap.pending, snap.dead_letters) == (5, 2.0, 2, 1)
        assert 0.02 <= snap.oldest_pending_age < 5
        labels = {"stream": OUTBOX.stream, "group": OUTBOX.group}
        assert value("missive_outbox_lag", **labels) == 2
        assert value("missive_outbox_pending", **labels) == 2
        assert value("missive_outbox_length", stream=OUTBOX.stream) == 5
        assert value("missive_outbox_dead_letters", stream=OUTBOX.stream) == 1
        # The relay catches up: lag and pending back to 0, through the periodic loop.
        await client.xreadgroup(OUTBOX.group, "c1", {OUTBOX.stream: ">"})
        await client.xack(OUTBOX.stream, OUTBOX.group, *ids)
        task = asyncio.create_task(collector.run())
        await asyncio.sleep(0.15)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert value("missive_outbox_lag", **labels) == 0
        assert value("missive_outbox_pending", **labels) == 0
        assert value("missive_outbox_oldest_pending_age_seconds", **labels) == 0
    finally:
        await client.aclose()


async def test_outbox_collector_counts_an_unreadable_outbox(redis_url: str) -> None:
    client = create_redis(redis_url, 0)
    try:
        await client.set(OUTBOX.stream, "not a stream")
        delta = Delta(("missive_outbox_collector_errors_total", {"stream": OUTBOX.stream}))
        snapshots = await metrics.OutboxCollector(client, [OUTBOX]).collect_once()
        # WRONGTYPE is not "no stream yet": the reading is skipped and counted.
        assert snapshots == []
        assert delta("missive_outbox_collector_errors_total", stream=OUTBOX.stream) == 1
    finally:
        await client.aclose()


def test_outbox_counters_and_delivery_latency() -> None:
    counters = metrics.OutboxMetrics("outbox:unit")
    names = ("added", "delivered", "retried", "dead_lettered")
    delta = Delta(
        *[(f"missive_outbox_{n}_total", {"stream": "outbox:unit"}) for n in names],
        ("missive_delivery_latency_seconds_count", {"hop": metrics.HOP_NOTIFICATION}),
        (
            "missive_delivery_latency_seconds_bucket",
            {"hop": metrics.HOP_NOTIFICATION, "le": "0.25"},
        ),
    )
    counters.added(3)
    counters.delivered(2)
    counters.retried(1)
    counters.dead_lettered(1)
    for n, expected in zip(names, (3, 2, 1, 1), strict=True):
        assert delta(f"missive_outbox_{n}_total", stream="outbox:unit") == expected
    now = time.time()
    assert metrics.observe_delivery_latency(metrics.HOP_NOTIFICATION, now - 0.2, now=now) == (
        pytest.approx(0.2)
    )
    assert metrics.observe_delivery_latency(metrics.HOP_NOTIFICATION, now + 5, now=now) == 0
    assert metrics.observe_delivery_latency(metrics.HOP_NOTIFICATION, now - 60, now=now) > 59
    hop = {"hop": metrics.HOP_NOTIFICATION}
    assert delta("missive_delivery_latency_seconds_count", **hop) == 3
    assert delta("missive_delivery_latency_seconds_bucket", **hop, le="0.25") == 2


async def test_auto_pipelined_commands_are_timed_and_errors_counted(redis_url: str) -> None:
    client = metrics.instrument_redis(create_redis(redis_url, 0))
    pipeline = auto_pipeline_of(client)
    assert pipeline is not None
    delta = Delta(
        ("missive_redis_command_duration_seconds_count", {"command": "EVALSHA"}),
        ("missive_redis_command_errors_total", {"command": "INCRBY", "error": "response"}),
    )
    try:
        await pipeline.execute_command("SET", "k", "text")
        script = pipeline.script("return 1", hashlib.sha1(b"return 1").hexdigest())
        await asyncio.gather(script(), script())
        with pytest.raises(ResponseError):
            await pipeline.execute_command("INCRBY", "k", 1)
    finally:
        await client.aclose()
    assert delta("missive_redis_command_duration_seconds_count", command="EVALSHA") >= 2
    assert delta("missive_redis_command_errors_total", command="INCRBY", error="response") == 1


async def test_redis_commands_are_timed_and_errors_counted(redis_url: str) -> None:
    client = metrics.instrument_redis(create_redis(redis_url, 0))
    assert metrics.instrument_redis(client) is client
    delta = Delta(
        ("missive_redis_command_duration_seconds_count", {"command": "SET"}),
        ("missive_redis_command_duration_seconds_count", {"command": "INCRBY"}),
        ("missive_redis_command_duration_seconds_count", {"command": "MULTI"}),
        ("missive_redis_command_duration_seconds_count", {"command": "OTHER"}),
        ("missive_redis_command_errors_total", {"command": "INCRBY", "error": "response"}),
    )
    try:
        await client.set("k", "v")
        await client.set("k", "w")
        with pytest.raises(ResponseError):
            await client.incr("k")
        async with client.pipeline(transaction=True) as pipe:
            pipe.set("a", "1")
            pipe.set("b", "2")
            await pipe.execute()
        await client.execute_command("OBJECT", "ENCODING", "k")  # type: ignore[no-untyped-call]
    finally:
        await client.aclose()
    assert delta("missive_redis_command_duration_seconds_count", command="SET") == 2
    assert delta("missive_redis_command_duration_seconds_count", command="INCRBY") == 1
    assert delta("missive_redis_command_errors_total", command="INCRBY", error="response") == 1
    assert delta("missive_redis_command_duration_seconds_count", command="MULTI") == 1
    assert delta("missive_redis_command_duration_seconds_count", command="OTHER") == 1


# --- Exposition ---------------------------------------------------------------------------------


def test_promtool_accepts_the_exposition(rpc: Grpc) -> None:
    if not PROMTOOL.exists() and shutil.which("promtool") is None:
        pytest.fail(f"{PROMTOOL} is missing: run `make promtool` (apt-get install prometheus)")
    metrics.OutboxMetrics("outbox:promtool").delivered(1)
    metrics.observe_delivery_latency(metrics.HOP_LIVE_STREAM, time.time())
    f.OUTBOX_LAG.labels("outbox:promtool", "g").set(0)
    metrics.stream_pushed()
    metrics.stream_ended_slow()
    text = generate_latest(REGISTRY)
    for family in ("process_cpu_seconds_total", "python_gc_objects_collected_total"):
        assert family.encode() in text
    checked = subprocess.run(
        [shutil.which("promtool") or str(PROMTOOL), "check", "metrics"],
        input=text,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


# --- a taken metrics port ----------------------------------------------------------------------


async def test_a_taken_metrics_port_stops_the_service_only_when_it_was_asked_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    taken = socket.socket()
    taken.bind(("127.0.0.1", port))
    taken.listen()
    try:
        with pytest.raises(PortInUse, match="FRONTEND_METRICS_PORT"):
            await metrics_listener("127.0.0.1", port, "FRONTEND_METRICS_PORT")()
        # On the default port the service runs on without /metrics, and says so.
        running = asyncio.create_task(
            metrics_listener("127.0.0.1", port, "FRONTEND_METRICS_PORT", required=False)()
        )
        await asyncio.sleep(0.3)
        assert not running.done()
        assert "serving without /metrics" in caplog.text
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    finally:
        taken.close()

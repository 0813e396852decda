"""Request ids at both edges: taken from the caller or generated, and on every log line.

A Redis outage makes each edge log a warning while it handles the request; the JSON log line
must carry the request's id (and the REST response echo it).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest
from missive.user.v1 import user_pb2
from redis.asyncio import Redis

from services.common.logging import configure_logging, request_id_scope
from tests.unit.user.conftest import ALICE, ALICE_PASSWORD, MakeRest, MakeService, StartGrpc


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The process's JSON log lines, as `configure_logging` writes them in a service."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    configure_logging("INFO", "json", "user", stream=stream)
    yield stream
    for handler in [h for h in root.handlers if h.get_name() == "missive"]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def _outage_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if "redis unavailable" in line["message"]]


async def test_rest_requests_carry_the_callers_request_id_or_a_new_one(
    make_rest: MakeRest, make_service: MakeService, dead_redis: Redis, log_lines: io.StringIO
) -> None:
    body = {"email": ALICE, "password": ALICE_PASSWORD}
    async with make_rest(make_service(store_redis=dead_redis)).client() as http:
        given = await http.post("/login", json=body, headers={"X-Request-Id": "req-42.a_b"})
        assert given.status_code == 503
        assert given.headers["x-request-id"] == "req-42.a_b"
        [line] = _outage_lines(log_lines)
        assert line["request_id"] == "req-42.a_b"

        # None sent, or one that is not a plain token: a new id, echoed and logged.
        for headers in ({}, {"X-Request-Id": "two words"}, {"X-Request-Id": "x" * 65}):
            log_lines.truncate(0)
            log_lines.seek(0)
            response = await http.post("/login", json=body, headers=headers)
            assert response.status_code == 503
            generated = response.headers["x-request-id"]
            assert generated not in ("", "two words", "x" * 65)
            [line] = _outage_lines(log_lines)
            assert line["request_id"] == generated

        # Responses the edge answers before any handler runs carry the id too.
        invalid = await http.post("/login", json={}, headers={"X-Request-Id": "bad-body"})
        assert invalid.status_code == 400
        assert invalid.headers["x-request-id"] == "bad-body"


async def test_grpc_calls_carry_the_callers_request_id_or_a_new_one(
    start_grpc: StartGrpc, make_service: MakeService, dead_redis: Redis, log_lines: io.StringIO
) -> None:
    served = await start_grpc(make_service(store_redis=dead_redis))
    request = user_pb2.AuthenticateUserRequest(email=ALICE, password=ALICE_PASSWORD)

    anonymous = served.anonymous()
    with pytest.raises(grpc.aio.AioRpcError) as given:
        await anonymous.AuthenticateUser(request, metadata=(("x-request-id", "call-7"),))
    assert given.value.code() == grpc.StatusCode.UNAVAILABLE
    [line] = _outage_lines(log_lines)
    assert line["request_id"] == "call-7"

    log_lines.truncate(0)
    log_lines.seek(0)
    with pytest.raises(grpc.aio.AioRpcError):
        await anonymous.AuthenticateUser(request, metadata=(("x-request-id", "not a token"),))
    [line] = _outage_lines(log_lines)
    assert line["request_id"] not in (None, "", "not a token")

    # A peer channel passes the request id of the work that calls it on to the peer.
    log_lines.truncate(0)
    log_lines.seek(0)
    with request_id_scope("from-the-caller"), pytest.raises(grpc.aio.AioRpcError):
        await served.as_service("message").CheckUserExists(
            user_pb2.CheckUserExistsRequest(email=ALICE)
        )
    [line] = _outage_lines(log_lines)
    assert line["request_id"] == "from-the-caller"

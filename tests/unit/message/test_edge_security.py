"""Hostile input at MessageService's edges: long input never echoed, page tokens beyond the
range and undecodable requests refused with 400 / INVALID_ARGUMENT instead of a 500."""

from __future__ import annotations

import asyncio
import base64
import logging

import grpc
import grpc.aio
import pytest
from missive.message.v1 import message_pb2
from redis.asyncio import Redis

from services.common.grpc_edge import UNDECODABLE_MESSAGE
from tests.unit.message.conftest import ADA, BOB, Rest, Server, dbsize

BEYOND_RANGE = base64.urlsafe_b64encode(b"o1:9223372036854775808").decode().rstrip("=")


async def test_over_long_content_is_named_not_echoed(
    rest: Rest, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    content = "secret-" + "c" * 4090  # 4,097 characters
    reply = await rest.send(ADA, BOB, content)
    assert reply.status_code == 400, reply.text
    assert reply.json()["detail"] == "content: longer than 4096 characters"
    assert "c" * 100 not in reply.text
    for record in caplog.records:
        assert "c" * 100 not in record.getMessage()
    assert await dbsize(redis) == 0


@pytest.mark.parametrize("path", ["/messages", "/list_conversations"])
async def test_a_page_token_beyond_the_range_is_400(rest: Rest, path: str) -> None:
    reply = await rest.client.get(
        path, params={"email": ADA, "page_token": BEYOND_RANGE}, headers=rest.auth(ADA)
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["detail"] == "page_token is malformed"


async def test_a_page_token_beyond_the_range_is_invalid_argument(server: Server) -> None:
    for call in (
        server.stub.GetMessages(
            message_pb2.GetMessagesRequest(user_email=ADA, page_token=BEYOND_RANGE),
            metadata=server.as_user(ADA),
            timeout=5,
        ),
        server.stub.ListConversations(
            message_pb2.ListConversationsRequest(user_email=ADA, page_token=BEYOND_RANGE),
            metadata=server.as_user(ADA),
            timeout=5,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details() == "page_token is malformed"


@pytest.mark.parametrize("authenticated", [False, True])
async def test_undecodable_requests_are_invalid_argument(
    server: Server, authenticated: bool
) -> None:
    metadata = server.as_user(ADA) if authenticated else ()
    async with grpc.aio.insecure_channel(server.address) as channel:
        for method in ("SendMessage", "GetMessages", "ListConversations"):
            call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                f"/missive.message.v1.MessageService/{method}"
            )
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call(bytes.fromhex("0a03fffefd"), metadata=metadata, timeout=5)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert raised.value.details() == UNDECODABLE_MESSAGE


async def test_each_call_is_authenticated_on_its_own(server: Server) -> None:
    """The edge builds a method's handler once and reuses it: the credentials, the caller and
    the verdict of one call never leak into another, even with calls of several callers (and
    of none) in flight together on the same method."""
    cases = [(ADA, server.as_user(ADA)), (BOB, server.as_user(BOB)), (None, ())] * 20

    async def verdict(user: str | None, metadata: tuple[tuple[str, str], ...]) -> str:
        try:
            await server.stub.ListConversations(
                message_pb2.ListConversationsRequest(user_email=ADA),
                metadata=metadata,
                timeout=5,
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return "OK"

    verdicts = await asyncio.gather(*(verdict(user, metadata) for user, metadata in cases))
    expected = {ADA: "OK", BOB: "PERMISSION_DENIED", None: "UNAUTHENTICATED"}
    assert verdicts == [expected[user] for user, _ in cases]

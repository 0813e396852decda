"""The gRPC servicer through a real server and edge, checking users with a real UserService peer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import empty_pb2
from missive.message.v1 import message_pb2, message_pb2_grpc
from redis.asyncio import Redis

from services.common.bootstrap import Security
from services.common.grpc_client import peer_channel
from services.common.ports import free_port
from tests.unit.message.conftest import (
    ADA,
    BOB,
    CAROL,
    EVE,
    NOBODY,
    Server,
    StartServer,
    UserServiceRunning,
    db_keys,
    dbsize,
    stream_fields,
)

pb = message_pb2


async def expect_error(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    assert raised.value.code() == code, raised.value.details()
    return raised.value.details() or ""


async def test_send_list_read_and_delete_happy_path(
    server: Server, user_service: UserServiceRunning, redis: Redis
) -> None:
    stub = server.stub
    sent = await server.send(ADA, BOB, "Hello Bob")
    assert (sent.id, sent.sender_email, sent.receiver_email, sent.content) == (
        1,
        ADA,
        BOB,
        "Hello Bob",
    )
    assert sent.timestamp.seconds > 0 and not sent.read
    assert user_service.servicer.callers == ["message"]  # its own credential

    for email in (ADA, BOB):
        page = await stub.GetMessages(
            pb.GetMessagesRequest(user_email=email), metadata=server.as_user(email), timeout=5
        )
        assert list(page.messages) == [sent] and page.next_page_token == ""
    got = await stub.GetMessage(
        pb.GetMessageRequest(user_email=BOB, id=sent.id), metadata=server.as_user(BOB), timeout=5
    )
    assert got == sent

    listed = await stub.ListConversations(
        pb.ListConversationsRequest(user_email=BOB), metadata=server.as_user(BOB), timeout=5
    )
    [conversation] = listed.conversations
    assert (conversation.peer_email, conversation.unread_count, conversation.message_count) == (
        ADA,
        1,
        1,
    )
    assert conversation.last_message == sent and conversation.updated_at == sent.timestamp

    marked = await stub.MarkConversationRead(
        pb.MarkConversationReadRequest(user_email=BOB, peer_email=ADA),
        metadata=server.as_user(BOB),
        timeout=5,
    )
    assert marked.unread_count == 0 and marked.last_message.read
    reread = await stub.GetMessage(
        pb.GetMessageRequest(user_email=ADA, id=sent.id), metadata=server.as_user(ADA), timeout=5
    )
    assert reread.read

    deleted = await stub.DeleteMessage(
        pb.DeleteMessageRequest(user_email=ADA, id=sent.id), metadata=server.as_user(ADA), timeout=5
    )
    assert deleted == empty_pb2.Empty()
    listed = await stub.ListConversations(
        pb.ListConversationsRequest(user_email=BOB), metadata=server.as_user(BOB), timeout=5
    )
    assert list(listed.conversations) == []
    assert await db_keys(redis) == {
        "message_id_counter",
        "outbox:notifications",
        f"account:{ADA}",  # which account owns each email's data here
        f"account:{BOB}",
    }


async def test_messages_and_conversations_page_across_pages(server: Server) -> None:
    sent = [await server.send(ADA, BOB, f"m{n}") for n in range(5)]
    sent.append(await server.send(ADA, CAROL, "to carol"))
    ids: list[int] = []
    token = ""
    while True:
        page = await server.stub.GetMessages(
            pb.GetMessagesRequest(user_email=ADA, page_size=4, page_token=token),
            metadata=server.as_user(ADA),
            timeout=5,
        )
        ids += [m.id for m in page.messages]
        token = page.next_page_token
        if not token:
            break
    assert ids == [m.id for m in reversed(sent)]

    first = await server.stub.ListConversations(
        pb.ListConversationsRequest(user_email=ADA, page_size=1),
        metadata=server.as_user(ADA),
        timeout=5,
    )
    second = await server.stub.ListConversations(
        pb.ListConversationsRequest(user_email=ADA, page_size=1, page_token=first.next_page_token),
        metadata=server.as_user(ADA),
        timeout=5,
    )
    assert [c.peer_email for c in (*first.conversations, *second.conversations)] == [CAROL, BOB]
    assert second.next_page_token == ""


@pytest.mark.parametrize(
    ("sender", "receiver", "named"),
    [(ADA, NOBODY, "receiver_email"), (NOBODY, ADA, "sender_email")],
)
async def test_unknown_users_are_not_found_naming_which_and_nothing_is_written(
    server: Server, redis: Redis, sender: str, receiver: str, named: str
) -> None:
    details = await expect_error(server.send(sender, receiver, "hi"), grpc.StatusCode.NOT_FOUND)
    assert f"{named}: no user is registered under {NOBODY}" in details
    assert await dbsize(redis) == 0


async def test_user_service_down_is_unavailable_quickly_and_nothing_is_written(
    start_server: StartServer, redis: Redis
) -> None:
    async with start_server(f"127.0.0.1:{free_port()}") as server:  # nothing listens there
        started = time.monotonic()
        details = await expect_error(server.send(ADA, BOB, "hi"), grpc.StatusCode.UNAVAILABLE)
        assert time.monotonic() - started < 3
    assert "UserService" in details and "not stored" in details
    assert await dbsize(redis) == 0


async def test_a_user_service_past_its_deadline_is_unavailable(
    server: Server, user_service: UserServiceRunning, redis: Redis
) -> None:
    user_service.servicer.stall_seconds = 3.0
    started = time.monotonic()
    await expect_error(server.send(ADA, BOB, "hi"), grpc.StatusCode.UNAVAILABLE)
    assert time.monotonic() - started < 3
    assert await dbsize(redis) == 0


async def test_retries_with_one_request_id_store_one_message(server: Server, redis: Redis) -> None:
    replies = [await server.send(ADA, BOB, "once", request_id="req-1") for _ in range(3)]
    assert replies[0] == replies[1] == replies[2]
    concurrent = await asyncio.gather(
        *(server.send(ADA, BOB, "burst", request_id="req-2") for _ in range(10))
    )
    assert len({m.id for m in concurrent}) == 1
    details = await expect_error(
        server.send(ADA, BOB, "different", request_id="req-1"), grpc.StatusCode.ALREADY_EXISTS
    )
    assert "req-1" in details
    page = await server.stub.GetMessages(
        pb.GetMessagesRequest(user_email=BOB), metadata=server.as_user(BOB), timeout=5
    )
    assert [m.content for m in page.messages] == ["burst", "once"]


async def test_the_outbox_has_exactly_one_entry_per_stored_message(
    server: Server, redis: Redis
) -> None:
    await server.send(ADA, BOB, "a", request_id="k")
    await server.send(ADA, BOB, "a", request_id="k")
    await server.send(BOB, ADA, "b")
    await expect_error(server.send(ADA, NOBODY, "c"), grpc.StatusCode.NOT_FOUND)
    await asyncio.gather(*(server.send(CAROL, ADA, "d", request_id="j") for _ in range(5)))
    stored = await server.stub.GetMessages(
        pb.GetMessagesRequest(user_email=ADA), metadata=server.as_user(ADA), timeout=5
    )
    events = await stream_fields(redis, "outbox:notifications")
    assert sorted(int(e["message_id"]) for e in events) == sorted(m.id for m in stored.messages)
    assert len(events) == 3
    by_id = {int(e["message_id"]): e for e in events}
    for message in stored.messages:
        event = by_id[message.id]
        assert (event["sender_email"], event["receiver_email"]) == (
            message.sender_email,
            message.receiver_email,
        )


async def test_sending_as_someone_else_is_permission_denied(server: Server, redis: Redis) -> None:
    spoof = server.stub.SendMessage(
        pb.SendMessageRequest(sender_email=BOB, receiver_email=ADA, content="spoof"),
        metadata=server.as_user(ADA),
        timeout=5,
    )
    await expect_error(spoof, grpc.StatusCode.PERMISSION_DENIED)
    assert await dbsize(redis) == 0


async def test_calls_without_a_user_token_are_refused(server: Server, keys: Path) -> None:
    anonymous = server.stub.GetMessages(pb.GetMessagesRequest(user_email=ADA), timeout=5)
    await expect_error(anonymous, grpc.StatusCode.UNAUTHENTICATED)
    forged = server.stub.GetMessages(
        pb.GetMessagesRequest(user_email=ADA),
        metadata=(("authorization", "Bearer not-a-token"),),
        timeout=5,
    )
    await expect_error(forged, grpc.StatusCode.UNAUTHENTICATED)
    credentials = Security.load(keys, "notification").credentials
    async with peer_channel(server.address, credentials, target="message") as channel:
        as_service = message_pb2_grpc.MessageServiceStub(channel).GetMessages(
            pb.GetMessagesRequest(user_email=ADA), timeout=5
        )
        await expect_error(as_service, grpc.StatusCode.PERMISSION_DENIED)


async def test_other_users_data_is_denied_or_hidden(server: Server, redis: Redis) -> None:
    sent = await server.send(ADA, BOB, "private")
    before = {key: await redis.dump(key) for key in await db_keys(redis)}
    eve = server.as_user(EVE)
    for denied in (
        server.stub.GetMessages(pb.GetMessagesRequest(user_email=BOB), metadata=eve, timeout=5),
        server.stub.ListConversations(
            pb.ListConversationsRequest(user_email=BOB), metadata=eve, timeout=5
        ),
        server.stub.MarkConversationRead(
            pb.MarkConversationReadRequest(user_email=BOB, peer_email=ADA), metadata=eve, timeout=5
        ),
        server.stub.GetMessage(pb.GetMessageRequest(user_email=BOB, id=sent.id), metadata=eve),
        server.stub.DeleteMessage(
            pb.DeleteMessageRequest(user_email=BOB, id=sent.id), metadata=server.as_user(BOB)
        ),  # the receiver may not delete
    ):
        details = await expect_error(denied, grpc.StatusCode.PERMISSION_DENIED)
        assert "private" not in details
    for hidden in (
        server.stub.GetMessage(pb.GetMessageRequest(user_email=EVE, id=sent.id), metadata=eve),
        server.stub.DeleteMessage(
            pb.DeleteMessageRequest(user_email=EVE, id=sent.id), metadata=eve
        ),
        server.stub.MarkConversationRead(
            pb.MarkConversationReadRequest(user_email=EVE, peer_email=ADA), metadata=eve, timeout=5
        ),
    ):
        await expect_error(hidden, grpc.StatusCode.NOT_FOUND)
    after = {key: await redis.dump(key) for key in await db_keys(redis)}
    after.pop(f"account:{EVE}")  # Eve's valid requests record which account owns her email
    assert after == before


@pytest.mark.parametrize(
    "request_",
    [
        pb.SendMessageRequest(sender_email=ADA, receiver_email=BOB, content=""),
        pb.SendMessageRequest(sender_email=ADA, receiver_email=BOB, content="x" * 4097),
        pb.SendMessageRequest(sender_email=ADA, receiver_email="bob", content="hi"),
        pb.SendMessageRequest(sender_email=ADA, receiver_email="b?b@example.com", content="hi"),
        pb.SendMessageRequest(
            sender_email=ADA, receiver_email=BOB, content="hi", client_request_id="x" * 65
        ),
        pb.GetMessagesRequest(user_email=ADA, page_size=101),
        pb.GetMessagesRequest(user_email=ADA, page_token="garbage!"),
        pb.GetMessagesRequest(user_email=ADA, peer_email="not an email"),
        pb.ListConversationsRequest(user_email=ADA, page_size=101),
        pb.ListConversationsRequest(user_email=ADA, page_token="garbage!"),
        pb.GetMessageRequest(user_email=ADA, id=0),
        pb.DeleteMessageRequest(user_email=ADA, id=-5),
        pb.MarkConversationReadRequest(user_email=ADA, peer_email="nope"),
    ],
    ids=lambda r: type(r).__name__,
)
async def test_bad_input_is_invalid_argument_and_writes_nothing(
    server: Server, user_service: UserServiceRunning, redis: Redis, request_: object
) -> None:
    method = {
        pb.SendMessageRequest: server.stub.SendMessage,
        pb.GetMessagesRequest: server.stub.GetMessages,
        pb.ListConversationsRequest: server.stub.ListConversations,
        pb.GetMessageRequest: server.stub.GetMessage,
        pb.DeleteMessageRequest: server.stub.DeleteMessage,
        pb.MarkConversationReadRequest: server.stub.MarkConversationRead,
    }[type(request_)]
    await expect_error(
        method(request_, metadata=server.as_user(ADA), timeout=5),  # type: ignore[operator]
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert await dbsize(redis) == 0
    assert user_service.servicer.callers == []


async def test_a_full_data_store_is_unavailable_and_nothing_is_written(
    server: Server, redis: Redis
) -> None:
    """maxmemory reached (noeviction): SendMessage fails cleanly (never UNKNOWN), writes nothing."""
    await redis.config_set("maxmemory", "1")  # below what the server already uses
    try:
        details = await expect_error(server.send(ADA, BOB, "hi"), grpc.StatusCode.UNAVAILABLE)
        assert details == "the data store is full; retry later"
    finally:
        await redis.config_set("maxmemory", "0")
    assert await dbsize(redis) == 0
    assert (await server.send(ADA, BOB, "hi again")).id

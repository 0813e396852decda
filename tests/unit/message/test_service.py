"""MessageService domain logic over the real store (Valkey DB 1) and an in-memory user directory."""

from __future__ import annotations

import asyncio
from datetime import UTC

import pytest
from redis.asyncio import Redis

from services.common.domain import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unavailable,
)
from services.common.paging import encode_offset
from services.message.models import Message
from services.message.service import MessageService
from services.message.settings import SendLimits
from services.message.store import RedisMessageStore
from tests.unit.message.conftest import (
    ADA,
    BOB,
    CAROL,
    EVE,
    NOBODY,
    KnownUsers,
    db_keys,
    dbsize,
    user,
)


async def send(service: MessageService, sender: str, receiver: str, content: str = "hi") -> Message:
    return await service.send(
        user(sender), sender_email=sender, receiver_email=receiver, content=content
    )


# -- SendMessage ----------------------------------------------------------------------------------


async def test_send_stores_and_returns_the_message(
    service: MessageService, redis: Redis, known_users: KnownUsers
) -> None:
    sent = await service.send(
        user(ADA), sender_email=" Ada@Example.COM ", receiver_email="BOB@example.com", content=" x "
    )
    assert (sent.id, sent.sender_email, sent.receiver_email) == (1, ADA, BOB)
    assert sent.content == " x " and not sent.read  # stored exactly as sent
    assert sent.timestamp.tzinfo is not None and sent.timestamp.utcoffset() == UTC.utcoffset(None)
    assert sorted(known_users.asked) == [ADA, BOB]
    assert await service.get_message(user(BOB), BOB, 1) == sent
    assert await redis.xlen("outbox:notifications") == 1


@pytest.mark.parametrize(
    ("sender", "receiver", "content", "request_id", "complaint"),
    [
        ("not-an-email", BOB, "hi", "", "sender_email"),
        (ADA, "bob@", "hi", "", "receiver_email"),
        (ADA, "b*b@example.com", "hi", "", "receiver_email"),
        (ADA, "bob:x@example.com", "hi", "", "receiver_email"),
        (ADA, "", "hi", "", "receiver_email is required"),
        (ADA, BOB, "", "", "content is required"),
        (ADA, BOB, "x" * 4097, "", "too long"),
        (ADA, BOB, "\ud800", "", "Unicode"),
        (ADA, "\ud800@example.com", "hi", "", "receiver_email"),
        (ADA, BOB, "hi", "x" * 65, "client_request_id"),
        (ADA, BOB, "hi", "has space", "client_request_id"),
        (ADA, BOB, "hi", "semi;colon", "client_request_id"),
    ],
)
async def test_bad_input_is_invalid_argument_and_writes_nothing(
    service: MessageService,
    redis: Redis,
    known_users: KnownUsers,
    sender: str,
    receiver: str,
    content: str,
    request_id: str,
    complaint: str,
) -> None:
    with pytest.raises(InvalidArgument, match=complaint):
        await service.send(
            user(ADA),
            sender_email=sender,
            receiver_email=receiver,
            content=content,
            client_request_id=request_id,
        )
    assert await dbsize(redis) == 0
    assert known_users.asked == []


async def test_a_note_to_self_is_a_conversation_with_oneself(service: MessageService) -> None:
    note = await send(service, ADA, "ADA@example.com", "remember the milk")
    assert (note.sender_email, note.receiver_email, note.read) == (ADA, ADA, False)
    page = await service.list_conversations(user(ADA), ADA)
    [conversation] = page.conversations
    assert (conversation.peer_email, conversation.message_count) == (ADA, 1)
    assert conversation.unread_count == 1
    marked = await service.mark_read(user(ADA), ADA, ADA)
    assert marked.unread_count == 0
    assert (await service.get_message(user(ADA), ADA, note.id)).read
    await service.delete(user(ADA), ADA, note.id)
    assert (await service.list_conversations(user(ADA), ADA)).conversations == []


async def test_content_of_exactly_4096_characters_is_accepted(service: MessageService) -> None:
    sent = await send(service, ADA, BOB, "é" * 4096)
    assert len(sent.content) == 4096


async def test_sending_as_someone_else_is_permission_denied(
    service: MessageService, redis: Redis
) -> None:
    with pytest.raises(PermissionDenied):
        await service.send(user(EVE), sender_email=ADA, receiver_email=BOB, content="spoof")
    assert await dbsize(redis) == 0


@pytest.mark.parametrize(
    ("sender", "receiver", "named", "not_named"),
    [
        (ADA, NOBODY, f"receiver_email: no user is registered under {NOBODY}", "sender_email"),
        (NOBODY, ADA, f"sender_email: no user is registered under {NOBODY}", "receiver_email"),
    ],
)
async def test_an_unregistered_user_is_not_found_naming_which(
    service: MessageService, redis: Redis, sender: str, receiver: str, named: str, not_named: str
) -> None:
    with pytest.raises(NotFound) as raised:
        await send(service, sender, receiver)
    assert named in raised.value.message and not_named not in raised.value.message
    assert await dbsize(redis) == 0  # not even the id counter


async def test_both_unregistered_are_both_named(service: MessageService) -> None:
    with pytest.raises(NotFound, match=r"sender_email.*receiver_email"):
        await send(service, NOBODY, "nobody2@example.com")


async def test_user_service_down_is_unavailable_and_writes_nothing(
    service: MessageService, redis: Redis, known_users: KnownUsers
) -> None:
    known_users.down = True
    with pytest.raises(Unavailable, match="not stored"):
        await send(service, ADA, BOB)
    assert await dbsize(redis) == 0


async def test_a_repeated_request_id_returns_the_first_message(
    service: MessageService, redis: Redis, known_users: KnownUsers
) -> None:
    replies = [
        await service.send(
            user(ADA), sender_email=ADA, receiver_email=BOB, content="once", client_request_id="r-1"
        )
        for _ in range(3)
    ]
    assert replies[0] == replies[1] == replies[2]
    assert len(known_users.asked) == 2  # repeats are answered before asking UserService
    assert (await service.get_messages(user(BOB), BOB)).messages == [replies[0]]
    assert await redis.xlen("outbox:notifications") == 1
    assert await redis.get("message_id_counter") == "1"


async def test_concurrent_repeats_store_one_message(service: MessageService, redis: Redis) -> None:
    replies = await asyncio.gather(
        *(
            service.send(
                user(ADA), sender_email=ADA, receiver_email=BOB, content="hi", client_request_id="c"
            )
            for _ in range(10)
        )
    )
    assert len({r.id for r in replies}) == 1
    assert len((await service.get_messages(user(ADA), ADA)).messages) == 1
    assert await redis.xlen("outbox:notifications") == 1
    assert len([k for k in await db_keys(redis) if k.startswith("message:")]) == 1


@pytest.mark.parametrize(("receiver", "content"), [(BOB, "changed"), (CAROL, "same")])
async def test_reusing_a_request_id_for_another_message_is_already_exists(
    service: MessageService, redis: Redis, receiver: str, content: str
) -> None:
    await service.send(
        user(ADA), sender_email=ADA, receiver_email=BOB, content="same", client_request_id="k"
    )
    size = await dbsize(redis)
    with pytest.raises(AlreadyExists, match="k was already used"):
        await service.send(
            user(ADA),
            sender_email=ADA,
            receiver_email=receiver,
            content=content,
            client_request_id="k",
        )
    assert await dbsize(redis) == size


async def test_request_ids_are_scoped_to_the_sender(service: MessageService) -> None:
    first = await service.send(
        user(ADA), sender_email=ADA, receiver_email=BOB, content="hi", client_request_id="k"
    )
    second = await service.send(
        user(BOB), sender_email=BOB, receiver_email=ADA, content="hi", client_request_id="k"
    )
    assert first.id != second.id


async def test_repeating_the_request_of_a_deleted_message_does_not_resend_it(
    service: MessageService,
) -> None:
    sent = await service.send(
        user(ADA), sender_email=ADA, receiver_email=BOB, content="hi", client_request_id="k"
    )
    await service.delete(user(ADA), ADA, sent.id)
    with pytest.raises(AlreadyExists, match="deleted"):
        await service.send(
            user(ADA), sender_email=ADA, receiver_email=BOB, content="hi", client_request_id="k"
        )


# -- GetMessages / GetMessage ---------------------------------------------------------------------


async def test_get_messages_pages_newest_first_across_pages(service: MessageService) -> None:
    sent = [await send(service, *((ADA, BOB) if n % 2 else (BOB, ADA)), f"m{n}") for n in range(7)]
    await send(service, ADA, CAROL, "to carol")
    seen: list[Message] = []
    token = ""
    pages = 0
    while True:
        page = await service.get_messages(user(BOB), BOB, "", page_size=3, page_token=token)
        seen += page.messages
        pages += 1
        token = page.next_page_token
        if not token:
            break
        await send(service, ADA, BOB, "arrives between pages")  # must not shift later pages
    assert pages == 3
    assert seen == sorted(sent, key=lambda m: -m.id)


async def test_get_messages_with_a_peer_and_without(service: MessageService) -> None:
    to_bob = await send(service, ADA, BOB)
    to_carol = await send(service, ADA, CAROL)
    assert (await service.get_messages(user(ADA), ADA)).messages == [to_carol, to_bob]
    assert (await service.get_messages(user(ADA), ADA, "Carol@Example.com")).messages == [to_carol]
    assert (await service.get_messages(user(ADA), ADA, EVE)).messages == []
    assert (await service.get_messages(user(ADA), ADA, ADA)).messages == []
    last = await service.get_messages(user(ADA), ADA, page_size=2)
    assert last.next_page_token == ""  # exactly a full page: no empty extra page


@pytest.mark.parametrize(
    ("size", "token", "complaint"),
    [
        (101, "", "page_size"),
        (-1, "", "page_size"),
        (0, "not-a-token", "page_token"),
        (0, "x" * 600, "page_token"),
        (0, encode_offset(-1), "page_token"),
    ],
)
async def test_bad_paging_is_invalid_argument(
    service: MessageService, size: int, token: str, complaint: str
) -> None:
    await send(service, ADA, BOB)
    with pytest.raises(InvalidArgument, match=complaint):
        await service.get_messages(user(ADA), ADA, page_size=size, page_token=token)
    with pytest.raises(InvalidArgument, match=complaint):
        await service.list_conversations(user(ADA), ADA, page_size=size, page_token=token)


async def test_a_malformed_peer_is_invalid_argument(service: MessageService) -> None:
    with pytest.raises(InvalidArgument, match="peer_email"):
        await service.get_messages(user(ADA), ADA, "bad")
    with pytest.raises(InvalidArgument, match="user_email"):
        await service.get_messages(user(ADA), "bad")


async def test_get_message_is_for_participants_only(service: MessageService) -> None:
    sent = await send(service, ADA, BOB)
    assert await service.get_message(user(ADA), ADA, sent.id) == sent
    assert await service.get_message(user(BOB), BOB, sent.id) == sent
    with pytest.raises(NotFound, match=f"message {sent.id} does not exist"):
        await service.get_message(user(EVE), EVE, sent.id)
    with pytest.raises(NotFound, match="message 99 does not exist"):
        await service.get_message(user(EVE), EVE, 99)
    with pytest.raises(PermissionDenied):
        await service.get_message(user(EVE), ADA, sent.id)
    with pytest.raises(InvalidArgument, match="id must be at least 1"):
        await service.get_message(user(ADA), ADA, 0)


async def test_another_users_lists_are_permission_denied(service: MessageService) -> None:
    await send(service, ADA, BOB)
    with pytest.raises(PermissionDenied):
        await service.get_messages(user(EVE), BOB)
    with pytest.raises(PermissionDenied):
        await service.list_conversations(user(EVE), BOB)
    with pytest.raises(PermissionDenied):
        await service.mark_read(user(EVE), BOB, ADA)
    assert (await service.list_conversations(user(BOB), BOB)).conversations[0].unread_count == 1


# -- ListConversations / MarkConversationRead -----------------------------------------------------


async def test_list_conversations_most_recent_first_with_counts(service: MessageService) -> None:
    await send(service, ADA, BOB, "1")
    await send(service, CAROL, ADA, "2")
    last = await send(service, BOB, ADA, "3")
    page = await service.list_conversations(user(ADA), ADA)
    assert [c.peer_email for c in page.conversations] == [BOB, CAROL]
    with_bob = page.conversations[0]
    assert with_bob.last_message == last and with_bob.updated_at == last.timestamp
    assert (with_bob.unread_count, with_bob.message_count) == (1, 2)
    assert page.next_page_token == ""
    [bobs] = (await service.list_conversations(user(BOB), BOB)).conversations
    assert (bobs.peer_email, bobs.unread_count) == (ADA, 1)


async def test_list_conversations_pages_across_pages(
    service: MessageService, known_users: KnownUsers
) -> None:
    peers = [f"peer{n}@example.com" for n in range(5)]
    known_users.emails.update(peers)
    for peer in peers:
        await send(service, peer, ADA)
    first = await service.list_conversations(user(ADA), ADA, page_size=2)
    assert [c.peer_email for c in first.conversations] == peers[::-1][:2]
    assert first.next_page_token
    second = await service.list_conversations(
        user(ADA), ADA, page_size=2, page_token=first.next_page_token
    )
    third = await service.list_conversations(
        user(ADA), ADA, page_size=2, page_token=second.next_page_token
    )
    listed = [c.peer_email for p in (first, second, third) for c in p.conversations]
    assert listed == peers[::-1] and third.next_page_token == ""


async def test_mark_read_zeroes_unread_and_flags_the_peers_messages(
    service: MessageService,
) -> None:
    await send(service, ADA, BOB, "a")
    await send(service, ADA, BOB, "b")
    mine = await send(service, BOB, ADA, "c")
    conversation = await service.mark_read(user(BOB), "bob@EXAMPLE.com", ADA)
    assert (conversation.peer_email, conversation.unread_count) == (ADA, 0)
    assert conversation.last_message == mine and not conversation.last_message.read
    assert await service.mark_read(user(BOB), BOB, ADA) == conversation  # idempotent
    flags = {m.content: m.read for m in (await service.get_messages(user(BOB), BOB)).messages}
    assert flags == {"a": True, "b": True, "c": False}
    [adas] = (await service.list_conversations(user(ADA), ADA)).conversations
    assert adas.unread_count == 1  # Bob's reading does not touch Ada's side
    later = await send(service, ADA, BOB, "d")
    assert not later.read
    [bobs] = (await service.list_conversations(user(BOB), BOB)).conversations
    assert bobs.unread_count == 1


async def test_mark_read_without_a_conversation_is_not_found(
    service: MessageService, redis: Redis
) -> None:
    with pytest.raises(NotFound, match=f"{ADA} has no conversation with {BOB}"):
        await service.mark_read(user(ADA), ADA, BOB)
    with pytest.raises(NotFound):
        await service.mark_read(user(ADA), ADA, ADA)
    with pytest.raises(InvalidArgument, match="peer_email"):
        await service.mark_read(user(ADA), ADA, "nope")
    assert await dbsize(redis) == 0


# -- DeleteMessage --------------------------------------------------------------------------------


async def test_only_the_sender_deletes_and_others_cannot_tell_it_exists(
    service: MessageService, redis: Redis
) -> None:
    sent = await send(service, ADA, BOB)
    before = await db_keys(redis)
    with pytest.raises(PermissionDenied, match="only the sender"):
        await service.delete(user(BOB), BOB, sent.id)
    with pytest.raises(NotFound, match=f"message {sent.id} does not exist"):
        await service.delete(user(EVE), EVE, sent.id)
    with pytest.raises(PermissionDenied):
        await service.delete(user(EVE), ADA, sent.id)
    with pytest.raises(InvalidArgument):
        await service.delete(user(ADA), ADA, -1)
    assert await db_keys(redis) == before
    await service.delete(user(ADA), ADA, sent.id)
    with pytest.raises(NotFound):
        await service.delete(user(ADA), ADA, sent.id)
    with pytest.raises(NotFound):
        await service.get_message(user(BOB), BOB, sent.id)


async def test_deleting_updates_the_conversation_and_empties_it_away(
    service: MessageService,
) -> None:
    first = await send(service, ADA, BOB, "first")
    second = await send(service, ADA, BOB, "second")
    await service.delete(user(ADA), ADA, second.id)
    [bobs] = (await service.list_conversations(user(BOB), BOB)).conversations
    assert bobs.last_message == first and (bobs.message_count, bobs.unread_count) == (1, 1)
    assert bobs.updated_at == second.timestamp
    await service.delete(user(ADA), ADA, first.id)
    assert (await service.list_conversations(user(BOB), BOB)).conversations == []
    assert (await service.list_conversations(user(ADA), ADA)).conversations == []
    assert (await service.get_messages(user(BOB), BOB)).messages == []
    with pytest.raises(NotFound):
        await service.mark_read(user(BOB), BOB, ADA)


# -- limits ---------------------------------------------------------------------------------------


async def test_sending_is_limited_per_account_and_repeats_are_free(
    redis: Redis, known_users: KnownUsers
) -> None:
    service = MessageService(
        RedisMessageStore(redis), known_users, limits=SendLimits(messages=2, window_seconds=60)
    )
    first = await service.send(
        user(ADA), sender_email=ADA, receiver_email=BOB, content="a", client_request_id="k1"
    )
    await send(service, ADA, BOB, "b")
    repeat = await service.send(
        user(ADA), sender_email=ADA, receiver_email=BOB, content="a", client_request_id="k1"
    )
    assert repeat == first  # a repeated client_request_id is not counted
    before = await dbsize(redis)
    with pytest.raises(RateLimited, match="at most 2 messages") as limited:
        await send(service, ADA, BOB, "c")
    assert 59 <= limited.value.retry_after <= 60
    assert await dbsize(redis) == before  # nothing stored
    await send(service, BOB, ADA, "Bob has his own budget")


async def test_a_sender_over_the_storage_quota_is_refused_until_it_deletes(
    redis: Redis, known_users: KnownUsers
) -> None:
    service = MessageService(RedisMessageStore(redis, quota_bytes=1000), known_users)
    kept = [await send(service, ADA, BOB, "x" * 300) for _ in range(2)]
    with pytest.raises(RateLimited, match="storage quota reached"):
        await send(service, ADA, BOB, "x" * 300)
    assert len((await service.get_messages(user(ADA), ADA)).messages) == 2
    await send(service, BOB, ADA, "x" * 300)  # the receiver's quota is its own
    await service.delete(user(ADA), ADA, kept[0].id)
    await send(service, ADA, BOB, "x" * 300)
    for message in (await service.get_messages(user(ADA), ADA)).messages:
        if message.sender_email == ADA:
            await service.delete(user(ADA), ADA, message.id)
    assert not await redis.exists(f"user:{ADA}:stored_bytes")  # every byte given back

"""UserService over real gRPC with the EdgeInterceptor: every RPC, auth, errors, throttling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from missive.user.v1 import user_pb2
from redis.asyncio import Redis

from services.common.auth import KeyRing, TokenVerifier
from services.common.callers import peer_host
from services.common.dead_letters import DeadLetters
from services.common.delivery import Relay
from services.common.domain import Principal
from services.common.ports import free_port
from services.user.keys import ACCOUNTS_DEAD_LETTERS, ACCOUNTS_OUTBOX
from services.user.relay import OUTBOX, EraseAccount, lane_key
from services.user.service import UserService
from services.user.settings import LoginLimits
from tests.unit.user.conftest import (
    ALICE,
    ALICE_PASSWORD,
    BOB,
    BOB_PASSWORD,
    WRONG_PASSWORD,
    Grpc,
    MakeService,
    StartGrpc,
    bearer,
    snapshot,
)

U = user_pb2


@pytest.fixture
async def server(start_grpc: StartGrpc, service: UserService) -> Grpc:
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    await service.register("Bob", BOB, BOB_PASSWORD)
    return await start_grpc(service)


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:127.0.0.1:5555", "127.0.0.1"),
        ("ipv6:[::1]:5555", "::1"),
        ("ipv6:%5B::1%5D:1", "::1"),
        ("ipv6:%5Bfe80::1%25eth0%5D:1", "fe80::1%eth0"),
        ("unix:/tmp/sock", "unix"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_peer_host(peer: str | None, host: str) -> None:
    assert peer_host(peer) == host


async def test_authenticate_user(server: Grpc) -> None:
    reply = await server.anonymous().AuthenticateUser(
        U.AuthenticateUserRequest(email="Alice@Example.com", password=ALICE_PASSWORD)
    )
    assert reply.authenticated and reply.token_type == "Bearer"
    assert reply.HasField("expires_at")
    assert (
        TokenVerifier(KeyRing.load(server.keys, "message")).verify_user(reply.access_token).name
        == ALICE
    )
    user = await server.anonymous().GetUser(
        U.GetUserRequest(email=ALICE), metadata=bearer(reply.access_token)
    )
    assert (user.name, user.email) == ("Alice", ALICE)


async def test_wrong_password_and_unknown_email_get_identical_replies(server: Grpc) -> None:
    client = server.anonymous()
    wrong = await client.AuthenticateUser(
        U.AuthenticateUserRequest(email=ALICE, password=WRONG_PASSWORD)
    )
    unknown = await client.AuthenticateUser(
        U.AuthenticateUserRequest(email="nobody@example.com", password=WRONG_PASSWORD)
    )
    assert not wrong.authenticated
    assert wrong.access_token == "" and wrong.token_type == ""
    assert not wrong.HasField("expires_at")
    assert wrong.SerializeToString() == unknown.SerializeToString()


@pytest.mark.parametrize(
    ("email", "password"), [("not-an-email", ALICE_PASSWORD), (ALICE, ""), (ALICE, "x" * 129)]
)
async def test_authenticate_user_invalid_argument(
    server: Grpc, redis: Redis, email: str, password: str
) -> None:
    before = await snapshot(redis)
    error = await rpc_error(
        server.anonymous().AuthenticateUser(
            U.AuthenticateUserRequest(email=email, password=password)
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await snapshot(redis) == before


async def test_brute_force_is_resource_exhausted_with_retry_after(
    make_service: MakeService, start_grpc: StartGrpc
) -> None:
    service = make_service(limits=LoginLimits(max_failures=2, lock_seconds=900))
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    client = (await start_grpc(service)).anonymous()
    for _ in range(2):
        reply = await client.AuthenticateUser(
            U.AuthenticateUserRequest(email=ALICE, password=WRONG_PASSWORD)
        )
        assert not reply.authenticated
    error = await rpc_error(
        client.AuthenticateUser(U.AuthenticateUserRequest(email=ALICE, password=ALICE_PASSWORD))
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after = dict(error.trailing_metadata() or ())["retry-after"]
    assert 899 <= int(retry_after) <= 900


async def test_client_throttling_uses_the_peer_host(
    make_service: MakeService, start_grpc: StartGrpc, redis: Redis
) -> None:
    service = make_service(limits=LoginLimits(client_attempts=2))
    client = (await start_grpc(service)).anonymous()
    for i in range(2):
        await client.AuthenticateUser(
            U.AuthenticateUserRequest(email=f"u{i}@example.com", password=WRONG_PASSWORD)
        )
    assert await redis.get("login_clients:127.0.0.1") == "2"
    error = await rpc_error(
        client.AuthenticateUser(U.AuthenticateUserRequest(email=BOB, password=BOB_PASSWORD))
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_check_user_exists_for_allowed_services(server: Grpc) -> None:
    for name in ("message", "notification"):
        client = server.as_service(name)
        found = await client.CheckUserExists(U.CheckUserExistsRequest(email="BOB@example.com"))
        assert found.exists and found.name == "Bob"  # the display name a notification shows
        missing = await client.CheckUserExists(U.CheckUserExistsRequest(email="x@example.com"))
        assert not missing.exists and missing.name == ""
    error = await rpc_error(
        server.as_service("message").CheckUserExists(U.CheckUserExistsRequest(email="bad"))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_check_user_exists_refuses_users_and_other_callers(
    server: Grpc, token_for: Callable[[str], str]
) -> None:
    request = U.CheckUserExistsRequest(email=BOB)
    error = await rpc_error(
        server.anonymous().CheckUserExists(request, metadata=bearer(token_for(ALICE)))
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await rpc_error(server.as_service("user").CheckUserExists(request))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await rpc_error(server.anonymous().CheckUserExists(request))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_check_users_exist_answers_each_email_in_request_order(
    server: Grpc, service: UserService
) -> None:
    alice = await service.account(ALICE)
    bob = await service.account(BOB)
    assert alice is not None and bob is not None
    client = server.as_service("message")
    reply = await client.CheckUsersExist(
        U.CheckUsersExistRequest(emails=[" BOB@example.com", "nobody@example.com", ALICE, BOB])
    )
    assert [(u.email, u.exists) for u in reply.users] == [
        (BOB, True),  # normalised
        ("nobody@example.com", False),
        (ALICE, True),
        (BOB, True),  # a repeated email is answered each time
    ]
    first, missing, third, _ = reply.users
    assert (first.account_id, first.token_version, first.name) == (
        bob.account_id,
        bob.token_version,
        "Bob",
    )
    assert (third.account_id, third.name) == (alice.account_id, "Alice")
    assert (missing.account_id, missing.token_version, missing.name) == ("", 0, "")
    # The same data CheckUserExists gives for one email.
    single = await client.CheckUserExists(U.CheckUserExistsRequest(email=BOB))
    assert (single.exists, single.account_id, single.token_version, single.name) == (
        first.exists,
        first.account_id,
        first.token_version,
        first.name,
    )
    # A deleted user is gone from the answer at once.
    await service.delete(Principal("user", BOB), BOB)
    reply = await client.CheckUsersExist(U.CheckUsersExistRequest(emails=[ALICE, BOB]))
    assert [u.exists for u in reply.users] == [True, False]


@pytest.mark.parametrize(
    ("emails", "detail"),
    [
        ([], "emails must list 1 to 100 addresses, got 0"),
        ([f"u{i}@example.com" for i in range(101)], "emails must list 1 to 100 addresses"),
        ([ALICE, "not-an-email"], "emails[1]"),
        (["", BOB], "emails[0] is required"),
        ([ALICE, "a*b@example.com"], "emails[1] contains characters that are not allowed"),
    ],
)
async def test_check_users_exist_refuses_a_bad_list_whole(
    server: Grpc, emails: list[str], detail: str
) -> None:
    error = await rpc_error(
        server.as_service("message").CheckUsersExist(U.CheckUsersExistRequest(emails=emails))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert detail in (error.details() or "")


async def test_check_users_exist_is_for_message_service_only(
    server: Grpc, token_for: Callable[[str], str]
) -> None:
    request = U.CheckUsersExistRequest(emails=[BOB])
    for name in ("notification", "frontend", "user", "admin"):
        error = await rpc_error(server.as_service(name).CheckUsersExist(request))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, name
    error = await rpc_error(
        server.anonymous().CheckUsersExist(request, metadata=bearer(token_for(ALICE)))
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await rpc_error(server.anonymous().CheckUsersExist(request))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_list_users(server: Grpc, token_for: Callable[[str], str]) -> None:
    for name in ("message", "notification", "frontend"):
        client = server.as_service(name)
        first = await client.ListUsers(U.ListUsersRequest(page_size=1))
        assert [u.email for u in first.users] == [ALICE]
        assert first.users[0].HasField("created_at")
        second = await client.ListUsers(
            U.ListUsersRequest(page_size=1, page_token=first.next_page_token)
        )
        assert [u.email for u in second.users] == [BOB]
        assert second.next_page_token == ""
    client = server.as_service("message")
    for request in (U.ListUsersRequest(page_size=101), U.ListUsersRequest(page_token="%%%")):
        assert (await rpc_error(client.ListUsers(request))).code() == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    error = await rpc_error(
        server.anonymous().ListUsers(U.ListUsersRequest(), metadata=bearer(token_for(ALICE)))
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await rpc_error(server.anonymous().ListUsers(U.ListUsersRequest()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_get_user_only_for_the_caller(
    server: Grpc, service: UserService, token_for: Callable[[str], str]
) -> None:
    client = server.anonymous()
    own = await client.GetUser(U.GetUserRequest(email=BOB), metadata=bearer(token_for(BOB)))
    assert own.email == BOB and own.created_at == own.updated_at
    for email in (ALICE, "nobody@example.com"):
        error = await rpc_error(
            client.GetUser(U.GetUserRequest(email=email), metadata=bearer(token_for(BOB)))
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await rpc_error(client.GetUser(U.GetUserRequest(email=BOB)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await rpc_error(
        client.GetUser(U.GetUserRequest(email=BOB), metadata=bearer("not.a.token"))
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await rpc_error(server.as_service("message").GetUser(U.GetUserRequest(email=BOB)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = await rpc_error(
        client.GetUser(U.GetUserRequest(email="bad"), metadata=bearer(token_for(BOB)))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The account deleted after the token was issued.
    token = token_for(BOB)
    await service.delete(Principal("user", BOB), BOB)
    error = await rpc_error(client.GetUser(U.GetUserRequest(email=BOB), metadata=bearer(token)))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_redis_down_is_unavailable(
    make_service: MakeService, start_grpc: StartGrpc, dead_redis: Redis
) -> None:
    server = await start_grpc(make_service(store_redis=dead_redis))
    error = await rpc_error(
        server.as_service("message").CheckUserExists(U.CheckUserExistsRequest(email=ALICE))
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    error = await rpc_error(
        server.anonymous().AuthenticateUser(
            U.AuthenticateUserRequest(email=ALICE, password=ALICE_PASSWORD)
        )
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_operators_list_replay_and_drop_the_erasure_dead_letters(
    start_grpc: StartGrpc, service: UserService, redis: Redis, token_for: Callable[[str], str]
) -> None:
    await redis.delete(ACCOUNTS_OUTBOX, ACCOUNTS_DEAD_LETTERS)
    # A poison erasure (it names no email): the real relay dead-letters it at once, without
    # calling MessageService or NotificationService (nobody listens on these channels).
    nowhere = grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}")
    relay = Relay(redis, OUTBOX, "test-relay", EraseAccount(nowhere, nowhere), lane_key=lane_key)

    async def dead_letter_poison() -> None:
        await relay.ensure_group()
        while await relay.drain_once():
            pass

    try:
        original = str(await redis.xadd(ACCOUNTS_OUTBOX, {"account_id": "acct-1"}))
        await dead_letter_poison()
        server = await start_grpc(service, DeadLetters(redis, OUTBOX))
        admin = server.as_service("admin")

        listed = await admin.ListDeadLetters(U.ListDeadLettersRequest())
        assert listed.total == 1 and len(listed.dead_letters) == 1
        letter = listed.dead_letters[0]
        assert letter.original_id == original and letter.consumer == "test-relay"
        assert "names no email" in letter.reason and letter.attempts == 1
        assert dict(letter.fields) == {"account_id": "acct-1"}
        assert letter.HasField("dead_lettered_at")

        # Only the operator's credential: not a user, not another service, not anonymous.
        request = U.ListDeadLettersRequest()
        for client, metadata, code in (
            (server.anonymous(), bearer(token_for(ALICE)), grpc.StatusCode.PERMISSION_DENIED),
            (server.as_service("message"), (), grpc.StatusCode.PERMISSION_DENIED),
            (server.anonymous(), (), grpc.StatusCode.UNAUTHENTICATED),
        ):
            error = await rpc_error(client.ListDeadLetters(request, metadata=metadata))
            assert error.code() == code
            error = await rpc_error(
                client.DropDeadLetters(U.DropDeadLettersRequest(all=True), metadata=metadata)
            )
            assert error.code() == code
        assert await redis.xlen(ACCOUNTS_DEAD_LETTERS) == 1

        # Bad requests are INVALID_ARGUMENT and change nothing.
        for bad in (
            U.ReplayDeadLettersRequest(),
            U.ReplayDeadLettersRequest(ids=[letter.id], all=True),
            U.ReplayDeadLettersRequest(ids=["not-an-id"]),
        ):
            error = await rpc_error(admin.ReplayDeadLetters(bad))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        error = await rpc_error(admin.ListDeadLetters(U.ListDeadLettersRequest(page_size=101)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert await redis.xlen(ACCOUNTS_DEAD_LETTERS) == 1

        await redis.xtrim(ACCOUNTS_OUTBOX, maxlen=0)
        replayed = await admin.ReplayDeadLetters(U.ReplayDeadLettersRequest(ids=[letter.id]))
        assert replayed.replayed == 1 and list(replayed.not_found) == []
        back: Any = await redis.xrange(ACCOUNTS_OUTBOX)
        assert [fields for _, fields in back] == [{"account_id": "acct-1"}]
        assert await redis.xlen(ACCOUNTS_DEAD_LETTERS) == 0
        again = await admin.ReplayDeadLetters(U.ReplayDeadLettersRequest(ids=[letter.id]))
        assert again.replayed == 0 and list(again.not_found) == [letter.id]

        # The relay refuses the replayed event again; the operator drops it for good.
        await dead_letter_poison()
        assert await redis.xlen(ACCOUNTS_DEAD_LETTERS) == 1
        dropped = await admin.DropDeadLetters(U.DropDeadLettersRequest(all=True))
        assert dropped.dropped == 1 and list(dropped.not_found) == []
        assert await redis.xlen(ACCOUNTS_DEAD_LETTERS) == 0
    finally:
        await nowhere.close()


async def test_dead_letters_without_a_store_are_unavailable(
    start_grpc: StartGrpc, service: UserService
) -> None:
    server = await start_grpc(service)
    error = await rpc_error(server.as_service("admin").ListDeadLetters(U.ListDeadLettersRequest()))
    assert error.code() == grpc.StatusCode.UNAVAILABLE

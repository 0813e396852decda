"""UserService over real gRPC with the EdgeInterceptor: every RPC, auth, errors, throttling."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import grpc.aio
import pytest
from missive.user.v1 import user_pb2
from redis.asyncio import Redis

from services.common.auth import KeyRing, TokenVerifier
from services.common.domain import Principal
from services.user.grpc.app import peer_host
from services.user.service import LoginLimits, UserService
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

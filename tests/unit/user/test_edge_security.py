"""Hostile input at UserService's two edges (REST and gRPC), from a penetration test's findings.

- the login throttle counts the TCP peer, whatever `X-Forwarded-For` says (no proxy trusted);
- no reply or log line repeats a submitted password; validation messages name field and rule;
- deeply nested JSON and out-of-range page tokens are a 400 / INVALID_ARGUMENT, never a 500;
- bytes that do not decode as the request message are INVALID_ARGUMENT with a neutral message,
  on every method, before credentials are looked at;
- addresses not in Unicode NFC are refused, not registered as look-alike accounts;
- chunked bodies are size-limited (413) and otherwise accepted; a request with two
  Authorization headers (gRPC: two `authorization` entries) is refused; credentials sent to a
  public operation are ignored on both transports.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import unicodedata
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import grpc.aio
import httpx
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from missive.user.v1 import user_pb2
from redis.asyncio import Redis

from services.common.bootstrap import Security
from services.common.grpc_edge import SERVICE_TOKEN_HEADER, UNDECODABLE_MESSAGE
from services.common.ports import free_port
from services.user.__main__ import main
from services.user.service import UserService
from tests.helpers.grpc_clients import NOT_SERVING, SERVING, health_watch, next_status
from tests.unit.user.conftest import (
    ALICE,
    ALICE_PASSWORD,
    BOB,
    BOB_PASSWORD,
    Grpc,
    MakeRest,
    StartGrpc,
    bearer,
    snapshot,
)

U = user_pb2
Tokens = Callable[[str], str]

SHORT = "Sh0rt!7"
LONG = "L0ng-" + "p" * 200
NFC_JOSE = unicodedata.normalize("NFC", "josé@example.com")
NFD_JOSE = unicodedata.normalize("NFD", "josé@example.com")
BEYOND_RANGE = base64.urlsafe_b64encode(b"o1:9223372036854775808").decode().rstrip("=")


@pytest.fixture
async def rest(make_rest: MakeRest, service: UserService) -> AsyncIterator[httpx.AsyncClient]:
    async with make_rest(service).client() as client:
        for name, email, password in (("Alice", ALICE, ALICE_PASSWORD), ("Bob", BOB, BOB_PASSWORD)):
            created = await client.post(
                "/users", json={"name": name, "email": email, "password": password}
            )
            assert created.status_code == 201, created.text
        yield client


@pytest.fixture
async def server(start_grpc: StartGrpc, service: UserService) -> Grpc:
    return await start_grpc(service)


def problem(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return str(response.json()["detail"])


async def rpc_error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


def assert_logs_free_of(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    for record in caplog.records:
        text = record.getMessage() + str(record.exc_info or "")
        for secret in secrets:
            assert secret not in text, f"{record.name} logged a secret: {text[:200]}"


# -- finding 6: no secret or long input echoed ----------------------------------------------


async def test_password_rule_violations_name_the_field_not_the_value(
    rest: httpx.AsyncClient, token_for: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    login = await rest.post("/login", json={"email": "someone@example.com", "password": SHORT})
    assert problem(login, 400) == "password: shorter than 8 characters"
    register = await rest.post(
        "/users", json={"name": "C", "email": "carol@example.com", "password": LONG}
    )
    assert problem(register, 400) == "password: longer than 128 characters"
    update = await rest.put(
        f"/users/{ALICE}",
        json={"password": SHORT},
        headers={"Authorization": f"Bearer {token_for(ALICE)}"},
    )
    assert problem(update, 400) == "password: shorter than 8 characters"
    for reply in (login, register, update):
        assert SHORT not in reply.text and LONG not in reply.text
    assert_logs_free_of(caplog, SHORT, LONG)


async def test_other_validation_messages_do_not_echo_input(
    rest: httpx.AsyncClient, token_for: Tokens
) -> None:
    missing = await rest.post("/login", json={"email": ALICE})
    assert problem(missing, 400) == "password: required"
    extra_name = "k" * 5000
    extra = await rest.post(
        "/login", json={"email": ALICE, "password": ALICE_PASSWORD, extra_name: SHORT}
    )
    detail = problem(extra, 400)
    assert detail.startswith("body: properties not in the contract: 'kkkk")
    assert len(detail) < 200 and SHORT not in extra.text
    wrong_type = await rest.post("/login", json={"email": ALICE, "password": 12345678})
    assert problem(wrong_type, 400) == "password: must be a string"
    unknown = await rest.get("/health", params={"q" * 3000: "1"})
    detail = problem(unknown, 400)
    assert "'qqqq" in detail and len(detail) < 200
    long_token = "t" * 600
    page = await rest.get(
        "/users",
        params={"page_token": long_token},
        headers={"Authorization": f"Bearer {token_for(ALICE)}"},
    )
    assert problem(page, 400).startswith("page_token: ")
    assert long_token not in page.text


async def test_grpc_password_errors_do_not_echo_the_password(
    server: Grpc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    too_long = "x" * 1000
    error = await rpc_error(
        server.anonymous().AuthenticateUser(
            U.AuthenticateUserRequest(email=ALICE, password=too_long)
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert too_long[:20] not in (error.details() or "")
    assert_logs_free_of(caplog, too_long[:20])


# -- finding 9: nesting depth and page tokens -------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/users"])
async def test_deeply_nested_json_is_a_400(
    rest: httpx.AsyncClient, redis: Redis, path: str
) -> None:
    before = await snapshot(redis)
    for body in ("[" * 20_000 + "]" * 20_000, '{"email":' + "[" * 20_000 + "]" * 20_000 + "}"):
        reply = await rest.post(path, content=body, headers={"content-type": "application/json"})
        assert "nested deeper than 32 levels" in problem(reply, 400)
    assert await snapshot(redis) == before


async def test_a_page_token_beyond_the_range_is_rejected(
    rest: httpx.AsyncClient, server: Grpc, token_for: Tokens, service: UserService
) -> None:
    await service.set_role(ALICE, "operator")  # listing every user is for operators
    listed = await rest.get(
        "/users",
        params={"page_token": BEYOND_RANGE},
        headers={"Authorization": f"Bearer {token_for(ALICE)}"},
    )
    assert problem(listed, 400) == "page_token is malformed"
    error = await rpc_error(
        server.as_service("message").ListUsers(U.ListUsersRequest(page_token=BEYOND_RANGE))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "page_token is malformed"


# -- finding 10: undecodable requests ---------------------------------------------------------

INVALID_UTF8 = bytes.fromhex("0a03fffefd")  # field 1 (a string), three bytes that are not UTF-8
INVALID_UTF8_FIELD_2 = bytes.fromhex("1203fffefd")  # the same in field 2


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        ("/missive.user.v1.UserService/AuthenticateUser", INVALID_UTF8),
        ("/missive.user.v1.UserService/GetUser", INVALID_UTF8),
        ("/missive.user.v1.UserService/CheckUserExists", INVALID_UTF8),
        ("/missive.user.v1.UserService/ListUsers", INVALID_UTF8_FIELD_2),
        ("/missive.user.v1.UserService/GetUser", b"\x0a\x05ab"),  # truncated
        ("/grpc.health.v1.Health/Check", INVALID_UTF8),
    ],
)
@pytest.mark.parametrize("credentials", ["none", "user", "service"])
async def test_undecodable_requests_are_invalid_argument(
    server: Grpc, token_for: Tokens, method: str, payload: bytes, credentials: str
) -> None:
    metadata: tuple[tuple[str, str], ...] = ()
    if credentials == "user":
        metadata = bearer(token_for(ALICE))
    elif credentials == "service":
        token = Security.load(server.keys, "message").credentials.token_for("user")
        metadata = ((SERVICE_TOKEN_HEADER, token),)
    async with grpc.aio.insecure_channel(server.address) as channel:
        raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        call = raw(payload, metadata=metadata, timeout=10)
        error = await rpc_error(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == UNDECODABLE_MESSAGE
    assert "DecodeError" not in (error.details() or "")


async def test_health_still_answers_valid_requests(server: Grpc) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        reply = await check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status in (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )


async def test_health_watch_and_reflection_still_work_behind_the_edge(server: Grpc) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        watch = health_watch(channel)
        assert await asyncio.wait_for(next_status(watch), 5) in (SERVING, NOT_SERVING)
        watch.cancel()
        bad_watch: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
            "/grpc.health.v1.Health/Watch"
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in bad_watch(INVALID_UTF8, timeout=5):
                pass
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        reflect = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        call = reflect(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        reply = await call.read()
        assert isinstance(reply, reflection_pb2.ServerReflectionResponse)
        names = {service.name for service in reply.list_services_response.service}
        assert "missive.user.v1.UserService" in names
        call.cancel()


# -- finding 11: look-alike addresses ---------------------------------------------------------


async def test_addresses_not_in_nfc_are_refused_on_both_transports(
    rest: httpx.AsyncClient, server: Grpc, redis: Redis
) -> None:
    assert NFC_JOSE != NFD_JOSE
    created = await rest.post(
        "/users", json={"name": "José", "email": NFC_JOSE, "password": "jose-password"}
    )
    assert created.status_code == 201 and created.json()["email"] == NFC_JOSE
    before = await snapshot(redis)
    twin = await rest.post(
        "/users", json={"name": "Jose", "email": NFD_JOSE, "password": "other-password"}
    )
    assert "email is not in Unicode normalization form C (NFC)" in problem(twin, 400)
    login = await rest.post("/login", json={"email": NFD_JOSE, "password": "jose-password"})
    assert "NFC" in problem(login, 400)
    assert await snapshot(redis) == before
    error = await rpc_error(
        server.anonymous().AuthenticateUser(
            U.AuthenticateUserRequest(email=NFD_JOSE, password="jose-password")
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NFC" in (error.details() or "")
    reply = await server.anonymous().AuthenticateUser(
        U.AuthenticateUserRequest(email=NFC_JOSE, password="jose-password")
    )
    assert reply.authenticated


# -- finding 13: chunked bodies, duplicate credentials, credentials on public operations -----


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_an_oversized_chunked_body_is_413(
    rest: httpx.AsyncClient, redis: Redis, token_for: Tokens
) -> None:
    before = await snapshot(redis)
    for method, path in (("POST", "/users"), ("POST", "/login"), ("PUT", f"/users/{ALICE}")):
        body = _chunks(b'{"name": "', *(b"x" * 1024 for _ in range(80)), b'"}')
        reply = await rest.request(
            method,
            path,
            content=body,
            headers={
                "content-type": "application/json",
                "Authorization": f"Bearer {token_for(ALICE)}",
            },
        )
        assert "exceeds 65536 bytes" in problem(reply, 413)
    assert await snapshot(redis) == before


async def test_a_chunked_body_within_the_limit_is_accepted(rest: httpx.AsyncClient) -> None:
    body = _chunks(
        b'{"email": "', ALICE.encode(), b'", "password": "', ALICE_PASSWORD.encode(), b'"}'
    )
    reply = await rest.post("/login", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["authenticated"] is True


async def test_two_authorization_headers_are_refused_on_rest(
    rest: httpx.AsyncClient, token_for: Tokens
) -> None:
    for first, second in ((token_for(ALICE), "garbage"), ("garbage", token_for(ALICE))):
        reply = await rest.get(
            f"/users/{ALICE}",
            headers=[("Authorization", f"Bearer {first}"), ("Authorization", f"Bearer {second}")],
        )
        assert "more than one Authorization header" in problem(reply, 401)
        assert reply.headers["www-authenticate"] == "Bearer"
    single = await rest.get(
        f"/users/{ALICE}", headers={"Authorization": f"Bearer {token_for(ALICE)}"}
    )
    assert single.status_code == 200


async def test_two_authorization_entries_are_refused_on_grpc(
    server: Grpc, token_for: Tokens
) -> None:
    for first, second in ((token_for(ALICE), "garbage"), ("garbage", token_for(ALICE))):
        metadata = (("authorization", f"Bearer {first}"), ("authorization", f"Bearer {second}"))
        for call in (
            server.anonymous().GetUser(U.GetUserRequest(email=ALICE), metadata=metadata),
            server.anonymous().AuthenticateUser(
                U.AuthenticateUserRequest(email=ALICE, password=ALICE_PASSWORD), metadata=metadata
            ),
        ):
            error = await rpc_error(call)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "more than one `authorization`" in (error.details() or "")


@pytest.mark.parametrize("token", ["valid", "forged"])
async def test_credentials_on_public_operations_are_ignored_on_both_transports(
    rest: httpx.AsyncClient, server: Grpc, token_for: Tokens, token: str
) -> None:
    sent = token_for(BOB) if token == "valid" else "not.a.token"
    login = await rest.post(
        "/login",
        json={"email": ALICE, "password": ALICE_PASSWORD},
        headers={"Authorization": f"Bearer {sent}"},
    )
    assert login.status_code == 200, login.text
    reply = await server.anonymous().AuthenticateUser(
        U.AuthenticateUserRequest(email=ALICE, password=ALICE_PASSWORD), metadata=bearer(sent)
    )
    assert reply.authenticated
    token_of_a_service = Security.load(server.keys, "frontend").credentials.token_for("user")
    as_service = await server.anonymous().AuthenticateUser(
        U.AuthenticateUserRequest(email=ALICE, password=ALICE_PASSWORD),
        metadata=((SERVICE_TOKEN_HEADER, token_of_a_service),),
    )
    assert as_service.authenticated


# -- finding 3: a forwarded address cannot steer the login throttle ---------------------------


async def test_the_login_throttle_counts_the_peer_not_a_forwarded_header(
    keys: Path, redis_url: str, redis: Redis
) -> None:
    spoofed = "203.0.113.77"
    rest_port, grpc_port = free_port(), free_port()
    environ = {
        "KEYS_DIR": str(keys),
        "REDIS_URL": redis_url,
        "BIND_HOST": "127.0.0.1",
        "USER_REST_PORT": str(rest_port),
        "USER_GRPC_PORT": str(grpc_port),
        "SHUTDOWN_GRACE": "1",
    }
    stop = asyncio.Event()
    server = asyncio.create_task(main(environ, stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rest_port}") as http:
            async with asyncio.timeout(10):
                while True:
                    try:
                        if (await http.get("/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.05)
            for i in range(3):
                reply = await http.post(
                    "/login",
                    json={"email": f"nobody{i}@example.com", "password": "wrong-password"},
                    headers={"X-Forwarded-For": f"{spoofed[:-1]}{i}"},
                )
                assert reply.status_code == 401, reply.text
        stored = await snapshot(redis)
        assert stored, "the failed sign-ins were not counted at all"
        assert not [key for key in stored if spoofed[:-1] in key]
        assert any("127.0.0.1" in key for key in stored)
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)

"""Fixtures for UserService: keys, a real Valkey (DB 0), the service, and its real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from missive.user.v1 import user_pb2_grpc
from redis.asyncio import Redis

from services.common.auth import KeyRing, UserTokenIssuer, ensure_keys
from services.common.bootstrap import Readiness, Security, create_endpoint, redis_ready
from services.common.dead_letters import DeadLetters
from services.common.grpc_client import peer_channel
from services.common.ports import free_port
from services.common.redis import create_redis
from services.user.api_rest.app import create_rest_app
from services.user.grpc.app import register
from services.user.passwords import Passwords
from services.user.service import Revoked, UserService
from services.user.settings import HashParams, LoginLimits
from services.user.store import RedisUserStore

ALICE = "alice@example.com"
BOB = "bob@example.com"
ALICE_PASSWORD = "alice-correct-horse"
BOB_PASSWORD = "bob-battery-staple"
WRONG_PASSWORD = "not-the-password"
# Every plain password the tests send; none may ever appear in a response.
PASSWORDS = (ALICE_PASSWORD, BOB_PASSWORD, WRONG_PASSWORD, "brand-new-secret", "another-secret")
CLIENT = "203.0.113.7"


async def snapshot(redis: Redis) -> dict[str, Any]:
    """Every key of the database with its type, value and whether it expires (tests only)."""
    state: dict[str, Any] = {}
    async for key in redis.scan_iter(count=1000):
        kind = await redis.type(key)
        if kind == "string":
            value: Any = await redis.get(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        else:
            value = kind
        state[key] = (kind, value, await redis.ttl(key) > 0)
    return state


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    ensure_keys(directory)
    return directory


@pytest.fixture
def security(keys: Path) -> Security:
    return Security.load(keys, "user", sign_user_tokens=True)


@pytest.fixture
def issuer(keys: Path) -> UserTokenIssuer:
    return UserTokenIssuer(KeyRing.load(keys, "user", sign_user_tokens=True), 900)


@pytest.fixture
def token_for(issuer: UserTokenIssuer) -> Callable[[str], str]:
    return lambda email: issuer.issue(email)[0]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url, 0)
    yield client
    await client.aclose()


@pytest.fixture
async def dead_redis() -> AsyncIterator[Redis]:
    """A client for an address nobody listens on: every command fails to connect."""
    client = create_redis(f"redis://127.0.0.1:{free_port()}", 0, connect_timeout=0.5)
    yield client
    await client.aclose()


MakeService = Callable[..., UserService]


@pytest.fixture
def make_service(redis: Redis, issuer: UserTokenIssuer) -> MakeService:
    """A UserService over the test Valkey; keyword arguments override its parts."""

    def make(
        *,
        limits: LoginLimits | None = None,
        params: HashParams | None = None,
        concurrency: int = 4,
        store_redis: Redis | None = None,
        revoked: Revoked | None = None,
    ) -> UserService:
        async def nobody(_email: str) -> None:
            return None

        return UserService(
            RedisUserStore(store_redis or redis),
            Passwords(params or HashParams(), concurrency),
            issuer,
            limits,
            revoked=revoked or nobody,
        )

    return make


@pytest.fixture
def service(make_service: MakeService) -> UserService:
    return make_service()


@dataclass
class Rest:
    """An httpx client on the real Connexion app; remembers every response body."""

    app: Any
    bodies: list[str] = field(default_factory=list)

    def client(self, host: str = CLIENT, token: str | None = None) -> httpx.AsyncClient:
        async def remember(response: httpx.Response) -> None:
            await response.aread()
            self.bodies.append(response.text)

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=(host, 40000)),
            base_url="http://user.test",
            headers=headers,
            event_hooks={"response": [remember]},
        )

    def assert_no_secrets(self) -> None:
        for body in self.bodies:
            assert "$argon2" not in body
            for password in PASSWORDS:
                assert password not in body


MakeRest = Callable[..., Rest]


@pytest.fixture
def make_rest(security: Security, redis: Redis) -> Iterator[MakeRest]:
    made: list[Rest] = []

    def make(
        service: UserService, max_body_bytes: int = 64 * 1024, ready: Readiness | None = None
    ) -> Rest:
        app = create_rest_app(
            service, security.verifier, ready or redis_ready(redis), max_body_bytes=max_body_bytes
        )
        rest = Rest(app)
        made.append(rest)
        return rest

    yield make
    for rest in made:
        rest.assert_no_secrets()


@pytest.fixture
async def http(make_rest: MakeRest, service: UserService) -> AsyncIterator[httpx.AsyncClient]:
    """An anonymous REST client on a UserService with the default limits."""
    async with make_rest(service).client() as client:
        yield client


class RecordingStub:
    """A UserService stub that remembers every reply and error message it receives."""

    def __init__(self, stub: user_pb2_grpc.UserServiceAsyncStub, sink: list[bytes]) -> None:
        self._stub = stub
        self._sink = sink

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._stub, name)

        async def call(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", 10)
            try:
                reply = await method(request, **kwargs)
            except grpc.aio.AioRpcError as exc:
                self._sink.append((exc.details() or "").encode())
                raise
            self._sink.append(reply.SerializeToString())
            return reply

        return call


@dataclass
class Grpc:
    """A real UserService gRPC server behind the edge, and clients for it."""

    address: str
    keys: Path
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    replies: list[bytes] = field(default_factory=list)

    def _stub(self, channel: grpc.aio.Channel) -> Any:
        self.channels.append(channel)
        return RecordingStub(user_pb2_grpc.UserServiceStub(channel), self.replies)

    def anonymous(self) -> Any:
        """A client without credentials (pass user tokens as metadata)."""
        return self._stub(grpc.aio.insecure_channel(self.address))

    def as_service(self, name: str) -> Any:
        """A client presenting service ``name``'s credential."""
        credentials = Security.load(self.keys, name).credentials
        return self._stub(peer_channel(self.address, credentials, target="user"))

    def assert_no_secrets(self) -> None:
        for reply in self.replies:
            assert b"$argon2" not in reply
            for password in PASSWORDS:
                assert password.encode() not in reply


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


StartGrpc = Callable[..., Awaitable[Grpc]]


@pytest.fixture
async def start_grpc(security: Security, keys: Path) -> AsyncIterator[StartGrpc]:
    """Start a UserService gRPC server (port 0) with the real EdgeInterceptor (and, given
    ``dead_letters``, the admin RPCs over them)."""
    running: list[tuple[Any, Grpc]] = []

    async def start(service: UserService, dead_letters: DeadLetters | None = None) -> Grpc:
        endpoint = create_endpoint(
            security=security,
            host="127.0.0.1",
            port=0,
            port_env="USER_GRPC_PORT",
            register=lambda server: register(server, service, dead_letters),
        )
        await endpoint.server.start()
        served = Grpc(f"127.0.0.1:{endpoint.port}", keys)
        running.append((endpoint.server, served))
        return served

    yield start
    for server, served in running:
        for channel in served.channels:
            await channel.close()
        await server.stop(None)
        served.assert_no_secrets()

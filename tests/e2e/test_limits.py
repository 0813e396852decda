"""Abuse limits end to end: sign-in throttling that spares the owner, registration, sending,
storage and live-stream capacity, over REST and gRPC against the real services.

Every REST client here connects from its own loopback address (127.0.0.x), so the services see
distinct client hosts; gRPC calls come from 127.0.0.1, or through a proxy from another address.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from missive.frontend.v1 import frontend_pb2, frontend_pb2_grpc
from missive.user.v1 import user_pb2

from tests.helpers.clients import PASSWORD, Stubs, User, next_notification
from tests.helpers.system import System
from tests.helpers.tcp_proxy import DelayProxy

WRONG = "not the password at all"

LIMITS = {
    "USER_LOGIN_MAX_FAILURES": "3",
    "USER_LOGIN_CLIENT_ATTEMPTS": "8",
    "USER_LOGIN_ACCOUNT_FREE_FAILURES": "6",
    "USER_LOGIN_ACCOUNT_BASE_DELAY_MS": "3000",
    "USER_LOGIN_ACCOUNT_MAX_DELAY_SECONDS": "5",
    "USER_REGISTER_CLIENT_ATTEMPTS": "5",
    "MESSAGE_SEND_LIMIT": "6",
    "MESSAGE_SENDER_QUOTA_BYTES": "65536",
    # The defaults, which the shared test settings lift.
    "FRONTEND_MAX_STREAMS_PER_CLIENT": "100",
}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System.create(tmp_path_factory.mktemp("limits"), web=False, **LIMITS)
    try:
        running.start()
        yield running
    finally:
        running.close()


@pytest.fixture
async def stubs(system: System) -> AsyncIterator[Stubs]:
    await system.wait_healthy()
    connected = Stubs.connect(system)
    yield connected
    await connected.close()


_next_source = iter(range(2, 250))


def source() -> str:
    """A loopback address no other test in this module uses."""
    return f"127.0.0.{next(_next_source)}"


def rest(system: System, service: str = "user", host: str | None = None) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=host or source())
    return httpx.AsyncClient(base_url=system.rest_url(service), transport=transport, timeout=10)


def new_email(name: str) -> str:
    return f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"


async def register(system: System, name: str, host: str | None = None) -> str:
    email = new_email(name)
    async with rest(system, host=host) as http:
        created = await http.post(
            "/users", json={"name": name, "email": email, "password": PASSWORD}
        )
        assert created.status_code == 201, created.text
    return email


async def login(system: System, email: str, password: str, host: str) -> httpx.Response:
    async with rest(system, host=host) as http:
        return await http.post("/login", json={"email": email, "password": password})


async def signed_in(system: System, name: str) -> User:
    email = await register(system, name)
    reply = await login(system, email, PASSWORD, source())
    assert reply.status_code == 200, reply.text
    return User(email, reply.json()["access_token"])


async def grpc_login(stubs: Stubs, email: str, password: str) -> user_pb2.AuthenticateUserResponse:
    reply: user_pb2.AuthenticateUserResponse = await stubs.user.AuthenticateUser(
        user_pb2.AuthenticateUserRequest(email=email, password=password), timeout=10
    )
    return reply


def retry_after(error: grpc.aio.AioRpcError) -> int:
    return int(dict(error.trailing_metadata() or ())["retry-after"])


# -- finding 4: wrong passwords from anywhere must not lock the owner out ------------------------


async def test_failures_from_many_clients_slow_down_but_never_lock_out_the_owner(
    system: System, stubs: Stubs
) -> None:
    await system.wait_healthy()
    email = await register(system, "Alice")
    assert (await login(system, email, PASSWORD, "127.0.0.1")).status_code == 200  # a known host
    # Six wrong passwords from six clients used to lock the account for 900 s.
    for _ in range(6):
        assert (await login(system, email, WRONG, source())).status_code == 401
    assert (await login(system, email, PASSWORD, source())).status_code == 200
    assert (await grpc_login(stubs, email, PASSWORD)).authenticated

    # A sustained attack from ever new clients meets an exponential back-off, capped at 5 s...
    refused: list[httpx.Response] = []
    for _ in range(12):
        reply = await login(system, email, WRONG, source())
        assert reply.status_code in (401, 429), reply.text
        if reply.status_code == 429:
            refused.append(reply)
    assert refused, "the account back-off never engaged"
    assert all(1 <= int(r.headers["retry-after"]) <= 5 for r in refused)
    assert all(r.headers["content-type"] == "application/problem+json" for r in refused)
    # ...which a new client of the owner's waits out (seconds, not a lock)...
    stranger = source()
    waiting = await login(system, email, PASSWORD, stranger)
    if waiting.status_code == 429:
        assert int(waiting.headers["retry-after"]) <= 5
        await asyncio.sleep(int(waiting.headers["retry-after"]) + 0.2)
        waiting = await login(system, email, PASSWORD, stranger)
    assert waiting.status_code == 200
    # ...and a host that signed in before does not wait at all, over either transport.
    for _ in range(8):
        await login(system, email, WRONG, source())
    assert (await grpc_login(stubs, email, PASSWORD)).authenticated
    for _ in range(8):
        await login(system, email, WRONG, source())
    assert (await login(system, email, PASSWORD, "127.0.0.1")).status_code == 200


async def test_one_client_guessing_one_account_is_stopped_only_for_itself(
    system: System, stubs: Stubs
) -> None:
    await system.wait_healthy()
    email = await register(system, "Bob")
    guesser = source()
    for _ in range(3):
        assert (await login(system, email, WRONG, guesser)).status_code == 401
    locked = await login(system, email, PASSWORD, guesser)
    assert locked.status_code == 429
    assert 890 <= int(locked.headers["retry-after"]) <= 900
    assert (await login(system, email, PASSWORD, source())).status_code == 200
    assert (await grpc_login(stubs, email, PASSWORD)).authenticated


# -- finding 12: successful sign-ins do not use up a client's budget -----------------------------


async def test_successful_sign_ins_are_not_counted_against_the_client(
    system: System, stubs: Stubs
) -> None:
    await system.wait_healthy()
    email = await register(system, "Carol")
    office = source()  # users behind one NAT: far more sign-ins than the 8 failures allowed
    async with rest(system, host=office) as http:
        for _ in range(12):
            reply = await http.post("/login", json={"email": email, "password": PASSWORD})
            assert reply.status_code == 200, reply.text
        for _ in range(10):
            assert (await grpc_login(stubs, email, PASSWORD)).authenticated
        # Failures still are: 8 per client host, whatever the accounts.
        for _ in range(8):
            guess = {"email": new_email("nobody"), "password": WRONG}
            assert (await http.post("/login", json=guess)).status_code == 401
        throttled = await http.post("/login", json={"email": email, "password": PASSWORD})
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
    for _ in range(4):  # gRPC
        await grpc_login(stubs, new_email("nobody"), WRONG)
    assert (await grpc_login(stubs, email, PASSWORD)).authenticated  # successes refunded


# -- finding 4: only operators list every user ---------------------------------------------------


async def test_an_ordinary_user_cannot_list_every_user(system: System, stubs: Stubs) -> None:
    await system.wait_healthy()
    dave = await signed_in(system, "Dave")
    async with rest(system) as http:
        refused = await http.get("/users", headers=dave.headers)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert "@" not in refused.json()["detail"]
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stubs.user.ListUsers(user_pb2.ListUsersRequest(), metadata=dave.metadata)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        system.grant_operator(dave.email)
        listed = await http.get("/users", params={"page_size": 100}, headers=dave.headers)
        assert listed.status_code == 200
        assert dave.email in [u["email"] for u in listed.json()["users"]]


# -- finding 7: registration and sending are limited, storage is bounded -------------------------


async def test_registrations_are_limited_per_client(system: System) -> None:
    await system.wait_healthy()
    host = source()
    async with rest(system, host=host) as http:
        for i in range(5):
            body = {"name": f"R{i}", "email": new_email("reg"), "password": PASSWORD}
            assert (await http.post("/users", json=body)).status_code == 201
        body = {"name": "R5", "email": new_email("reg"), "password": PASSWORD}
        refused = await http.post("/users", json=body)
        assert refused.status_code == 429
        assert 3500 <= int(refused.headers["retry-after"]) <= 3600
        assert refused.headers["content-type"] == "application/problem+json"
        assert "registrations" in refused.json()["detail"]
        # Nothing was stored: the address is still free, for another client.
        assert (await login(system, body["email"], PASSWORD, source())).status_code == 401
    await register(system, "Other")  # another client host is unaffected


async def test_sending_is_limited_per_account(system: System, stubs: Stubs) -> None:
    await system.wait_healthy()
    ada, bob = await signed_in(system, "Ada"), await signed_in(system, "Bob")
    async with rest(system, "message") as http:
        for i in range(3):
            body = {"sender_email": ada.email, "receiver_email": bob.email, "content": f"m{i}"}
            assert (await http.post("/messages", json=body, headers=ada.headers)).status_code == 201
        for i in range(3):
            await stubs.send(ada, bob, f"g{i}")
        body = {"sender_email": ada.email, "receiver_email": bob.email, "content": "one more"}
        refused = await http.post("/messages", json=body, headers=ada.headers)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "at most 6 messages" in refused.json()["detail"]
        with pytest.raises(grpc.aio.AioRpcError) as exhausted:
            await stubs.send(ada, bob, "and another")
        assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 1 <= retry_after(exhausted.value) <= 60
        listed = await http.get("/messages", params={"email": ada.email}, headers=ada.headers)
        assert len(listed.json()["messages"]) == 6  # nothing stored for the refused ones
        await stubs.send(bob, ada, "Bob is not limited by Ada's sending")


async def test_the_messages_a_user_sent_are_bounded_by_a_quota(
    system: System, stubs: Stubs
) -> None:
    await system.wait_healthy()
    cy, dee = await signed_in(system, "Cy"), await signed_in(system, "Dee")
    big = "\U0001f600" * 4096  # 16 KiB of UTF-8: three fit in the 64 KiB quota, not four
    async with rest(system, "message") as http:
        body: dict[str, Any] = {"sender_email": cy.email, "receiver_email": dee.email}
        sent = []
        for _ in range(3):
            reply = await http.post("/messages", json=body | {"content": big}, headers=cy.headers)
            assert reply.status_code == 201
            sent.append(reply.json()["id"])
        refused = await http.post("/messages", json=body | {"content": big}, headers=cy.headers)
        assert refused.status_code == 429
        assert "quota" in refused.json()["detail"]
        with pytest.raises(grpc.aio.AioRpcError) as exhausted:
            await stubs.send(cy, dee, big)
        assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "quota" in (exhausted.value.details() or "")
        deleted = await http.delete(
            f"/messages/{sent[0]}", params={"email": cy.email}, headers=cy.headers
        )
        assert deleted.status_code == 204
        again = await http.post("/messages", json=body | {"content": big}, headers=cy.headers)
        assert again.status_code == 201  # deleting freed the quota


# -- finding 5: live streams cannot be starved ---------------------------------------------------


def subscribe(
    stub: frontend_pb2_grpc.FrontendServiceAsyncStub, user: User
) -> grpc.aio.UnaryStreamCall[Any, Any]:
    return stub.SubscribeNotifications(
        frontend_pb2.SubscribeNotificationsRequest(email=user.email), metadata=user.metadata
    )


async def refusals(calls: list[grpc.aio.UnaryStreamCall[Any, Any]]) -> list[grpc.StatusCode]:
    """Once the server had time to answer: the status of each call that already ended."""
    await asyncio.sleep(1.5)
    codes = []
    for call in calls:
        if call.done():
            codes.append(await call.code())
    return codes


async def test_one_client_with_many_accounts_cannot_take_every_stream(
    system: System, stubs: Stubs
) -> None:
    await system.wait_healthy()
    frontend = system.services["frontend"]
    attackers = [await signed_in(system, f"Mal{i}") for i in range(15)]
    victim = await signed_in(system, "Victim")
    async with DelayProxy("127.0.0.1", frontend.grpc_port, source_host=source()) as proxy:
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}") for _ in range(3)]
        stub_of = [frontend_pb2_grpc.FrontendServiceStub(channel) for channel in channels]
        calls = [
            subscribe(stub_of[(n + i) % 3], attacker)
            for n, attacker in enumerate(attackers)
            for i in range(10)  # 150 streams: every slot there used to be
        ]
        try:
            codes = await refusals(calls)
            assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 50  # 100 per client host
            ended = [call for call in calls if call.done()]
            assert "from one client" in (await ended[0].details() or "")
            mine = subscribe(stubs.frontend, victim)
            assert await refusals([mine]) == []  # used to be RESOURCE_EXHAUSTED
            sender = await signed_in(system, "Sender")
            await stubs.send(sender, victim, "still reachable")
            assert (await next_notification(mine)).sender_email == sender.email
            mine.cancel()
        finally:
            for call in calls:
                call.cancel()
            for channel in channels:
                await channel.close()


async def test_an_account_over_its_stream_cap_loses_its_longest_idle_stream(
    system: System, stubs: Stubs
) -> None:
    await system.wait_healthy()
    eve, sender = await signed_in(system, "Eve"), await signed_in(system, "Sender")
    streams = []
    try:
        for _ in range(10):
            streams.append(subscribe(stubs.frontend, eve))
            await asyncio.sleep(0.05)  # registered in this order: the first is idle longest
        assert await refusals(streams) == []
        streams.append(subscribe(stubs.frontend, eve))
        assert await refusals(streams) == [grpc.StatusCode.ABORTED]  # not RESOURCE_EXHAUSTED
        assert streams[0].done() and not streams[-1].done()
        assert "idle the longest" in (await streams[0].details() or "")
        await stubs.send(sender, eve, "to every open stream")
        for call in streams[1:]:
            assert (await next_notification(call)).sender_email == sender.email
    finally:
        for call in streams:
            call.cancel()

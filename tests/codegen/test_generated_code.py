"""Generated servicers and REST interfaces can be implemented, type-check and serve real calls."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
import uvicorn
from missive.rest.user import create_app
from missive.user.v1 import user_pb2, user_pb2_grpc

from tests.codegen.conftest import ROOT
from tests.codegen.sample_service import SampleUserApi, SampleUserServicer

SAMPLE = Path(__file__).with_name("sample_service.py")


def _mypy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def test_sample_implementation_type_checks_strictly() -> None:
    result = _mypy(SAMPLE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_implementation_is_rejected_by_mypy(tmp_path: Path) -> None:
    bad = tmp_path / "bad_service.py"
    bad.write_text(
        SAMPLE.read_text()
        .replace(
            "return user_pb2.CheckUserExistsResponse(exists=request.email in self.emails)",
            "return user_pb2.User(name=request.email)",
        )
        .replace(
            "async def get_user(self, *, token_info: TokenInfo, email: str) -> User:",
            "async def get_user(self, *, token_info: TokenInfo, email: int) -> User:",
        )
    )
    result = _mypy(bad)
    assert result.returncode == 1
    assert "CheckUserExists" in result.stdout and "incompatible" in result.stdout.lower()
    assert (
        'of "get_user" is incompatible with supertype "missive.rest.user.interface.UserApi"'
        in result.stdout
    )


async def test_generated_servicer_answers_a_real_grpc_call() -> None:
    server = grpc.aio.server()
    user_pb2_grpc.add_UserServiceServicer_to_server(SampleUserServicer({"ada@example.com"}), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = user_pb2_grpc.UserServiceStub(channel)
            yes = await stub.CheckUserExists(
                user_pb2.CheckUserExistsRequest(email="ada@example.com"), timeout=5
            )
            no = await stub.CheckUserExists(
                user_pb2.CheckUserExistsRequest(email="bob@example.com"), timeout=5
            )
            assert (yes.exists, no.exists) == (True, False)
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetUser(user_pb2.GetUserRequest(email="bob@example.com"), timeout=5)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as unimplemented:
                await stub.ListUsers(user_pb2.ListUsersRequest(), timeout=5)
            assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(None)


async def _verify(token: str) -> dict[str, str] | None:
    return {"sub": "ada@example.com"} if token == "valid-token" else None


@pytest.fixture
async def rest_base_url() -> AsyncIterator[str]:
    app = create_app(SampleUserApi(), verify_token=_verify)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn exposes only this flag
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def test_generated_rest_interface_answers_real_http_calls(rest_base_url: str) -> None:
    auth = {"Authorization": "Bearer valid-token"}
    async with httpx.AsyncClient(base_url=rest_base_url) as http:
        created = await http.post(
            "/users", json={"name": "Ada", "email": "ada@example.com", "password": "correct horse"}
        )
        assert created.status_code == 201, created.text
        assert created.headers["location"] == "/users/ada@example.com"
        assert created.json()["email"] == "ada@example.com"
        assert "password" not in created.json()

        fetched = await http.get("/users/ada@example.com", headers=auth)
        assert fetched.status_code == 200 and fetched.json()["name"] == "Ada"

        anonymous = await http.get("/users/ada@example.com")
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"] == "application/problem+json"

        unknown_field = await http.post(
            "/users",
            json={"name": "Eve", "email": "eve@example.com", "password": "12345678", "admin": True},
        )
        assert unknown_field.status_code == 400
        assert unknown_field.headers["content-type"] == "application/problem+json"

        missing = await http.delete("/users/nobody@example.com", headers=auth)
        assert (
            missing.status_code == 404 and missing.json()["detail"] == "no user nobody@example.com"
        )

        deleted = await http.delete("/users/ada@example.com", headers=auth)
        assert deleted.status_code == 204 and deleted.content == b""

        assert (await http.get("/openapi.json")).json()["info"]["title"] == "Missive UserService"
        assert "Swagger UI" in (await http.get("/ui/")).text

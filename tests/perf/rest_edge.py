"""What the REST edge costs per request, in process: ``python -m tests.perf.rest_edge``.

MessageService's and UserService's REST apps, built as their entry points build them
(``create_rest_app``: the generated Connexion app, the shared edge, real bearer tokens checked
by the real verifier), driven over ASGI with no server and no socket. Their domain services
answer from memory (the same page, user or message every time), so only the edge is measured:
routing, the bearer check, request validation, the view, response validation, problem+json.

For each request, ``--rounds`` (15) batches of ``--requests`` (300) are timed (CPU time of the
process) and the lowest batch is reported, in microseconds per request. ``--against DIR``
compares with another copy of the code (e.g. ``git archive main | tar -x -C /tmp/main``):
``--pairs`` runs of each, alternating, each in its own process, the lowest of all reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.common.auth import UserTokenIssuer, ensure_keys
from services.common.bootstrap import Security
from services.message.api_rest.app import create_rest_app as message_rest_app
from services.message.models import Conversation, ConversationPage, Message
from services.user.api_rest.app import create_rest_app as user_rest_app
from services.user.models import UserInfo

CALLER = "ada@example.com"
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _message(i: int) -> Message:
    return Message(
        id=1000 + i,
        sender_email=CALLER if i % 2 else f"peer{i}@example.com",
        receiver_email=f"peer{i}@example.com" if i % 2 else CALLER,
        content=f"message number {i}: hello there, how are you?",
        timestamp=NOW - timedelta(minutes=i),
        read=bool(i % 3),
    )


class MemoryMessages:
    """The MessageService operations the measured requests call, answering from memory."""

    def __init__(self, conversations: int) -> None:
        self.page = ConversationPage(
            [
                Conversation(f"peer{i}@example.com", _message(i), i % 4, 10 + i, NOW)
                for i in range(conversations)
            ],
            "",
        )

    async def list_conversations(self, *_args: Any, **_kwargs: Any) -> ConversationPage:
        return self.page

    async def send(self, _principal: Any, **fields: Any) -> Message:
        return Message(7, fields["sender_email"], fields["receiver_email"], fields["content"], NOW)


class MemoryUsers:
    """The UserService operation the measured request calls, answering from memory."""

    async def get(self, _principal: Any, email: str, **_kwargs: Any) -> UserInfo:
        return UserInfo("Ada Lovelace", email, NOW, NOW)


async def _ready() -> bool:
    return True


@dataclass
class Request:
    name: str
    app: ASGIApp
    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    status: int

    async def once(self) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "root_path": "",
            "query_string": self.query,
            "headers": list(self.headers),
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
            "state": {},
        }
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(scope, receive, send)
        return status


def requests(keys: Path, conversations: int) -> list[Request]:
    security = Security.load(keys, "user", sign_user_tokens=True)
    token, _ = UserTokenIssuer(security.keys, 3600).issue(CALLER)
    auth = (b"authorization", f"Bearer {token}".encode())
    verifier = Security.load(keys, "message").verifier
    memory_messages: Any = MemoryMessages(conversations)
    memory_users: Any = MemoryUsers()
    messages: Any = message_rest_app(memory_messages, verifier, _ready)
    users: Any = user_rest_app(memory_users, verifier, _ready)
    host = (b"host", b"localhost")
    body = json.dumps(
        {"sender_email": CALLER, "receiver_email": "bob@example.com", "content": "hello, Bob"}
    ).encode()
    json_headers = [host, auth, (b"content-type", b"application/json")]
    json_headers.append((b"content-length", str(len(body)).encode()))
    query = f"email={CALLER}".encode()
    return [
        Request(
            f"GET /list_conversations ({conversations})",
            messages,
            "GET",
            "/list_conversations",
            query,
            [host, auth],
            b"",
            200,
        ),
        Request(
            "GET /users/{email}", users, "GET", f"/users/{CALLER}", b"", [host, auth], b"", 200
        ),
        Request("POST /messages", messages, "POST", "/messages", b"", json_headers, body, 201),
        Request(
            "400 (page_size=0)",
            messages,
            "GET",
            "/list_conversations",
            query + b"&page_size=0",
            [host, auth],
            b"",
            400,
        ),
    ]


_LIFESPANS: list[asyncio.Task[None]] = []


async def _lifespan(app: ASGIApp) -> None:
    """Start the app as a server would (Connexion builds its stack on startup)."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await queue.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup"):
            started.set()

    serving: Any = app({"type": "lifespan"}, queue.get, send)
    _LIFESPANS.append(asyncio.get_running_loop().create_task(serving))
    await started.wait()


async def measure(request: Request, rounds: int, count: int) -> float:
    status = await request.once()
    if status != request.status:
        raise SystemExit(f"{request.name}: status {status}, expected {request.status}")
    for _ in range(count):  # warm up
        await request.once()
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(count):
            await request.once()
        best = min(best, (time.process_time() - started) / count)
    return best * 1e6


async def main(rounds: int, count: int, conversations: int, only: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        keys = Path(directory)
        ensure_keys(keys)
        measured = [r for r in requests(keys, conversations) if only in r.name]
        for app in {id(r.app): r.app for r in measured}.values():
            await _lifespan(app)
        try:
            return {r.name: await measure(r, rounds, count) for r in measured}
        finally:
            for task in _LIFESPANS:
                task.cancel()
            await asyncio.gather(*_LIFESPANS, return_exceptions=True)
            _LIFESPANS.clear()


def _child(directory: Path, argv: list[str]) -> dict[str, float]:
    root = directory.resolve()
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'generated'}"}
    command = [sys.executable, "-m", "tests.perf.rest_edge", "--json", *argv]
    out = subprocess.run(command, cwd=root, env=env, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def compare(against: Path, pairs: int, argv: list[str]) -> None:
    """Alternate runs of the code in `against` (before) and of this copy (after)."""
    here = Path(__file__).resolve().parents[2]
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for _ in range(pairs):
        runs["before"].append(_child(against, argv))
        runs["after"].append(_child(here, argv))
    print(f"{'request':32} {'before':>9} {'after':>9}  (µs per request, lowest of {pairs} runs)")
    for name in runs["after"][0]:
        before = min(run[name] for run in runs["before"])
        after = min(run[name] for run in runs["after"])
        print(f"{name:32} {before:9.1f} {after:9.1f}  {after / before - 1:+.0%}")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--only", default="", help="only the requests whose name contains this")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--against", type=Path, help="another copy of the code to compare with")
    parser.add_argument("--pairs", type=int, default=3, help="runs of each with --against")
    args = parser.parse_args()
    if args.against is not None:
        argv = ["--rounds", str(args.rounds), "--requests", str(args.requests)]
        argv += ["--conversations", str(args.conversations), "--only", args.only]
        compare(args.against, args.pairs, argv)
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = asyncio.run(main(args.rounds, args.requests, args.conversations, args.only))
    if args.json:
        print(json.dumps(results))
        return
    for name, micros in results.items():
        print(f"{name:32} {micros:7.1f} µs per request (lowest of {args.rounds} x {args.requests})")


if __name__ == "__main__":
    run()

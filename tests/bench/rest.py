"""REST scenarios: the generated edges against a bare Starlette app serving the same JSON."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from services.common.ports import free_port
from tests.bench import procs
from tests.bench.figures import figure
from tests.helpers.clients import User, register_and_login

if TYPE_CHECKING:
    from tests.bench.run import Bench

IN_FLIGHT = 64
PEERS = 10
NOTIFICATIONS = 20


@dataclass(frozen=True)
class Call:
    """One REST request of a scenario and the status it must get."""

    name: str
    service: str
    method: str
    target: str
    status: int
    body: dict[str, Any] | None = None

    def raw(self, port: int, token: str) -> bytes:
        """The request as bytes on the wire (HTTP/1.1, keep-alive)."""
        payload = json.dumps(self.body).encode() if self.body is not None else b""
        head = [
            f"{self.method} {self.target} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            f"Authorization: Bearer {token}",
            "Accept: application/json",
        ]
        if self.body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + payload

    @property
    def key(self) -> str:
        return f"{self.method} {self.target}"


def calls(reader: User, peer: User) -> list[Call]:
    message = {
        "sender_email": reader.email,
        "receiver_email": peer.email,
        "content": "Lunch at noon?",
    }
    return [
        Call(
            "GET /list_conversations (10 conversations)",
            "message",
            "GET",
            f"/list_conversations?email={reader.email}",
            200,
        ),
        Call(
            "GET /list_notifications (page of 20)",
            "notification",
            "GET",
            f"/list_notifications?email={reader.email}&page_size=20",
            200,
        ),
        Call("GET /users/{email} (own user)", "user", "GET", f"/users/{reader.email}", 200),
        Call("POST /messages", "message", "POST", "/messages", 201, message),
        Call(
            "GET /list_conversations?page_size=0 → 400",
            "message",
            "GET",
            "/list_conversations?page_size=0",
            400,
        ),
    ]


async def _populate(bench: Bench) -> tuple[User, list[User]]:
    """A reader with 10 conversations and 20 notifications."""
    system = bench.system
    reader = await register_and_login(system, "Reader")
    peers = list(
        await asyncio.gather(*(register_and_login(system, f"Peer{i}") for i in range(PEERS)))
    )
    async with httpx.AsyncClient(base_url=system.rest_url("message"), timeout=10) as http:
        for peer in peers:
            for sender, receiver in ((reader, peer), (peer, reader), (peer, reader)):
                body = {
                    "sender_email": sender.email,
                    "receiver_email": receiver.email,
                    "content": "Hi there",
                }
                reply = await http.post("/messages", json=body, headers=sender.headers)
                assert reply.status_code == 201, reply.text
    async with httpx.AsyncClient(base_url=system.rest_url("notification"), timeout=10) as http:
        for _ in range(200):
            page = await http.get(
                "/list_notifications",
                params={"email": reader.email, "page_size": 20},
                headers=reader.headers,
            )
            if len(page.json().get("notifications", [])) >= NOTIFICATIONS:
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"the reader's notifications did not arrive: {page.text}")
    return reader, peers


async def _capture(bench: Bench, reader: User, scenario: list[Call]) -> dict[str, dict[str, Any]]:
    """The reply the real service gives to each call (what the bare app will serve)."""
    docs = {}
    for call in scenario:
        async with httpx.AsyncClient(
            base_url=bench.system.rest_url(call.service), timeout=10
        ) as http:
            reply = await http.request(
                call.method, call.target, json=call.body, headers=reader.headers
            )
        if reply.status_code != call.status:
            raise RuntimeError(f"{call.name}: {reply.status_code} {reply.text}")
        docs[call.key] = {
            "status": reply.status_code,
            "body": reply.json(),
            "media_type": reply.headers["content-type"],
        }
    return docs


def _spec(bench: Bench, call: Call, port: int, token: str) -> dict[str, Any]:
    return {
        "kind": "http",
        "target": f"127.0.0.1:{port}",
        "requests": [{"body": base64.b64encode(call.raw(port, token)).decode()}],
        "status": call.status,
        "concurrency": IN_FLIGHT,
        "rate": None,
        "duration": bench.options.duration,
    }


async def rest(bench: Bench, base: Path) -> None:
    reader, peers = await _populate(bench)
    scenario = calls(reader, peers[0])
    docs = await _capture(bench, reader, scenario)
    docs_path = base / "bare-rest-docs.json"
    docs_path.write_text(json.dumps(docs), encoding="utf-8")
    port = free_port()
    results: dict[str, Any] = {}
    with procs.server_process("tests.bench.bare_rest", str(port), str(docs_path)) as bare:
        await procs.wait_port(port, bare)
        for call in scenario:
            real_port = int(bench.system.rest_url(call.service).rsplit(":", 1)[1])
            real = await procs.Loader(_spec(bench, call, real_port, reader.token)).run()
            before = procs.cpu_seconds(bare.pid)
            baseline = await procs.Loader(_spec(bench, call, port, reader.token)).run()
            baseline["server_cpu_s"] = procs.cpu_seconds(bare.pid) - before
            for result, what in ((real, call.name), (baseline, f"bare {call.name}")):
                if not result["ok"]:
                    raise RuntimeError(f"{what}: no request succeeded ({result['first_error']})")
            results[call.name] = {"missive": real, "bare": baseline}
            bench.add(
                figure(
                    "REST",
                    f"{call.name}, 64 connections",
                    real["rps"],
                    "rps",
                    baseline["rps"],
                    "bare Starlette",
                ),
                figure(
                    "REST",
                    f"{call.name}, p50",
                    real["p50_ms"],
                    "ms",
                    baseline["p50_ms"],
                    "bare Starlette",
                ),
            )
    shares = [r["bare"]["loader_cpu_share"] for r in results.values()]
    bench.add(
        figure(
            "REST", "loader CPU share on the bare app, highest (1 = a whole core)", max(shares), ""
        )
    )
    bench.details["rest"] = results

"""Prometheus metrics of the running system: each service scraped around a known workload.

The four services run through their real entry points; each one's ``/metrics`` (the REST port,
FrontendService's FRONTEND_METRICS_PORT) is scraped before and after N sends to a receiver
with a live stream, and the deltas must be exact. The outbox collectors read every 0.2 s
(METRICS_OUTBOX_INTERVAL) so the backlog gauges settle quickly.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio
from click.testing import CliRunner
from missive.frontend.v1 import frontend_pb2
from missive_client.cli import cli
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.clients import Stubs, next_notification, register_and_login
from tests.helpers.system import SERVICES, System

pytestmark = pytest.mark.e2e

N = 5
PROMTOOL = Path("/usr/bin/promtool")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System.create(
        tmp_path_factory.mktemp("metrics"), METRICS_OUTBOX_INTERVAL="0.2", LOG_LEVEL="WARNING"
    )
    try:
        running.start()
        yield running
    finally:
        running.close()


async def exposition(system: System, name: str) -> str:
    async with httpx.AsyncClient(timeout=5) as http:
        reply = await http.get(system.metrics_url(name))
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=")
    return reply.text


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(system: System) -> dict[str, Samples]:
    texts = await asyncio.gather(*(exposition(system, name) for name in SERVICES))
    return {name: parse(text) for name, text in zip(SERVICES, texts, strict=True)}


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def settle(
    system: System, done: Callable[[dict[str, Samples]], bool], within: float = 15
) -> dict[str, Samples]:
    """Scrape until ``done`` holds (the relays and collectors work asynchronously)."""
    deadline = time.monotonic() + within
    while True:
        now = await scrape(system)
        if done(now) or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.1)


LABELS = frozenset(
    {"grpc_type", "grpc_service", "grpc_method", "grpc_code", "method", "route", "status"}
    | {"stream", "group", "hop", "command", "error"}
)
OUTBOXES = {
    "message": ("outbox:notifications", "notification-relay"),
    "notification": ("outbox:frontend", "frontend-relay"),
}


def backlog_is_empty(now: dict[str, Samples]) -> bool:
    return all(
        get(now[name], "missive_outbox_lag", stream=stream, group=group) == 0
        and get(now[name], "missive_outbox_pending", stream=stream, group=group) == 0
        and (
            "missive_outbox_lag",
            frozenset({("stream", stream), ("group", group)}),
        )
        in now[name]
        for name, (stream, group) in OUTBOXES.items()
    )


Scrapes = dict[str, Samples]


def diff(after: Scrapes, before: Scrapes, service: str, name: str, **labels: str) -> float:
    return get(after[service], name, **labels) - get(before[service], name, **labels)


async def n_sends(system: System) -> tuple[Scrapes, Scrapes, Scrapes, set[str]]:
    """Two users, a live stream, N sends: scrapes at the start, before the sends, after
    every hop delivered them; and the ids of the messages and notifications."""
    await system.wait_healthy()
    start = await scrape(system)
    stubs = Stubs.connect(system)
    ada = await register_and_login(system, "Ada")
    bob = await register_and_login(system, "Bob")
    stream = stubs.frontend.SubscribeNotifications(
        frontend_pb2.SubscribeNotificationsRequest(email=bob.email), metadata=bob.metadata
    )
    try:
        opened = await settle(
            system, lambda now: get(now["frontend"], "missive_frontend_live_streams") >= 1
        )
        assert get(opened["frontend"], "missive_frontend_live_streams") == 1
        before = await settle(system, backlog_is_empty)
        sent = [await stubs.send(ada, bob, f"hello {i}") for i in range(N)]
        received = [await next_notification(stream) for _ in range(N)]
        assert [n.message_id for n in received] == [m.id for m in sent]

        def delivered(now: Scrapes) -> bool:
            return all(
                diff(now, before, svc, "missive_outbox_delivered_total", stream=stream) == N
                for svc, (stream, _) in OUTBOXES.items()
            ) and backlog_is_empty(now)

        after = await settle(system, delivered)
    finally:
        stream.cancel()
        await stubs.close()
    return start, before, after, {str(m.id) for m in sent} | {n.id for n in received}


def assert_bounded_labels(after: Scrapes, ids: set[str]) -> None:
    """Label values come from bounded sets: no email, no id, only the documented names."""
    ours = ("grpc_", "http_", "missive_")
    for service, samples in after.items():
        for name, labels in samples:
            for key, value in labels:
                assert "@" not in value, (service, name, key, value)
                assert not re.fullmatch(r"[0-9a-f]{32}|[0-9]{10,}", value), (service, name, value)
                if name.startswith(ours) and key != "le":
                    assert key in LABELS, (service, name, key)
                    assert value not in ids, (service, name, key, value)


def client_calls(after: Scrapes, before: Scrapes, service: str, prefix: str) -> float:
    """OK calls of ``service``'s channels to methods starting with ``prefix``."""
    total = 0.0
    for (name, frozen), value in after[service].items():
        labels = dict(frozen)
        if name == "grpc_client_handled_total" and labels["grpc_code"] == "OK":
            if labels["grpc_method"].startswith(prefix):
                total += value - get(before[service], name, **labels)
    return total


async def test_n_sends_count_exactly_at_every_hop(system: System) -> None:
    start, before, after, ids = await n_sends(system)

    send_ok = {
        "grpc_type": "unary",
        "grpc_service": "missive.message.v1.MessageService",
        "grpc_method": "SendMessage",
    }
    assert diff(after, before, "message", "grpc_server_started_total", **send_ok) == N
    assert (
        diff(after, before, "message", "grpc_server_handled_total", **send_ok, grpc_code="OK") == N
    )
    assert diff(after, before, "message", "grpc_server_handling_seconds_count", **send_ok) == N
    for service, (stream_name, group) in OUTBOXES.items():
        for counter, expected in (("added", N), ("delivered", N), ("dead_lettered", 0)):
            name = f"missive_outbox_{counter}_total"
            assert diff(after, before, service, name, stream=stream_name) == expected, name
        assert get(after[service], "missive_outbox_lag", stream=stream_name, group=group) == 0
        assert get(after[service], "missive_outbox_pending", stream=stream_name, group=group) == 0
    # The peers' channels count their calls too: the relay's CreateNotification(s) to
    # NotificationService, and its ReceiveNotification(s) to FrontendService.
    assert client_calls(after, before, "message", "CreateNotification") >= 1
    assert client_calls(after, before, "notification", "ReceiveNotification") >= 1
    # End-to-end latency since SendMessage, observed once per message at each hop.
    latency = "missive_delivery_latency_seconds"
    for service, hop in (
        ("message", "notification"),
        ("notification", "frontend"),
        ("frontend", "live_stream"),
    ):
        assert diff(after, before, service, f"{latency}_count", hop=hop) == N, hop
        assert diff(after, before, service, f"{latency}_bucket", hop=hop, le="+Inf") == N, hop
        assert diff(after, before, service, f"{latency}_bucket", hop=hop, le="60.0") == N, hop
    assert diff(after, before, "frontend", "missive_frontend_notifications_pushed_total") == N
    # REST: two registrations and two logins, by route template.
    register = {"method": "POST", "route": "/users", "status": "201"}
    login = {"method": "POST", "route": "/login", "status": "200"}
    assert diff(after, start, "user", "http_requests_total", **register) == 2
    assert diff(after, start, "user", "http_requests_total", **login) == 2
    assert diff(after, start, "user", "http_request_duration_seconds_count", **login) == 2
    # Redis round trips are timed in every service that stores.
    for service in ("user", "message", "notification"):
        assert any(
            name == "missive_redis_command_duration_seconds_count" and value > 0
            for (name, _), value in after[service].items()
        ), service
        assert get(after[service], "process_cpu_seconds_total") > 0
    assert_bounded_labels(after, ids)


def test_promtool_accepts_every_endpoint(system: System) -> None:
    promtool = shutil.which("promtool") or str(PROMTOOL)
    if not Path(promtool).exists():
        pytest.fail(f"{PROMTOOL} is missing: run `make promtool` (apt-get install prometheus)")
    asyncio.run(system.wait_healthy())
    for name in SERVICES:
        text = httpx.get(system.metrics_url(name), timeout=5).text
        assert "grpc_server_handled_total" in text and "process_cpu_seconds_total" in text, name
        checked = subprocess.run(
            [promtool, "check", "metrics"],
            input=text.encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert checked.returncode == 0, name + ": " + (checked.stdout + checked.stderr).decode()


def cli_env(system: System, config: Path) -> dict[str, str]:
    return {
        "MISSIVE_USER_URL": system.rest_url("user"),
        "MISSIVE_MESSAGE_URL": system.rest_url("message"),
        "MISSIVE_NOTIFICATION_URL": system.rest_url("notification"),
        "MISSIVE_USER_GRPC": system.grpc_addr("user"),
        "MISSIVE_MESSAGE_GRPC": system.grpc_addr("message"),
        "MISSIVE_NOTIFICATION_GRPC": system.grpc_addr("notification"),
        "MISSIVE_FRONTEND_GRPC": system.grpc_addr("frontend"),
        "FRONTEND_METRICS_PORT": str(system.services["frontend"].metrics_port),
        "XDG_CONFIG_HOME": str(config),
    }


async def test_a_poison_event_is_a_dead_letter_in_the_metrics_and_in_status(
    system: System, tmp_path: Path
) -> None:
    await system.wait_healthy()
    stream, group = OUTBOXES["message"]
    before = parse(await exposition(system, "message"))
    dead_before = get(before, "missive_outbox_dead_letters", stream=stream)
    db = redis.asyncio.Redis.from_url(system.valkey.url, db=1, decode_responses=True)
    try:
        await db.xadd(stream, {"not_an_event": "poison"})
    finally:
        await db.aclose()

    def dead_lettered(now: dict[str, Samples]) -> bool:
        return (
            get(now["message"], "missive_outbox_dead_letters", stream=stream) == dead_before + 1
            and get(now["message"], "missive_outbox_pending", stream=stream, group=group) == 0
        )

    after = (await settle(system, dead_lettered))["message"]
    dead_total = "missive_outbox_dead_lettered_total"
    assert get(after, dead_total, stream=stream) - get(before, dead_total, stream=stream) == 1
    assert get(after, "missive_outbox_dead_letters", stream=stream) == dead_before + 1
    assert get(after, "missive_outbox_lag", stream=stream, group=group) == 0

    env = cli_env(system, tmp_path)
    runner = CliRunner()
    as_json = await asyncio.to_thread(runner.invoke, cli, ["status", "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.output)
    assert len(rows) == 7 and all(row["serving"] for row in rows)
    by_service = {row["service"]: row["backlog"] for row in rows}
    [outbox] = by_service["MessageService"]["outboxes"]
    assert outbox == {
        "stream": stream,
        "lag": 0,
        "pending": 0,
        "oldest_pending_age_seconds": 0.0,
        "dead_letters": dead_before + 1,
    }
    assert [o["stream"] for o in by_service["UserService"]["outboxes"]] == ["outbox:accounts"]
    assert [o["stream"] for o in by_service["NotificationService"]["outboxes"]] == [
        "outbox:frontend"
    ]
    frontend = by_service["FrontendService"]
    assert frontend["outboxes"] == [] and frontend["error"] == ""
    assert frontend["live_streams"] == 0

    human = await asyncio.to_thread(runner.invoke, cli, ["status"], env=env)
    assert human.exit_code == 0, human.output
    [line] = [line for line in human.output.splitlines() if "outbox:notifications" in line]
    assert line.split()[-1] == str(int(dead_before + 1)), human.output
    assert "dead letters" in human.output and "none (0 live streams)" in human.output

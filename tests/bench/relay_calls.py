"""The RPCs each relay hop delivered with, read from the receiving services' gRPC metrics."""

from __future__ import annotations

import asyncio

from tests.helpers.replicas import server_calls
from tests.helpers.system import System

__all__ = ["HOPS", "RELAY_CALLS", "relay_calls"]

RELAY_CALLS = {
    "hop1": (
        "notification",
        (
            "/missive.notification.v1.NotificationService/CreateNotification",
            "/missive.notification.v1.NotificationService/CreateNotifications",
        ),
    ),
    "hop2": (
        "frontend",
        (
            "/missive.frontend.v1.FrontendService/ReceiveNotification",
            "/missive.frontend.v1.FrontendService/ReceiveNotifications",
        ),
    ),
}
"""The RPCs each relay hop delivers with (one per entry, or one per batch), by receiving service."""

HOPS = (
    ("hop1", "MessageService → NotificationService"),
    ("hop2", "NotificationService → FrontendService"),
)
"""Each relay hop and how the figures name it."""


async def relay_calls(system: System) -> dict[str, int]:
    """RPCs each relay hop's receiving service has handled so far (every status code)."""
    totals = {}
    for hop, (service, methods) in RELAY_CALLS.items():
        url = system.metrics_url(service)
        totals[hop] = sum(await asyncio.gather(*(server_calls(url, m) for m in methods)))
    return totals

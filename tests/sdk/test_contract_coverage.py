"""The SDK covers exactly what users may call: every user RPC and REST operation, nothing else."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from missive.access import RPC_ACCESS
from missive_client import Transport, _calls, _ops

ROOT = Path(__file__).resolve().parents[2]
SERVICE_NAMES = {
    "user": "missive.user.v1.UserService",
    "message": "missive.message.v1.MessageService",
    "notification": "missive.notification.v1.NotificationService",
    "frontend": "missive.frontend.v1.FrontendService",
}


def every_call(transport: Transport) -> list[_calls.Call[Any]]:
    """One description of every operation the SDK offers, built for ``transport``."""
    email, peer = "ada@example.com", "bob@example.com"
    return [
        _ops.login(transport, email, "password"),
        _ops.register("Ada", email, "password"),
        _ops.get_user(transport, email),
        _ops.update_user(email, "Ada", None),
        _ops.delete_user(email),
        _ops.revoke_tokens(email),
        _ops.list_users(None, ""),
        _ops.send_message(transport, email, peer, "hi", "key"),
        _ops.get_message(transport, email, 1),
        _ops.list_messages(transport, email, peer, None, ""),
        _ops.list_conversations(transport, email, None, ""),
        _ops.mark_conversation_read(transport, email, peer),
        _ops.delete_message(transport, email, 1),
        _ops.list_notifications(transport, email, False, None, ""),
        _ops.mark_notification_read(transport, email, "1"),
        _ops.mark_all_notifications_read(transport, email),
        _ops.get_subscription(transport, email),
        _ops.subscribe(transport, email),
        _ops.unsubscribe(transport, email),
    ]  # the live stream (SubscribeNotifications) is opened by the transports directly


def _camel(snake: str) -> str:
    return "".join(part.title() for part in snake.split("_"))


def test_grpc_calls_are_exactly_the_rpcs_users_may_call() -> None:
    used = {
        f"/{SERVICE_NAMES[call.service]}/{_camel(call.method)}"
        for call in every_call("grpc")
        if isinstance(call, _calls.GrpcCall)
    }
    used.add("/missive.frontend.v1.FrontendService/SubscribeNotifications")
    for_users = {method for method, access in RPC_ACCESS.items() if access.users or access.public}
    internal = set(RPC_ACCESS) - for_users
    assert used == for_users
    assert "/missive.user.v1.UserService/CheckUserExists" in internal
    assert "/missive.notification.v1.NotificationService/CreateNotification" in internal
    assert "/missive.frontend.v1.FrontendService/ReceiveNotification" in internal


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def test_rest_calls_cover_every_operation_of_the_openapi_documents() -> None:
    used = {
        (call.service, call.sync.__module__.rsplit(".", 1)[-1])
        for transport in ("grpc", "rest")
        for call in every_call(transport)
        if isinstance(call, _calls.RestCall)
    }
    documented = set()
    for service in ("user", "message", "notification"):
        document = yaml.safe_load((ROOT / "openapi" / f"{service}.yaml").read_text())
        for path_item in document["paths"].values():
            for operation in path_item.values():
                if isinstance(operation, dict) and "operationId" in operation:
                    documented.add((service, _snake(operation["operationId"])))
    health = {(service, "health") for service in ("user", "message", "notification")}
    assert used | health == documented  # GET /health is what Client.status() calls


def test_rest_only_and_both_transport_operations_are_routed_as_documented() -> None:
    grpc_kinds = {type(call).__name__ for call in every_call("grpc")}
    assert grpc_kinds == {"GrpcCall", "RestCall"}  # users' CRUD exists only over REST
    assert {type(call).__name__ for call in every_call("rest")} == {"RestCall"}
    unsafe = {
        call.method if isinstance(call, _calls.GrpcCall) else call.sync.__module__.split(".")[-1]
        for call in every_call("grpc")
        if not call.retry_safe
    }
    assert unsafe == {"create_user", "delete_user", "delete_message", "revoke_tokens"}

"""The public surface is pinned: __all__, docstrings on everything public, py.typed shipped."""

from __future__ import annotations

import inspect
from importlib import resources

import missive_client
import missive_client.cli

EXPECTED = [
    "AlreadyExists",
    "AsyncClient",
    "AsyncMessages",
    "AsyncNotificationStream",
    "AsyncNotifications",
    "AsyncPager",
    "AsyncUsers",
    "Client",
    "ClientConfig",
    "ConfigError",
    "Conversation",
    "DeadlineExceeded",
    "HealthStatus",
    "InvalidArgument",
    "Message",
    "Messages",
    "MissiveError",
    "NotFound",
    "Notification",
    "NotificationStream",
    "Notifications",
    "Page",
    "Pager",
    "PermissionDenied",
    "RateLimited",
    "ReconnectCallback",
    "ServerError",
    "ServiceHealth",
    "Subscription",
    "Token",
    "Transport",
    "Unauthenticated",
    "Unavailable",
    "User",
    "Users",
]

GROUP_OPERATIONS = {
    "users": {"register", "get", "update", "delete", "revoke_tokens", "list"},
    "messages": {"send", "get", "list", "conversations", "mark_read", "delete"},
    "notifications": {
        "list",
        "unread_count",
        "mark_read",
        "mark_all_read",
        "subscribe",
        "unsubscribe",
        "is_subscribed",
        "watch",
    },
}


def test_all_is_pinned_and_sorted() -> None:
    assert missive_client.__all__ == EXPECTED
    assert sorted(missive_client.__all__) == missive_client.__all__
    for name in EXPECTED:
        assert hasattr(missive_client, name), name


def test_nothing_generated_leaks_into_the_public_names() -> None:
    public = {name for name in dir(missive_client) if not name.startswith("_")}
    assert public - {"cli"} == set(EXPECTED)  # cli is the subpackage, imported above
    for name in EXPECTED:
        module = getattr(getattr(missive_client, name), "__module__", "missive_client")
        assert "_generated" not in module, name


def _public_members(cls: type) -> list[tuple[str, object]]:
    return [
        (name, member)
        for name, member in vars(cls).items()
        if not name.startswith("_") and (callable(member) or isinstance(member, property))
    ]


def test_every_public_class_function_and_method_has_a_docstring() -> None:
    missing: list[str] = []
    for name in EXPECTED:
        obj = getattr(missive_client, name)
        if inspect.isclass(obj):
            if not (obj.__doc__ or "").strip():
                missing.append(name)
            for member_name, member in _public_members(obj):
                target = member.fget if isinstance(member, property) else member
                if not (getattr(target, "__doc__", None) or "").strip():
                    missing.append(f"{name}.{member_name}")
    assert missing == []


def test_sync_and_async_groups_offer_the_same_operations() -> None:
    pairs = {
        "users": (missive_client.Users, missive_client.AsyncUsers),
        "messages": (missive_client.Messages, missive_client.AsyncMessages),
        "notifications": (missive_client.Notifications, missive_client.AsyncNotifications),
    }
    for group, (sync_cls, async_cls) in pairs.items():
        sync_ops = {name for name, _ in _public_members(sync_cls)}
        async_ops = {name for name, _ in _public_members(async_cls)}
        assert sync_ops == async_ops == GROUP_OPERATIONS[group], group
        for op in sync_ops:
            sync_params = list(inspect.signature(getattr(sync_cls, op)).parameters)
            async_params = list(inspect.signature(getattr(async_cls, op)).parameters)
            assert sync_params == async_params, f"{group}.{op}"
    client_ops = {name for name, _ in _public_members(missive_client.Client)}
    async_client_ops = {name for name, _ in _public_members(missive_client.AsyncClient)}
    assert client_ops - {"connect"} == async_client_ops
    assert {"login", "logout", "status", "close", "token", "email", "config"} <= async_client_ops


def test_the_package_is_typed_and_the_cli_has_an_entry_point() -> None:
    assert resources.files("missive_client").joinpath("py.typed").is_file()
    assert callable(missive_client.cli.main)
    assert missive_client.cli.__all__ == ["cli", "main"]

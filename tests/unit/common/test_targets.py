"""gRPC targets: one address, a list of replicas, or a resolver name; balanced channels."""

from __future__ import annotations

import json

import pytest

from services.common.channels import is_multi_target, parse_target
from services.common.grpc_client import service_config
from services.common.settings import ConfigError, env_address


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("127.0.0.1:9797", "127.0.0.1:9797"),
        ("user:9797", "user:9797"),
        ("127.0.0.1:1, localhost:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
        ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),
        ("dns:///user-grpc:9797", "dns:///user-grpc:9797"),
        ("ipv4:10.0.0.1:1,10.0.0.2:1", "ipv4:10.0.0.1:1,10.0.0.2:1"),
    ],
)
def test_targets(address: str, target: str) -> None:
    assert parse_target(address) == target
    assert env_address({"X_ADDR": address}, "X_ADDR", "127.0.0.1:1") == address


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("user-1:9797,user-2:9797", "dns:///"),
        ("127.0.0.1:1,", "empty entry"),
        ("127.0.0.1:1,[::1]:2", "mixes IPv4 and IPv6"),
        ("127.0.0.1:1,127.0.0.1:0", "not a host:port"),
        ("dns:///user-grpc", "not a host:port"),
    ],
)
def test_bad_targets_are_refused_with_the_reason(address: str, why: str) -> None:
    with pytest.raises(ConfigError, match="X_ADDR") as refused:
        env_address({"X_ADDR": address}, "X_ADDR", "127.0.0.1:1")
    assert why in str(refused.value)


def test_only_lists_and_names_are_balanced() -> None:
    assert not is_multi_target("127.0.0.1:9797")
    assert is_multi_target("127.0.0.1:1,127.0.0.1:2") and is_multi_target("dns:///u:1")
    assert json.loads(service_config("svc", ["Read"])).get("loadBalancingConfig") is None
    balanced = json.loads(service_config("svc", ["Read"], balance=True))
    assert balanced["loadBalancingConfig"] == [{"round_robin": {}}]
    assert balanced["healthCheckConfig"] == {"serviceName": ""}
    assert balanced["methodConfig"][0]["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]

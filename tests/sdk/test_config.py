"""Configuration: defaults to the local system, MISSIVE_* variables, arguments win."""

from __future__ import annotations

import missive_client as mc
import pytest
from missive_client._config import ENV_VARS, split_host_port


def test_defaults_are_the_local_system() -> None:
    config = mc.ClientConfig.resolve({})
    assert config.user_url == "http://127.0.0.1:8080"
    assert config.message_url == "http://127.0.0.1:8081"
    assert config.notification_url == "http://127.0.0.1:8082"
    assert config.user_grpc == "127.0.0.1:9797"
    assert config.message_grpc == "127.0.0.1:9798"
    assert config.notification_grpc == "127.0.0.1:9799"
    assert config.frontend_grpc == "127.0.0.1:3030"
    assert config.transport == "grpc" and config.timeout == 10.0


def test_environment_sets_every_address_and_arguments_override_it() -> None:
    environ = {
        "MISSIVE_USER_URL": "http://users.internal:1/",
        "MISSIVE_MESSAGE_URL": "https://messages.internal",
        "MISSIVE_NOTIFICATION_URL": "http://10.0.0.3:8082",
        "MISSIVE_USER_GRPC": "users.internal:1",
        "MISSIVE_MESSAGE_GRPC": "[::1]:2",
        "MISSIVE_NOTIFICATION_GRPC": "10.0.0.3:3",
        "MISSIVE_FRONTEND_GRPC": "frontend:4",
        "MISSIVE_TRANSPORT": "REST",
        "MISSIVE_TIMEOUT": "2.5",
    }
    config = mc.ClientConfig.resolve(environ)
    assert config.user_url == "http://users.internal:1"
    assert config.message_url == "https://messages.internal"
    assert config.message_grpc == "[::1]:2" and config.frontend_grpc == "frontend:4"
    assert config.transport == "rest" and config.timeout == 2.5
    overridden = mc.ClientConfig.resolve(environ, user_grpc="elsewhere:9", transport="grpc")
    assert overridden.user_grpc == "elsewhere:9" and overridden.transport == "grpc"
    assert overridden.notification_grpc == "10.0.0.3:3"


def test_client_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISSIVE_FRONTEND_GRPC", "watch.example:3030")
    with mc.Client.connect(timeout=3) as client:
        assert client.config.frontend_grpc == "watch.example:3030"
        assert client.config.timeout == 3
        assert client.email is None and client.token is None


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("MISSIVE_USER_URL", "ftp://x", "MISSIVE_USER_URL"),
        ("MISSIVE_MESSAGE_URL", "http://x:notaport", "MISSIVE_MESSAGE_URL"),
        ("MISSIVE_USER_GRPC", "no-port", "MISSIVE_USER_GRPC"),
        ("MISSIVE_FRONTEND_GRPC", "host:99999", "MISSIVE_FRONTEND_GRPC"),
        ("MISSIVE_TRANSPORT", "carrier-pigeon", "MISSIVE_TRANSPORT"),
        ("MISSIVE_TIMEOUT", "soon", "MISSIVE_TIMEOUT"),
    ],
)
def test_a_malformed_variable_is_a_config_error_naming_it(
    variable: str, value: str, words: str
) -> None:
    with pytest.raises(mc.ConfigError, match=words):
        mc.ClientConfig.resolve({variable: value})


@pytest.mark.parametrize(
    "arguments",
    [{"timeout": 0}, {"timeout": float("nan")}, {"retries": -1}, {"message_grpc": ":1"}],
)
def test_malformed_arguments_are_config_errors(arguments: dict[str, object]) -> None:
    with pytest.raises(mc.ConfigError):
        mc.ClientConfig.resolve({}, **arguments)


def test_unknown_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError, match="colour"):
        mc.ClientConfig.resolve({}, colour="blue")


def test_every_field_but_the_policy_has_a_variable() -> None:
    assert set(ENV_VARS) == {
        "user_url",
        "message_url",
        "notification_url",
        "user_grpc",
        "message_grpc",
        "notification_grpc",
        "frontend_grpc",
        "transport",
        "timeout",
    }
    assert split_host_port("[::1]:50051") == ("::1", 50051)

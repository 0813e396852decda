"""Configuration: defaults to the local system, MISSIVE_* variables, arguments win."""

from __future__ import annotations

from pathlib import Path

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


# -- the base setting (MISSIVE_HOST / host=) and profiles -------------------------------------


def test_missive_host_puts_every_service_on_one_host_and_service_variables_override_it() -> None:
    config = mc.ClientConfig.resolve(
        {"MISSIVE_HOST": "staging.example", "MISSIVE_USER_GRPC": "users.example:1"}
    )
    assert config.user_url == "http://staging.example:8080"
    assert config.notification_url == "http://staging.example:8082"
    assert config.message_grpc == "staging.example:9798"
    assert config.frontend_grpc == "staging.example:3030"
    assert config.user_grpc == "users.example:1"
    # The host's default ports are the defaults of every address.
    assert mc.ClientConfig.resolve({"MISSIVE_HOST": "127.0.0.1"}) == mc.ClientConfig()
    v6 = mc.ClientConfig.resolve({"MISSIVE_HOST": "::1"})
    assert v6.user_url == "http://[::1]:8080" and v6.frontend_grpc == "[::1]:3030"
    assert mc.ClientConfig.resolve({"MISSIVE_HOST": "[::1]"}).user_grpc == "[::1]:9797"
    # An argument is a level of its own: host= wins over every variable.
    given = mc.ClientConfig.resolve({"MISSIVE_USER_GRPC": "users.example:1"}, host="10.0.0.5")
    assert given.user_grpc == "10.0.0.5:9797" and given.message_url == "http://10.0.0.5:8081"
    both = mc.ClientConfig.resolve({}, host="10.0.0.5", user_url="http://u:1")
    assert both.user_url == "http://u:1" and both.message_url == "http://10.0.0.5:8081"


@pytest.mark.parametrize("value", ["http://x", "x:8080", "x/y", "user@x", "[x"])
def test_a_host_with_a_scheme_or_port_is_a_config_error_naming_the_variable(value: str) -> None:
    with pytest.raises(mc.ConfigError, match=r"MISSIVE_HOST=.*without scheme or port"):
        mc.ClientConfig.resolve({"MISSIVE_HOST": value})


def _config_home(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "missive" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return {"XDG_CONFIG_HOME": str(tmp_path)}


def test_a_profile_sets_addresses_below_the_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = _config_home(
        tmp_path,
        '[profiles.staging]\nhost = "staging.example"\nuser_url = "https://users.example"\n'
        'transport = "rest"\ntimeout = 4\n\n[profiles.default]\nhost = "10.1.1.1"\n',
    )
    staging = mc.ClientConfig.resolve({**environ, "MISSIVE_PROFILE": "staging"})
    assert staging.user_url == "https://users.example"
    assert staging.message_url == "http://staging.example:8081"
    assert staging.frontend_grpc == "staging.example:3030"
    assert staging.transport == "rest" and staging.timeout == 4.0
    # profile= (the CLI's --profile) instead of the variable; variables still override.
    chosen = mc.ClientConfig.resolve(
        {**environ, "MISSIVE_FRONTEND_GRPC": "watch:1"}, profile="staging"
    )
    assert chosen.frontend_grpc == "watch:1" and chosen.user_grpc == "staging.example:9797"
    # MISSIVE_HOST is the environment's level: above the whole profile.
    hosted = mc.ClientConfig.resolve({**environ, "MISSIVE_HOST": "h"}, profile="staging")
    assert hosted.user_url == "http://h:8080" and hosted.transport == "rest"
    # Only a named profile applies, even one called default.
    assert mc.ClientConfig.resolve(environ).user_grpc == "127.0.0.1:9797"
    assert mc.ClientConfig.resolve(environ, profile="default").user_grpc == "10.1.1.1:9797"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with mc.Client.connect(profile="staging") as client:
        assert client.config.user_url == "https://users.example"


@pytest.mark.parametrize(
    ("text", "profile", "words"),
    [
        ("", "staging", r"no profile 'staging' in .*config.toml \(profiles: none\)"),
        ("[profiles.a]\n", "b", r"no profile 'b' .*\(profiles: a\)"),
        ("[profiles.a]\nhots = 'x'\n", "a", r"\[profiles.a\]: unknown key\(s\) hots"),
        ("[profiles.a]\nhost = 'x:1'\n", "a", r"\[profiles.a\] host='x:1' must be a host"),
        ("[profiles.a]\nuser_grpc = 'nope'\n", "a", r"\[profiles.a\] user_grpc.*host:port"),
        ("[profiles.a]\ntimeout = 'soon'\n", "a", r"timeout='soon' must be a number"),
        ("[profiles.a\n", "a", r"config.toml: .*line 1"),
    ],
)
def test_a_bad_profile_is_a_config_error_naming_the_file(
    tmp_path: Path, text: str, profile: str, words: str
) -> None:
    environ = _config_home(tmp_path, text)
    with pytest.raises(mc.ConfigError, match=words):
        mc.ClientConfig.resolve(environ, profile=profile)


def test_without_a_config_file_only_a_named_profile_is_an_error(tmp_path: Path) -> None:
    environ = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert mc.ClientConfig.resolve(environ) == mc.ClientConfig()
    with pytest.raises(mc.ConfigError, match="no profile 'x'"):
        mc.ClientConfig.resolve({**environ, "MISSIVE_PROFILE": "x"})


def test_the_launcher_prints_the_variables_the_sdk_reads_with_its_default_ports() -> None:
    from services.launcher.endpoints import CLIENT_DEFAULT_HOST, CLIENT_VARS

    defaults = mc.ClientConfig()
    for (service, kind), (variable, port) in CLIENT_VARS.items():
        field = f"{service}_{'url' if kind == 'rest' else 'grpc'}"
        assert ENV_VARS[field] == variable
        address = f"{CLIENT_DEFAULT_HOST}:{port}"
        assert getattr(defaults, field) == (f"http://{address}" if kind == "rest" else address)
    assert len(CLIENT_VARS) == len([f for f in ENV_VARS if f.endswith(("_url", "_grpc"))])

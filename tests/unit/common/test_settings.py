"""Environment readers fail loudly, naming the variable and the bad value."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import StartupError
from services.common.settings import (
    CommonSettings,
    ConfigError,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_server,
    env_str,
    redact_url,
)


def test_defaults_apply_when_unset_or_empty() -> None:
    env = {"EMPTY": "  "}
    assert env_str(env, "MISSING", "x") == "x"
    assert env_str(env, "EMPTY", "x") == "x"
    assert env_int(env, "MISSING", 7) == 7
    assert env_float(env, "EMPTY", 1.5) == 1.5
    assert env_bool(env, "MISSING", True) is True


def test_required_variable_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^USER_SECRET is required"):
        env_str({}, "USER_SECRET")
    with pytest.raises(ConfigError, match=r"^PORT is required"):
        env_int({}, "PORT")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "USER_GRPC_PORT='abc' is not an integer"),
        ("80.5", "USER_GRPC_PORT='80.5' is not an integer"),
        ("0x10", "USER_GRPC_PORT='0x10' is not an integer"),
        ("70000", "USER_GRPC_PORT='70000' is above the maximum 65535"),
        ("-1", "USER_GRPC_PORT='-1' is below the minimum 0"),
    ],
)
def test_env_int_rejects_bad_values(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        env_int({"USER_GRPC_PORT": value}, "USER_GRPC_PORT", 9797, min=0, max=65535)
    assert str(info.value) == message


def test_env_int_accepts_surrounding_whitespace() -> None:
    assert env_int({"P": " 8080 "}, "P", 1, min=1, max=65535) == 8080


@pytest.mark.parametrize("value", ["soon", "nan", "inf", "-inf"])
def test_env_float_rejects_non_finite_and_garbage(value: str) -> None:
    with pytest.raises(ConfigError, match=f"^SHUTDOWN_GRACE='{value}'"):
        env_float({"SHUTDOWN_GRACE": value}, "SHUTDOWN_GRACE", 8.0)


def test_env_float_range() -> None:
    with pytest.raises(ConfigError, match=r"below the minimum 0\.0"):
        env_float({"G": "-0.5"}, "G", 1.0, min=0.0)
    assert env_float({"G": "2.5"}, "G", 1.0, min=0.0, max=3.0) == 2.5


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[("1", True), ("TRUE", True), ("yes", True), ("On", True)],
        *[("0", False), ("false", False), ("NO", False), ("off", False)],
    ],
)
def test_env_bool_spellings(value: str, expected: bool) -> None:
    assert env_bool({"FLAG": value}, "FLAG", not expected) is expected


def test_env_bool_rejects_other_words() -> None:
    with pytest.raises(ConfigError, match=r"^DEBUG='maybe' is not a boolean"):
        env_bool({"DEBUG": "maybe"}, "DEBUG", False)


def test_env_choice() -> None:
    assert env_choice({"F": "JSON"}, "F", "text", ("text", "json")) == "json"
    with pytest.raises(ConfigError, match=r"^F='xml' is not one of: text, json$"):
        env_choice({"F": "xml"}, "F", "text", ("text", "json"))


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_env_int_round_trips(number: int) -> None:
    assert env_int({"N": str(number)}, "N", 0) == number


def test_config_error_is_a_startup_error() -> None:
    assert issubclass(ConfigError, StartupError)


def test_common_settings_defaults() -> None:
    settings = CommonSettings.from_env({})
    assert settings == CommonSettings(
        redis_url="redis://127.0.0.1:6379",
        log_level="INFO",
        log_format="text",
        shutdown_grace_seconds=8.0,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.log_level = "DEBUG"  # type: ignore[misc]


def test_common_settings_from_env() -> None:
    settings = CommonSettings.from_env(
        {
            "REDIS_URL": "unix:///run/valkey.sock",
            "LOG_LEVEL": "debug",
            "LOG_FORMAT": "json",
            "SHUTDOWN_GRACE": "2.5",
        }
    )
    assert settings.redis_url == "unix:///run/valkey.sock"
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "json"
    assert settings.shutdown_grace_seconds == 2.5


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"REDIS_URL": "valkey+unix:///tmp/v.sock"}, "REDIS_URL='valkey+unix:///tmp/v.sock'"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL='localhost:6379' must start with"),
        ({"REDIS_URL": "redis://host:notaport"}, "REDIS_URL='redis://host:notaport'"),
        ({"REDIS_URL": "redis://"}, "has no host"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL='verbose' is not one of"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is not one of: text, json"),
        ({"SHUTDOWN_GRACE": "-1"}, "SHUTDOWN_GRACE='-1' is below the minimum"),
    ],
)
def test_common_settings_errors_name_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        CommonSettings.from_env(env)
    assert fragment in str(info.value)


def test_redis_password_never_shows() -> None:
    settings = CommonSettings.from_env({"REDIS_URL": "redis://svc:s3cret@db:6379/0"})
    assert "s3cret" not in repr(settings)
    assert settings.redis_url_redacted == "redis://svc:***@db:6379/0"
    with pytest.raises(ConfigError) as info:
        CommonSettings.from_env({"REDIS_URL": "http://svc:s3cret@db:6379"})
    assert "s3cret" not in str(info.value)
    assert redact_url("redis://db:6379") == "redis://db:6379"


def test_a_service_without_redis_does_not_read_redis_url() -> None:
    settings = CommonSettings.from_env(
        {"REDIS_URL": "not a url", "LOG_LEVEL": "debug"}, redis=False
    )
    assert settings.redis_url == CommonSettings.redis_url
    assert settings.log_level == "DEBUG"
    with pytest.raises(ConfigError, match="REDIS_URL"):
        CommonSettings.from_env({"REDIS_URL": "not a url"})


def test_the_fields_every_grpc_service_shares() -> None:
    fields = env_server({}, "X_GRPC_PORT", 9000)
    assert fields == {
        "common": CommonSettings(),
        "keys_dir": Path(".data/keys"),
        "keys_create": False,
        "host": "127.0.0.1",
        "grpc_port": 9000,
    }
    environ = {"KEYS_DIR": "/k", "KEYS_CREATE": "yes", "BIND_HOST": "0.0.0.0", "X_GRPC_PORT": "0"}
    fields = env_server(environ, "X_GRPC_PORT", 9000)
    assert (fields["keys_dir"], fields["keys_create"]) == (Path("/k"), True)
    assert (fields["host"], fields["grpc_port"]) == ("0.0.0.0", 0)
    with pytest.raises(ConfigError, match="KEYS_CREATE='maybe' is not a boolean"):
        env_server({"KEYS_CREATE": "maybe"}, "X_GRPC_PORT", 9000)
    with pytest.raises(ConfigError, match="X_GRPC_PORT='70000' is above the maximum"):
        env_server({"X_GRPC_PORT": "70000"}, "X_GRPC_PORT", 9000)


ROOT = Path(__file__).resolve().parents[3]
SETTINGS_MODULES = [
    *sorted(
        f"services.{path.parent.name}.settings" for path in ROOT.glob("services/*/settings.py")
    ),
    "services.launcher.config",
]
TRANSPORTS = ("grpc", "redis", "starlette", "uvicorn", "argon2", "jwt")


@pytest.mark.parametrize("module", SETTINGS_MODULES)
def test_reading_settings_imports_no_transport(module: str) -> None:
    """Settings are pure: a fresh interpreter importing one loads no transport or store client."""
    probe = (
        "import importlib, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(' '.join(m for m in {TRANSPORTS!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "", f"{module} imports {done.stdout.strip()}"

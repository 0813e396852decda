"""CLI pieces that need no running system: help everywhere, the token file, error exits."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from missive_client.cli import cli
from missive_client.cli._app import EXIT_AUTH, EXIT_UNAVAILABLE
from missive_client.cli._store import StoredToken, TokenStore, config_dir

CLOSED = {
    "MISSIVE_USER_URL": "http://127.0.0.1:1",
    "MISSIVE_MESSAGE_URL": "http://127.0.0.1:1",
    "MISSIVE_NOTIFICATION_URL": "http://127.0.0.1:1",
    "MISSIVE_USER_GRPC": "127.0.0.1:1",
    "MISSIVE_MESSAGE_GRPC": "127.0.0.1:1",
    "MISSIVE_NOTIFICATION_GRPC": "127.0.0.1:1",
    "MISSIVE_FRONTEND_GRPC": "127.0.0.1:1",
}


def every_command(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += every_command(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


def test_help_works_on_every_command() -> None:
    commands = every_command(cli)
    names = {" ".join(path) for path in commands}
    assert {
        "users register",
        "users get",
        "users list",
        "users update",
        "users delete",
        "login",
        "logout",
        "send",
        "conversations",
        "messages",
        "notifications",
        "subscribe",
        "unsubscribe",
        "watch",
        "status",
    } <= names
    runner = CliRunner()
    for path in commands:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage: missive" in result.output


def test_config_dir_follows_xdg_or_defaults_to_dot_config(tmp_path: Path) -> None:
    assert config_dir({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "missive"
    assert config_dir({}) == Path.home() / ".config" / "missive"
    assert config_dir({"XDG_CONFIG_HOME": "relative/ignored"}) == Path.home() / ".config/missive"


def test_token_file_is_private_and_round_trips(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "missive")
    expiry = datetime.now(UTC) + timedelta(minutes=5)
    store.save(StoredToken("ada@example.com", "secret-token", expiry))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    loaded = store.load()
    assert loaded == StoredToken("ada@example.com", "secret-token", expiry)
    assert not loaded.expired
    assert "password" not in json.loads(store.path.read_text())
    store.path.chmod(0o644)
    store.save(StoredToken("ada@example.com", "other", expiry))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.clear() and not store.clear() and store.load() is None


def test_a_corrupt_token_file_reads_as_signed_out(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.path.write_text("{not json")
    assert store.load() is None


def test_commands_need_a_sign_in_and_say_so_in_one_line() -> None:
    result = CliRunner().invoke(cli, ["conversations"])
    assert result.exit_code == EXIT_AUTH
    assert result.output.strip() == "error: not signed in: run `missive login`"
    assert "Traceback" not in result.output


def test_an_expired_stored_token_asks_for_a_new_login(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "config" / "missive")
    store.save(StoredToken("ada@example.com", "t", datetime.now(UTC) - timedelta(seconds=1)))
    result = CliRunner().invoke(cli, ["send", "bob@example.com", "hi"])
    assert result.exit_code == EXIT_AUTH
    assert "session of ada@example.com has expired" in result.output


def test_status_of_an_unreachable_system_exits_4(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in CLOSED.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(cli, ["status", "--json"])
    assert result.exit_code == EXIT_UNAVAILABLE
    rows = json.loads(result.output)
    assert len(rows) == 7 and {row["status"] for row in rows} == {"UNREACHABLE"}
    assert {row["serving"] for row in rows} == {False}
    human = CliRunner().invoke(cli, ["status"])
    assert human.exit_code == EXIT_UNAVAILABLE
    assert "UserService" in human.output and "UNREACHABLE" in human.output


def test_an_unreachable_service_is_a_one_line_error_exit_4(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in CLOSED.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(
        cli, ["--timeout", "2", "login", "ada@example.com", "--password-stdin"], input="pw\n"
    )
    assert result.exit_code == EXIT_UNAVAILABLE
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach UserService")
    assert "set MISSIVE_HOST (every service), MISSIVE_USER_GRPC (this service)" in lines[0]


def test_usage_errors_exit_2() -> None:
    assert CliRunner().invoke(cli, ["send", "only-one-argument"]).exit_code == 2
    assert CliRunner().invoke(cli, ["--transport", "smoke", "status"]).exit_code == 2
    assert CliRunner().invoke(cli, ["users", "update"]).exit_code == 2


def test_colour_only_where_the_terminal_supports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in CLOSED.items():
        monkeypatch.setenv(key, value)
    plain = CliRunner().invoke(cli, ["status"])
    assert "\x1b[" not in plain.output  # a pipe gets plain text
    monkeypatch.setenv("FORCE_COLOR", "1")  # what a colour terminal looks like to rich
    coloured = CliRunner().invoke(cli, ["status"])
    assert "\x1b[" in coloured.output and "UNREACHABLE" in coloured.output
    as_json = CliRunner().invoke(cli, ["status", "--json"])
    assert "\x1b[" not in as_json.output  # JSON is never decorated
    json.loads(as_json.output)


def test_the_store_keeps_one_token_per_user_and_profile(tmp_path: Path) -> None:
    expiry = datetime.now(UTC) + timedelta(minutes=5)
    default = TokenStore(tmp_path)
    default.save(StoredToken("ada@example.com", "ada-token", expiry))
    default.save(StoredToken("bob@example.com", "bob-token", expiry))
    staging = TokenStore(tmp_path, "staging")
    staging.save(StoredToken("ada@example.com", "ada-staging", expiry))
    assert default.current() == "bob@example.com"  # the last to log in
    assert default.load().access_token == "bob-token"  # type: ignore[union-attr]
    assert default.load("ADA@example.com").access_token == "ada-token"  # type: ignore[union-attr]
    assert staging.load().access_token == "ada-staging"  # type: ignore[union-attr]
    assert set(default.tokens()) == {"ada@example.com", "bob@example.com"}
    assert stat.S_IMODE(default.path.stat().st_mode) == 0o600
    assert default.clear() == "bob@example.com" and default.current() is None
    assert default.load() is None and default.load("ada@example.com") is not None
    assert default.clear_all() == ["ada@example.com"] and default.tokens() == {}
    assert staging.load() is not None  # another profile's sign-ins are untouched
    assert staging.clear() == "ada@example.com" and not default.path.exists()


def test_a_token_file_of_the_earlier_version_is_read_and_migrated(tmp_path: Path) -> None:
    expiry = datetime.now(UTC) + timedelta(minutes=5)
    legacy = tmp_path / "token.json"
    legacy.write_text(
        json.dumps(
            {"email": "ada@example.com", "access_token": "t", "expires_at": expiry.isoformat()}
        )
    )
    store = TokenStore(tmp_path)
    assert store.load() == StoredToken("ada@example.com", "t", expiry)
    store.save(StoredToken("bob@example.com", "u", expiry))
    assert not legacy.exists() and set(store.tokens()) == {"ada@example.com", "bob@example.com"}


def test_user_picks_a_stored_sign_in_and_names_a_missing_one(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "config" / "missive")
    expiry = datetime.now(UTC) + timedelta(minutes=5)
    store.save(StoredToken("ada@example.com", "t", expiry))
    store.save(StoredToken("bob@example.com", "t", expiry))
    store.clear()  # Bob signs out: Ada stays stored, but nobody is current
    result = CliRunner().invoke(cli, ["conversations"])
    assert result.exit_code == EXIT_AUTH
    assert result.output.strip() == (
        "error: no current user: choose one with --user or MISSIVE_USER (ada@example.com), "
        "or run `missive login`"
    )
    missing = CliRunner().invoke(cli, ["--user", "eve@example.com", "conversations"])
    assert missing.output.strip() == (
        "error: eve@example.com is not signed in: run `missive login eve@example.com`"
    )
    other = CliRunner().invoke(cli, ["--profile", "staging", "whoami"], env={})
    assert "profile staging: acting as nobody" in other.output

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

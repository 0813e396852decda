"""The `missive` command against the real system: every command, JSON and human output."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from missive_client.cli import cli
from missive_client.cli._app import EXIT_AUTH, EXIT_ERROR

from tests.helpers.system import System
from tests.sdk.conftest import PASSWORD, new_email, sdk_env
from tests.sdk.helpers import connect, eventually, signed_in

pytestmark = pytest.mark.e2e

MISSIVE = Path(sys.executable).with_name("missive")


def run(*args: str, stdin: str | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), input=stdin)
    assert "Traceback" not in result.output, result.output
    return result


def ok(*args: str, stdin: str | None = None) -> Result:
    result = run(*args, stdin=stdin)
    assert result.exit_code == 0, result.output
    return result


def register_and_login(name: str) -> str:
    email = new_email(name.lower())
    ok("users", "register", "--name", name, "--email", email, stdin=f"{PASSWORD}\n{PASSWORD}\n")
    ok("login", email, stdin=f"{PASSWORD}\n")
    return email


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "missive" / "tokens.json"


def test_register_login_send_read_and_manage(
    live_env: dict[str, str], live: System, token_file: Path
) -> None:
    bob = register_and_login("Bob")
    ok("logout")
    ada = register_and_login("Ada")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    stored = json.loads(token_file.read_text())["profiles"]["default"]
    assert stored["current"] == ada and list(stored["tokens"]) == [ada]  # Bob signed out
    assert PASSWORD not in token_file.read_text()

    sent = json.loads(ok("send", bob, "Hello from the CLI", "--json").output)
    assert sent["receiver_email"] == bob and sent["content"] == "Hello from the CLI"
    human = ok("send", bob, "second message").output
    assert "sent message" in human and bob in human

    conversations = json.loads(ok("--json", "conversations").output)
    assert [(c["peer_email"], c["message_count"]) for c in conversations] == [(bob, 2)]
    table = ok("messages", bob).output
    assert table.index("Hello from the CLI") < table.index("second message")  # oldest first
    messages = json.loads(ok("messages", bob, "--json").output)
    assert [m["content"] for m in messages] == ["second message", "Hello from the CLI"]

    me = json.loads(ok("users", "get", "--json").output)
    assert me["email"] == ada and me["created_at"].endswith("Z")
    assert json.loads(ok("users", "update", "--name", "Ada CLI", "--json").output)["name"] == (
        "Ada CLI"
    )
    live.grant_operator(ada)  # listing every user is for operators
    listed = json.loads(ok("users", "list", "--json", "--limit", "0").output)
    assert {ada, bob} <= {u["email"] for u in listed}
    assert "Ada CLI" in ok("users", "list").output

    # Bob's side: notifications, marking read, subscription.
    ok("logout")
    ok("login", bob, "--password-stdin", stdin=f"{PASSWORD}\n")
    unread = eventually(
        lambda: (
            (doc := json.loads(ok("notifications", "--unread", "--json").output))
            and doc["unread_count"] == 2
            and doc
        )
    )
    assert [n["sender_email"] for n in unread["notifications"]] == [ada, ada]
    assert "2 unread" in ok("notifications").output
    ok("notifications", "--mark-read")
    assert json.loads(ok("notifications", "--unread", "--json").output)["unread_count"] == 0
    read = json.loads(ok("messages", ada, "--mark-read", "--json").output)
    assert len(read) == 2
    assert json.loads(ok("conversations", "--json").output)[0]["unread_count"] == 0
    assert json.loads(ok("unsubscribe", "--json").output) == {"email": bob, "subscribed": False}
    assert "is subscribed" in ok("subscribe").output

    status = json.loads(ok("status", "--json").output)
    assert len(status) == 7 and all(row["serving"] for row in status)
    assert "SERVING" in ok("status").output

    ok("users", "delete", "--yes")
    assert not token_file.exists()
    assert run("users", "get").exit_code == EXIT_AUTH


def test_errors_are_one_line_with_an_exit_code(live_env: dict[str, str]) -> None:
    email = register_and_login("Eve")
    failed = run("send", "nobody-" + email, "hi")
    assert failed.exit_code == EXIT_ERROR
    assert failed.output.count("\n") == 1 and failed.output.startswith("error: ")
    assert "nobody-" + email in failed.output
    assert run("send", email, "").exit_code == EXIT_ERROR  # empty content: invalid
    wrong = run("login", email, "--password-stdin", stdin="not the password\n")
    assert wrong.exit_code == EXIT_AUTH and wrong.output.startswith("error: ")
    taken = run(
        "users", "register", "--name", "E", "--email", email, stdin=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert taken.exit_code == EXIT_ERROR and "already" in taken.output


def test_rest_transport_and_stdin_text(live_env: dict[str, str]) -> None:
    peer = register_and_login("Peer")
    me = register_and_login("Me")
    sent = json.loads(
        ok("--transport", "rest", "send", peer, "-", "--json", stdin="piped\n").output
    )
    assert sent["content"] == "piped" and sent["sender_email"] == me


def test_watch_prints_a_notification_sent_from_another_client(
    live_env: dict[str, str], live: System
) -> None:
    bob = register_and_login("Bob")
    env = {**os.environ, **live_env}
    watcher = subprocess.Popen(
        [str(MISSIVE), "watch", "--count", "1", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with signed_in(live, "Ada") as ada:
            assert ada.email
            # The watcher is either connected (live push) or will replay it as unread.
            sent = ada.messages.send(bob, "watch this")
            out, err = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err
    [line] = out.strip().splitlines()
    notification = json.loads(line)
    assert notification["message_id"] == sent.id and notification["sender_email"] == ada.email


def test_watch_renders_human_lines(live_env: dict[str, str], live: System) -> None:
    bob = register_and_login("Bob")
    with signed_in(live, "Ada") as ada:
        ada.messages.send(bob, "shown with its text")
    # Once stored and unread, the notification is replayed as soon as the stream opens.
    eventually(lambda: json.loads(ok("notifications", "--json").output)["unread_count"] == 1)
    result = ok("watch", "--count", "1")
    assert "new message from" in result.output and "shown with its text" in result.output


def test_notifications_show_a_preview_and_the_sender_name(
    live_env: dict[str, str], live: System
) -> None:
    bob = register_and_login("Bob")
    text = "Lunch at noon? " + "x" * 200
    ada_email = new_email("ada")
    with connect(live) as ada:
        ada.users.register("Ada Lovelace", ada_email, PASSWORD)
        ada.login(ada_email, PASSWORD)
        ada.messages.send(bob, text)
    env = {**os.environ, **live_env, "COLUMNS": "200"}

    def listed() -> dict[str, Any]:
        done = subprocess.run(
            [str(MISSIVE), "notifications", "--unread", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc

    doc = eventually(lambda: (d := listed()) and d["unread_count"] == 1 and d)
    [notification] = doc["notifications"]
    assert notification["preview"] == text[:100]
    assert notification["sender_name"] == "Ada Lovelace"
    assert notification["sender_email"] == ada_email
    human = subprocess.run(
        [str(MISSIVE), "notifications"], env=env, capture_output=True, text=True, timeout=60
    )
    assert human.returncode == 0, human.stderr
    assert "Lunch at noon?" in human.stdout and "Ada Lovelace" in human.stdout


def test_the_installed_script_runs(live_env: dict[str, str]) -> None:
    env = {**os.environ, **live_env}
    done = subprocess.run(
        [str(MISSIVE), "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "FrontendService" in done.stdout
    denied = subprocess.run(
        [str(MISSIVE), "conversations"], env=env, capture_output=True, text=True, timeout=60
    )
    assert denied.returncode == EXIT_AUTH
    assert denied.stderr.strip() == "error: not signed in: run `missive login`"


# -- pointing the CLI at a system, profiles, several users -----------------------------------


def _shell(script: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh shell with no MISSIVE_* variable but those it sets itself."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MISSIVE_")}
    env["PATH"] = f"{MISSIVE.parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return subprocess.run(
        ["bash", "-eu", "-c", script], env=env, capture_output=True, text=True, timeout=120
    )


def test_the_printed_exports_alone_point_the_installed_cli_at_moved_ports(live: System) -> None:
    exports = live.client_exports()
    # Every port of the test system is a free one, so each of the seven addresses is exported.
    assert len(exports.splitlines()) == 7, exports
    assert all(line.startswith("export MISSIVE_") for line in exports.splitlines())
    ada, bob = new_email("ada"), new_email("bob")
    script = f"""
{exports}
missive users register --name Ada --email {ada} --password-stdin <<< '{PASSWORD}'
missive users register --name Bob --email {bob} --password-stdin <<< '{PASSWORD}'
missive login {ada} --password-stdin <<< '{PASSWORD}'
missive send {bob} "Hello Bob"
missive --json conversations
missive status
"""
    done = _shell(script)
    assert done.returncode == 0, done.stderr
    assert "sent message" in done.stdout and "SERVING" in done.stdout
    assert f'"peer_email": "{bob}"' in done.stdout
    # Without the exports the same commands look for the defaults (and name what to set).
    unset = _shell(
        f"missive login {ada} --password-stdin <<< '{PASSWORD}'",
        MISSIVE_USER_GRPC="127.0.0.1:1",
        MISSIVE_TIMEOUT="3",
    )
    assert unset.returncode == 4
    [line] = unset.stderr.strip().splitlines()
    assert line.startswith("error: cannot reach UserService at 127.0.0.1:1: ")
    assert "set MISSIVE_HOST (every service), MISSIVE_USER_GRPC (this service)" in line
    assert "--profile" in line and "`make up` prints the exports" in line


def test_the_cannot_reach_error_names_the_rest_variable(tmp_path: Path) -> None:
    done = _shell(
        "missive --transport rest users register --name A --email a@example.com "
        f"--password-stdin <<< '{PASSWORD}'",
        MISSIVE_HOST="127.0.0.1",
        MISSIVE_USER_URL="http://127.0.0.1:1",
    )
    assert done.returncode == 4
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: cannot reach UserService at http://127.0.0.1:1: ")
    assert "MISSIVE_HOST" in line and "MISSIVE_USER_URL (this service)" in line


def test_profiles_hold_the_addresses_and_their_own_sign_ins(live: System, tmp_path: Path) -> None:
    config = tmp_path / "config" / "missive" / "config.toml"
    config.parent.mkdir(parents=True)
    addresses = "\n".join(
        f'{key.removeprefix("MISSIVE_").lower()} = "{value}"'
        for key, value in sdk_env(live).items()
    )
    config.write_text(
        f'[profiles.test]\nhost = "127.0.0.1"\n{addresses}\n\n'
        '[profiles.nowhere]\nhost = "127.0.0.1"\nuser_grpc = "127.0.0.1:1"\n'
    )
    ada = new_email("ada")
    script = f"""
missive --profile test users register --name Ada --email {ada} --password-stdin <<< '{PASSWORD}'
missive --profile test login {ada} --password-stdin <<< '{PASSWORD}'
MISSIVE_PROFILE=test missive --json users get
"""
    done = _shell(script)
    assert done.returncode == 0, done.stderr
    assert f'"email": "{ada}"' in done.stdout
    # The sign-in belongs to the profile: the default one has none.
    default = _shell("missive conversations")
    assert default.returncode == EXIT_AUTH
    assert default.stderr.strip() == "error: not signed in: run `missive login`"
    stored = json.loads((config.parent / "tokens.json").read_text())["profiles"]
    assert list(stored) == ["test"] and stored["test"]["current"] == ada
    # A service's own variable still overrides the profile.
    moved = _shell("missive --profile test --timeout 3 users get", MISSIVE_USER_GRPC="127.0.0.1:1")
    assert moved.returncode == 4 and "cannot reach UserService at 127.0.0.1:1" in moved.stderr
    nowhere = _shell("missive --profile nowhere --timeout 3 status")
    assert nowhere.returncode == 4
    missing = _shell("missive --profile staging status")
    assert missing.returncode == 2
    assert "no profile 'staging' in" in missing.stderr and "nowhere, test" in missing.stderr


def test_several_users_stay_signed_in_and_user_selects_one(live: System) -> None:
    ada, bob = new_email("ada"), new_email("bob")
    env = sdk_env(live)
    setup = f"""
missive users register --name Ada --email {ada} --password-stdin <<< '{PASSWORD}' >/dev/null
missive users register --name Bob --email {bob} --password-stdin <<< '{PASSWORD}' >/dev/null
missive login {ada} --password-stdin <<< '{PASSWORD}' >/dev/null
missive login {bob} --password-stdin <<< '{PASSWORD}' >/dev/null
missive --user {ada} --json send {bob} "from Ada"
MISSIVE_USER={bob} missive --json send {ada} "from Bob"
MISSIVE_USER={ada} missive login {ada} --password-stdin <<< '{PASSWORD}' >/dev/null
missive --json whoami
"""
    done = _shell(setup, **env)
    assert done.returncode == 0, done.stderr
    documents = [json.loads(part) for part in _json_documents(done.stdout)]
    assert documents[0]["sender_email"] == ada and documents[1]["sender_email"] == bob
    who = documents[2]
    # The last to log in without --user / MISSIVE_USER (a login naming its user keeps it).
    assert who["profile"] == "default" and who["user"] == bob
    assert {row["email"] for row in who["signed_in"]} == {ada, bob}
    # --user reads as Ada while Bob stays the current user.
    mine = _shell(f"missive --user {ada} --json messages {bob}", **env)
    assert [m["content"] for m in json.loads(mine.stdout)] == ["from Bob", "from Ada"]
    out = _shell(f"missive --user {ada} logout && missive --user {ada} conversations", **env)
    assert out.returncode == EXIT_AUTH
    assert f"Signed out {ada}." in out.stdout
    assert out.stderr.strip() == f"error: {ada} is not signed in: run `missive login {ada}`"
    still = _shell("missive --json users get", **env)
    assert still.returncode == 0 and json.loads(still.stdout)["email"] == bob
    gone = _shell("missive logout --all && missive conversations", **env)
    assert gone.returncode == EXIT_AUTH and f"Signed out {bob}." in gone.stdout


def _json_documents(text: str) -> list[str]:
    """Split concatenated pretty-printed JSON documents (each starts at column 0)."""
    parts: list[str] = []
    for line in text.splitlines():
        if line.startswith(("{", "[")):
            parts.append(line)
        else:
            parts[-1] += "\n" + line
    return parts

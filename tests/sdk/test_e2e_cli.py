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
from tests.sdk.conftest import PASSWORD, new_email
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
    return tmp_path / "config" / "missive" / "token.json"


def test_register_login_send_read_and_manage(
    live_env: dict[str, str], live: System, token_file: Path
) -> None:
    bob = register_and_login("Bob")
    ok("logout")
    ada = register_and_login("Ada")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    stored = json.loads(token_file.read_text())
    assert stored["email"] == ada and PASSWORD not in token_file.read_text()

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

"""`missive admin dead-letters` (the installed script) against the real system.

An outage the relay gave up on is reproduced as the relay records it: while NotificationService
and MessageService's relay is stopped, the pending event of a sent message is moved to the
dead-letter stream with the relay's dead_letter.* fields. The notification then never comes,
until an operator replays it. UserService's erasure outbox is covered the same way: dead letters
written with the relay's fields are listed, replayed (the relay then delivers the erasure, or
dead-letters a poison event anew) and dropped.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from services.common.delivery import (
    DEAD_LETTER_ATTEMPTS_FIELD,
    DEAD_LETTER_CONSUMER_FIELD,
    DEAD_LETTER_ID_FIELD,
    DEAD_LETTER_REASON_FIELD,
)
from services.message.keys import OUTBOX_DEAD_LETTER_STREAM, OUTBOX_STREAM
from services.message.relay import OUTBOX
from services.message.settings import Settings as MessageSettings
from services.user.keys import ACCOUNTS_DEAD_LETTERS, ACCOUNTS_OUTBOX
from services.user.relay import OUTBOX as ACCOUNTS
from services.user.settings import Settings as UserSettings
from tests.helpers.system import System
from tests.sdk.helpers import eventually, signed_in

pytestmark = pytest.mark.e2e

MISSIVE = Path(sys.executable).with_name("missive")
EXIT_AUTH, EXIT_UNAVAILABLE = 3, 4


def missive(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(MISSIVE), *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def ok_json(env: dict[str, str], *args: str) -> object:
    done = missive(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def admin_env(live_env: dict[str, str], live: System) -> dict[str, str]:
    return {**os.environ, **live_env, "KEYS_DIR": str(live.keys_dir)}


def _messages_db(system: System) -> redis.Redis:
    db = MessageSettings.from_env({"REDIS_URL": system.valkey.url}).redis_db
    return redis.Redis.from_url(system.valkey.url, db=db, decode_responses=True)


def _users_db(system: System) -> redis.Redis:
    db = UserSettings.from_env({"REDIS_URL": system.valkey.url}).redis_db
    return redis.Redis.from_url(system.valkey.url, db=db, decode_responses=True)


def _entries(db: redis.Redis, stream: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (str(i), {str(k): str(v) for k, v in (f or {}).items()}) for i, f in db.xrange(stream) or []
    ]


def _give_up_on(db: redis.Redis, message_id: int) -> str:
    """Do what the relay does when it gives up on the event of ``message_id``."""

    def pending() -> tuple[str, dict[str, str]] | None:
        for entry_id, fields in _entries(db, OUTBOX_STREAM):
            if fields.get("message_id") == str(message_id):
                return entry_id, fields
        return None

    entry_id, fields = eventually(pending)
    dead_letter: dict[Any, Any] = {
        **fields,
        DEAD_LETTER_ID_FIELD: entry_id,
        DEAD_LETTER_REASON_FIELD: "failed: NotificationService unreachable (test)",
        DEAD_LETTER_ATTEMPTS_FIELD: "8",
        DEAD_LETTER_CONSUMER_FIELD: "test-relay",
    }
    db.xadd(OUTBOX_DEAD_LETTER_STREAM, dead_letter)
    db.xack(OUTBOX_STREAM, OUTBOX.group, entry_id)
    db.xdel(OUTBOX_STREAM, entry_id)
    return entry_id


def test_list_replay_delivers_the_lost_notification_once_then_drop(
    live: System, admin_env: dict[str, str]
) -> None:
    db = _messages_db(live)
    db.delete(OUTBOX_DEAD_LETTER_STREAM)
    with signed_in(live, "Ada") as ada, signed_in(live, "Bob") as bob:
        live.stop("notification")
        try:
            sent = ada.messages.send(bob.email or "", "lost in an outage")
            # MessageService's relay holds the event it is retrying in memory: stop it first.
            live.stop("message")
            original = _give_up_on(db, sent.id)
        finally:
            live.start("message", "notification")
        asyncio.run(live.wait_healthy("message", "notification"))
        time.sleep(1.0)

        def mine() -> list[int]:
            return [n.message_id for n in bob.notifications.list().to_list(None)]

        assert sent.id not in mine()  # lost, for now

        listed = ok_json(admin_env, "admin", "dead-letters", "list", "--service", "message")
        assert isinstance(listed, list) and len(listed) == 1
        letter = listed[0]
        assert letter["service"] == "message" and letter["original_id"] == original
        assert letter["fields"]["message_id"] == str(sent.id) and letter["attempts"] == 8
        assert "unreachable" in letter["reason"]
        human = missive(admin_env, "admin", "dead-letters", "list")
        assert human.returncode == 0 and letter["id"] in human.stdout
        assert "message: 1 dead letter(s)" in human.stderr
        assert "notification: 0 dead letter(s)" in human.stderr

        replayed = ok_json(
            admin_env, "admin", "dead-letters", "replay", "--service", "message", letter["id"]
        )
        assert replayed == {"service": "message", "replayed": 1, "not_found": []}
        eventually(lambda: sent.id in mine())
        # Replaying again finds nothing to replay, and the notification stays single.
        again = ok_json(
            admin_env, "admin", "dead-letters", "replay", "--service", "message", letter["id"]
        )
        assert again == {"service": "message", "replayed": 0, "not_found": [letter["id"]]}
        time.sleep(1.0)
        assert mine().count(sent.id) == 1
        assert ok_json(admin_env, "admin", "dead-letters", "list") == []

        # Drop: one by id, then --all.
        for n in range(3):
            db.xadd(
                OUTBOX_DEAD_LETTER_STREAM, {"message_id": f"{n}", DEAD_LETTER_REASON_FIELD: "x"}
            )
        first = _entries(db, OUTBOX_DEAD_LETTER_STREAM)[0][0]
        dropped = ok_json(admin_env, "admin", "dead-letters", "drop", "--service", "message", first)
        assert dropped == {"service": "message", "dropped": 1, "not_found": []}
        rest = ok_json(
            admin_env, "admin", "dead-letters", "drop", "--service", "message", "--all", "--yes"
        )
        assert rest == {"service": "message", "dropped": 2, "not_found": []}
        assert db.xlen(OUTBOX_DEAD_LETTER_STREAM) == 0


def test_errors_are_one_line_with_the_documented_exit_codes(
    live: System, admin_env: dict[str, str], tmp_path: Path
) -> None:
    no_key = missive({**admin_env, "KEYS_DIR": str(tmp_path)}, "admin", "dead-letters", "list")
    assert no_key.returncode == EXIT_AUTH
    assert no_key.stderr.count("\n") == 1 and "admin.key" in no_key.stderr

    # A key that is not the operator's: the services do not accept it.
    forged = tmp_path / "forged"
    (forged / "service").mkdir(parents=True)
    shutil.copy(live.keys_dir / "service" / "message.key", forged / "service" / "admin.key")
    denied = missive(admin_env, "admin", "dead-letters", "list", "--keys-dir", str(forged))
    assert denied.returncode == EXIT_AUTH, denied.stderr
    assert denied.stderr.count("\n") == 1

    bad_id = missive(admin_env, "admin", "dead-letters", "drop", "--service", "message", "x")
    assert bad_id.returncode == 1 and "not a dead-letter id" in bad_id.stderr

    usage = missive(admin_env, "admin", "dead-letters", "replay", "--service", "message")
    assert usage.returncode == 2

    down = missive(
        {**admin_env, "MISSIVE_NOTIFICATION_GRPC": "127.0.0.1:1"},
        "admin",
        "dead-letters",
        "list",
        "--service",
        "notification",
    )
    assert down.returncode == EXIT_UNAVAILABLE and down.stderr.count("\n") == 1


def test_the_erasure_outbox_of_user_service_is_listed_replayed_and_dropped(
    live: System, admin_env: dict[str, str]
) -> None:
    db = _users_db(live)
    db.delete(ACCOUNTS_DEAD_LETTERS)
    relay: dict[Any, Any] = {
        DEAD_LETTER_ATTEMPTS_FIELD: "1",
        DEAD_LETTER_CONSUMER_FIELD: "test-relay",
    }
    # The erasure of an account nobody holds any more (the services refused it while it was
    # registered again, say), and a poison event that names no email.
    ghost = f"ghost-{secrets.token_hex(4)}@example.com"
    erasure: dict[Any, Any] = {"email": ghost, "account_id": secrets.token_hex(16)}
    erasure_letter = str(
        db.xadd(
            ACCOUNTS_DEAD_LETTERS,
            {
                **erasure,
                **relay,
                DEAD_LETTER_ID_FIELD: "1-0",
                DEAD_LETTER_REASON_FIELD: "permanent failure: still registered (test)",
            },
        )
    )
    poison_letter = str(
        db.xadd(
            ACCOUNTS_DEAD_LETTERS,
            {
                "account_id": "poison",
                **relay,
                DEAD_LETTER_ID_FIELD: "2-0",
                DEAD_LETTER_REASON_FIELD: "permanent failure: names no email",
            },
        )
    )

    listed = ok_json(admin_env, "admin", "dead-letters", "list", "--service", "user")
    assert isinstance(listed, list)
    assert [(d["service"], d["id"], d["fields"]) for d in listed] == [
        ("user", erasure_letter, erasure),
        ("user", poison_letter, {"account_id": "poison"}),
    ]
    assert listed[0]["original_id"] == "1-0" and listed[0]["attempts"] == 1
    assert "still registered" in listed[0]["reason"]
    human = missive(admin_env, "admin", "dead-letters", "list")
    assert human.returncode == 0 and erasure_letter in human.stdout
    assert "user: 2 dead letter(s) in outbox:accounts" in human.stderr
    assert "message: 0 dead letter(s)" in human.stderr

    # Replayed, the erasure goes back to outbox:accounts and the relay delivers it: MessageService
    # and NotificationService accept the erasure of an account that is not registered.
    replayed = ok_json(
        admin_env, "admin", "dead-letters", "replay", "--service", "user", erasure_letter
    )
    assert replayed == {"service": "user", "replayed": 1, "not_found": []}

    def delivered() -> bool:
        mine = [i for i, f in _entries(db, ACCOUNTS_OUTBOX) if f.get("email") == ghost]
        if mine:
            group = next(g for g in db.xinfo_groups(ACCOUNTS_OUTBOX) if g["name"] == ACCOUNTS.group)
            if _id(str(group["last-delivered-id"])) < _id(mine[0]):
                return False  # not read by the relay yet
            if db.xpending_range(ACCOUNTS_OUTBOX, ACCOUNTS.group, mine[0], mine[0], 1):
                return False  # read, not acknowledged yet
        return True

    eventually(delivered)
    time.sleep(0.5)
    assert _stream_ids(db) == [poison_letter]  # not dead-lettered again
    again = ok_json(
        admin_env, "admin", "dead-letters", "replay", "--service", "user", erasure_letter
    )
    assert again == {"service": "user", "replayed": 0, "not_found": [erasure_letter]}

    # Replayed, the poison event reaches the relay again, which dead-letters it anew.
    assert ok_json(admin_env, "admin", "dead-letters", "replay", "--service", "user", "--all") == {
        "service": "user",
        "replayed": 1,
        "not_found": [],
    }

    def dead_again() -> list[tuple[str, dict[str, str]]] | None:
        entries = _entries(db, ACCOUNTS_DEAD_LETTERS)
        return entries if entries and entries[0][0] != poison_letter else None

    [(renewed, fields)] = eventually(dead_again)
    assert fields["account_id"] == "poison" and "names no email" in fields[DEAD_LETTER_REASON_FIELD]

    dropped = ok_json(admin_env, "admin", "dead-letters", "drop", "--service", "user", renewed)
    assert dropped == {"service": "user", "dropped": 1, "not_found": []}
    assert db.xlen(ACCOUNTS_DEAD_LETTERS) == 0
    assert ok_json(admin_env, "admin", "dead-letters", "list", "--service", "user") == []


def _id(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)


def _stream_ids(db: redis.Redis) -> list[str]:
    return [entry_id for entry_id, _ in _entries(db, ACCOUNTS_DEAD_LETTERS)]

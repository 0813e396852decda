"""The checker itself: each kind of anomaly is counted where it belongs (no system needed)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers.chaos.checker import check
from tests.helpers.chaos.history import Attempt, History, Outcome, SendOp
from tests.helpers.chaos.report import ScenarioResult, summary
from tests.helpers.chaos.run import DEEP_ENV
from tests.helpers.chaos.store import Snapshot, StoredMessage, StoredNotification
from tests.helpers.chaos.streams import Connection, LiveStream
from tests.helpers.clients import User
from tests.helpers.system import ROOT, System

A, B = "a@example.com", "b@example.com"
CONVERSATION = f"conversation:{A}:{B}"


def _op(index: int, outcome: Outcome, message_id: int | None) -> SendOp:
    code = {"ok": "OK", "fail": "INVALID_ARGUMENT", "info": "UNAVAILABLE"}[outcome.value]
    op = SendOp(index, f"r{index}", f"n{index}", A, B, 0.0, [Attempt(0.0, 0.1, code)], outcome)
    op.message_id = message_id
    return op


def _store(snap: Snapshot, op: SendOp, message_id: int, *, complete: bool = True) -> None:
    snap.messages[message_id] = StoredMessage(message_id, A, B, op.content)
    if complete:
        snap.conversations.add(CONVERSATION)
        snap.conversation_messages.setdefault(CONVERSATION, set()).add(message_id)
        for email in (A, B):
            snap.user_messages.setdefault(email, set()).add(message_id)
            snap.user_conversations.setdefault(email, set()).add(CONVERSATION)


def _notify(snap: Snapshot, message_id: int, nid: str | None = None) -> str:
    nid = nid or f"9{message_id}"
    snap.notifications.append(StoredNotification(nid, message_id, B, B, False))
    return nid


def _stream(*connections: list[str]) -> LiveStream:
    stream = LiveStream(System.__new__(System), User(B, "token"))
    for ids in connections:
        stream.connections.append(Connection(0.0, list(ids), 1.0, "UNAVAILABLE"))
        for nid in ids:
            stream.first_seen.setdefault(nid, 1.0)
            stream.message_of.setdefault(nid, int(nid[1:]))
    return stream


def _history(*ops: SendOp) -> History:
    return History(list(ops))


def test_a_clean_run_has_nothing_to_report() -> None:
    ok, info = _op(0, Outcome.OK, 1), _op(1, Outcome.INFO, None)
    snap = Snapshot()
    _store(snap, ok, 1)
    _store(snap, info, 2)
    first, second = _notify(snap, 1), _notify(snap, 2)
    # Reconnected once: the replay repeats `first` on the second connection (deduped).
    result = check(_history(ok, info), snap, [_stream([first], [first, second])])
    assert result.messages.clean and result.notifications.clean and result.streams.clean
    assert result.recovered == 1 and result.converged
    assert not result.incomplete and not result.invariants


def test_lost_duplicated_and_unexpected_messages_are_counted() -> None:
    lost, twice, failed = _op(0, Outcome.OK, 1), _op(1, Outcome.OK, 2), _op(2, Outcome.FAIL, None)
    snap = Snapshot()
    _store(snap, twice, 2)
    _store(snap, twice, 3)
    _store(snap, failed, 4)
    snap.messages[5] = StoredMessage(5, A, B, "text no operation sent")
    for mid in (2, 3, 4, 5):
        _notify(snap, mid)
    result = check(_history(lost, twice, failed), snap)
    assert (result.messages.lost, result.messages.duplicated) == (1, 1)
    assert result.messages.unexpected == 2
    assert not result.converged


def test_missing_and_repeated_notifications_are_counted() -> None:
    ops = [_op(n, Outcome.OK, n + 1) for n in range(3)]
    snap = Snapshot()
    for op in ops:
        assert op.message_id is not None
        _store(snap, op, op.message_id)
    _notify(snap, 1)
    _notify(snap, 2, "92")
    _notify(snap, 2, "93")
    _notify(snap, 77)  # a message that does not exist
    result = check(_history(*ops), snap)
    assert result.notifications.lost == 1  # message 3
    assert result.notifications.duplicated == 1  # message 2
    assert result.notifications.unexpected == 1  # message 77


def test_streams_missing_repeating_or_inventing_ids_are_counted() -> None:
    ops = [_op(n, Outcome.OK, n + 1) for n in range(3)]
    snap = Snapshot()
    ids = []
    for op in ops:
        assert op.message_id is not None
        _store(snap, op, op.message_id)
        ids.append(_notify(snap, op.message_id))
    # ids[2] never shown, ids[0] twice on one connection, "95" is not stored at all.
    result = check(_history(*ops), snap, [_stream([ids[0], ids[1], ids[0], "95"])])
    assert (result.streams.lost, result.streams.duplicated, result.streams.unexpected) == (1, 1, 1)
    assert not result.converged


def test_partial_writes_and_dangling_references_are_reported() -> None:
    info = _op(0, Outcome.INFO, None)
    snap = Snapshot()
    _store(snap, info, 1, complete=False)
    _notify(snap, 1)
    snap.conversations.add(CONVERSATION)
    snap.conversation_messages[CONVERSATION] = {1, 42}
    result = check(_history(info), snap)
    assert result.recovered == 1
    assert result.incomplete and "sender index" in result.incomplete[0]
    assert any("42" in problem for problem in result.invariants)


def test_losses_inside_a_stated_durability_window_are_allowed() -> None:
    kept, window = _op(0, Outcome.OK, 1), _op(1, Outcome.OK, 2)
    snap = Snapshot()
    _store(snap, kept, 1)
    _notify(snap, 1)
    result = check(_history(kept, window), snap, allow_lost=lambda op: op.index == 1)
    assert result.messages.lost == 0 and result.allowed_lost == 1


def _collected(env_value: str | None) -> set[str]:
    env = {k: v for k, v in os.environ.items() if k != DEEP_ENV}
    if env_value is not None:
        env[DEEP_ENV] = env_value
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/chaos",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return {line.split("::")[-1] for line in out.splitlines() if "::" in line}


def test_deep_scenarios_run_only_when_asked() -> None:
    """Plain pytest collects the fast subset only; MISSIVE_CHAOS=deep (make chaos) adds the rest."""
    fast, full = _collected(None), _collected("deep")
    assert "test_notification_sigkill_5s" in fast
    assert "test_notification_sigkill_60s" not in fast
    assert "test_notification_sigkill_60s" in full
    assert fast < full


def test_the_summary_names_each_scenario_its_figures_and_violations() -> None:
    passed = ScenarioResult("calm", ops=3, ok=3, drain_s=0.5)
    failed = ScenarioResult("stormy", ops=2, ok=1, info=1)
    failed.check.notifications.note("lost", "message 7 has no notification")
    failed.figures["catch-up"] = "1 sent during the fault"
    failed.require(failed.check.notifications.clean, "stored notifications: lost = 0")
    table = summary([passed, failed])
    assert "calm" in table and "PASS" in table and "0.5s" in table
    assert "stormy" in table and "FAIL" in table and "1/0/0" in table and "never" in table
    assert "stormy VIOLATED: stored notifications: lost = 0" in table
    assert "message 7 has no notification" in failed.describe()

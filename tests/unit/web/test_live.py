"""The SSE cursor: what a reconnecting browser already has, carried in Last-Event-ID."""

from __future__ import annotations

from services.web.live import WINDOW, Cursor


def test_an_empty_cursor_has_seen_nothing() -> None:
    cursor = Cursor.decode(None)
    assert cursor.ids == []
    assert not cursor.seen(1)
    assert cursor.encode() == ""


def test_it_round_trips_through_its_encoding() -> None:
    cursor = Cursor()
    for notification_id in (5, 9, 7, 1000):
        cursor.add(notification_id)
    encoded = cursor.encode()
    assert encoded == "1000.3e3.3e1.3df"
    again = Cursor.decode(encoded)
    assert again.ids == [5, 7, 9, 1000]
    assert all(again.seen(i) for i in (5, 7, 9, 1000))
    assert not again.seen(6), "a gap inside the window was never sent: it still is"
    assert not again.seen(1001)
    assert not again.seen(4), "below a window that is not full: never sent"


def test_a_full_window_counts_everything_older_as_sent_and_stays_bounded() -> None:
    cursor = Cursor()
    for notification_id in range(1, 201):
        cursor.add(notification_id)
    assert len(cursor.ids) == WINDOW
    assert cursor.ids[0] == 201 - WINDOW
    assert cursor.seen(3)
    assert cursor.seen(200)
    assert not cursor.seen(201)
    assert len(cursor.encode()) < 300


def test_adding_twice_changes_nothing() -> None:
    cursor = Cursor()
    cursor.add(3)
    cursor.add(3)
    assert cursor.ids == [3]


def test_malformed_ids_are_a_full_replay() -> None:
    for raw in ("abc", "12.zz", "-5", "0", "5.9", "", "1." + ".".join(["1"] * 5), "9" * 3000):
        assert Cursor.decode(raw).ids == [], raw
    too_many = ".".join(["500", *(format(i, "x") for i in range(1, WINDOW + 1))])
    assert Cursor.decode(too_many).ids == []

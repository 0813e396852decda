"""The in-process REST edge measurement runs: every request gets its expected answer."""

from __future__ import annotations

from tests.perf.rest_edge import main


async def test_the_measurement_answers_every_request_as_expected() -> None:
    # `measure` stops (SystemExit) when a request's status is not the one expected.
    results = await main(rounds=1, count=3, conversations=10, only="")
    assert set(results) == {
        "GET /list_conversations (10)",
        "GET /users/{email}",
        "POST /messages",
        "400 (page_size=0)",
    }
    assert all(micros > 0 for micros in results.values())

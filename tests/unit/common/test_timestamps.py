"""The shared timestamp helpers against their references."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from services.common.timestamps import set_proto_timestamp

_OFFSETS = st.integers(min_value=-23 * 60, max_value=23 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@given(st.datetimes(timezones=st.none() | st.just(UTC) | _OFFSETS))
def test_set_proto_timestamp_matches_from_datetime(moment: datetime) -> None:
    # Naive moments are UTC, aware ones in any offset convert; before 1970 included.
    ours, reference = Timestamp(), Timestamp()
    set_proto_timestamp(ours, moment)
    reference.FromDatetime(moment)
    assert (ours.seconds, ours.nanos) == (reference.seconds, reference.nanos)

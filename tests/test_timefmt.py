from datetime import UTC, datetime, timedelta, timezone

import pytest

from worker.errors import InvalidTime
from worker.timefmt import format_rfc3339, parse_rfc3339


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-17T11:02:21Z", datetime(2026, 1, 17, 11, 2, 21, tzinfo=UTC)),
        ("2026-01-17t11:02:21z", datetime(2026, 1, 17, 11, 2, 21, tzinfo=UTC)),
        ("2026-01-17T12:02:21+01:00", datetime(2026, 1, 17, 11, 2, 21, tzinfo=UTC)),
        ("2024-02-29T23:59:59.500-05:00", datetime(2024, 3, 1, 4, 59, 59, 500000, tzinfo=UTC)),
    ],
)
def test_rfc3339_times_are_read_into_utc(text, expected):
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "text", ["2026-01-17", "2026-01-17T11:02:21", "yesterday", "", "2026-13-01T00:00:00Z"]
)
def test_times_without_offset_or_malformed_are_refused_with_an_example(text):
    with pytest.raises(InvalidTime, match="2026-01-17T11:02:21Z"):
        parse_rfc3339(text)


def test_times_are_written_in_utc_with_z():
    moment = datetime(2026, 1, 17, 12, 2, 21, 999, tzinfo=timezone(timedelta(hours=1)))
    assert format_rfc3339(moment) == "2026-01-17T11:02:21Z"

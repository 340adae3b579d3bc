"""Times as tokenwarden reads and writes them: RFC 3339, always UTC on output (`...Z`)."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.errors import InvalidTime

#: Earliest and latest time taken from a user, a token or an event (as the event catalog's
#: bounds): Apple's portals are younger than the first, and the second leaves room for the
#: arithmetic on expiries that a year like 9999 would overflow.
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9000, 1, 1, tzinfo=UTC)


def parse_rfc3339(text: str, *, what: str = "time") -> datetime:
    """Parse an RFC 3339 timestamp with an explicit offset and return it in UTC.

    A time without an offset is refused: guessing the zone of an event is how a password change
    ends up attributed to the wrong side of a token download.
    """
    cleaned = text.strip()
    try:
        parsed = datetime.fromisoformat(cleaned.replace("z", "Z"))
    except ValueError:
        raise InvalidTime(
            f"{what} {text!r} is not an RFC 3339 time; write it like 2026-01-17T11:02:21Z"
        ) from None
    if parsed.tzinfo is None or "T" not in cleaned.upper():
        raise InvalidTime(
            f"{what} {text!r} has no date-time with an offset; "
            "write it like 2026-01-17T11:02:21Z or 2026-01-17T12:02:21+01:00"
        )
    return in_range_utc(parsed, what=f"{what} {text!r}")


def in_range_utc(moment: datetime, *, what: str = "time") -> datetime:
    """An aware time in UTC, refused when outside EARLIEST_TIME..LATEST_TIME (a year 1 or 9999
    with an offset cannot even be converted)."""
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST_TIME <= utc < LATEST_TIME:
        raise InvalidTime(
            f"{what} is out of range; give a time from {EARLIEST_TIME.year} "
            f"to {LATEST_TIME.year - 1}"
        )
    return utc


def format_rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with a `Z`, to the second."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: tokenwarden only handles aware times")
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now() -> datetime:
    return datetime.now(UTC)

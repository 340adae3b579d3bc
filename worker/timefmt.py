"""Times as tokenwarden reads and writes them: RFC 3339, always UTC on output (`...Z`)."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.errors import InvalidTime


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
    return parsed.astimezone(UTC)


def format_rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with a `Z`, to the second."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: tokenwarden only handles aware times")
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now() -> datetime:
    return datetime.now(UTC)

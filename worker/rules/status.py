"""The estate at a glance, most urgent first: `tokenwarden status` (with an exit code for
monitoring) and the web pages (worker/ui/) show the same states. Pure: records in, rows and a
verdict out. Here rather than in scheduler/ because worker/ never imports scheduler/."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from events import catalog
from worker.apple.verdicts import standing
from worker.config import DEFAULT_APPLE_CHECK_INTERVAL_S
from worker.records import AppleState, Replacement, Server
from worker.rules.policy import DEFAULT_POLICY, Policy
from worker.timefmt import format_rfc3339

#: Exit codes: all well; something needs action inside the first threshold (or has no token,
#: or must be replaced); something expired or no longer works.
FINE, DUE, EXPIRED = 0, 1, 2

#: Every state a row can be in, most urgent first (the pages colour each: worker/ui/).
STATES = ("expired", "replace now", "no token", "replace", "due", "ok")


def days_left(expires_at: datetime, now: datetime) -> int:
    """Whole days until expiry, rounded down; 0 on the last day and after."""
    return max(0, (expires_at - now) // timedelta(days=1))


class CurrentToken(Protocol):
    """What the status reads of a token: a worker.records.Token, or the summary the web pages
    read of 10,000 at once (worker/store/page_reads.py)."""

    @property
    def expires_at(self) -> datetime: ...

    @property
    def downloaded_by(self) -> str: ...

    @property
    def apple(self) -> AppleState: ...


@dataclass(frozen=True)
class Row:
    severity: int
    server: Server
    token: CurrentToken | None
    replacement: Replacement | None
    now: datetime
    apple_interval_s: int = DEFAULT_APPLE_CHECK_INTERVAL_S

    @property
    def state(self) -> str:
        """One of STATES."""
        token = self.token
        if token is None:
            return "no token"
        if token.expires_at <= self.now:
            return "expired"
        if self.severity == EXPIRED:
            return "replace now"
        if self.replacement:
            return "replace"
        return "due" if self.severity == DUE else "ok"

    def describe(self) -> dict[str, Any]:
        token, replacement = self.token, self.replacement
        return {
            "server": self.server.name,
            "org": self.server.org or None,
            "state": self.state,
            "expires_at": format_rfc3339(token.expires_at) if token else None,
            "days_left": days_left(token.expires_at, self.now) if token else None,
            "downloaded_by": token.downloaded_by if token else None,
            "apple": self._apple(),
            "replacement": None
            if replacement is None
            else {
                "opened_at": replacement.opened_at,
                "reasons": [r.get("type") for r in replacement.reasons],
                "because": replacement.label(),
                "event_count": replacement.event_count,
                "urgency": replacement.most_urgent.get("urgency"),
            },
        }

    def _apple(self) -> dict[str, Any] | None:
        """Apple's verdict on the token as it stands, and when Apple last confirmed it."""
        if self.token is None:
            return None
        state = self.token.apple
        return {
            "verdict": standing(state, self.server.terms_since, self.now, self.apple_interval_s),
            "last_confirmed_at": format_rfc3339(state.confirmed_at) if state.confirmed_at else None,
        }


def row_for(
    server: Server,
    token: CurrentToken | None,
    replacement: Replacement | None,
    now: datetime,
    thresholds: Sequence[int],
    apple_interval_s: int = DEFAULT_APPLE_CHECK_INTERVAL_S,
    policy: Policy = DEFAULT_POLICY,
) -> Row:
    severity = severity_of(token, replacement, now, thresholds, policy)
    if token is not None and server.terms_since is not None:
        severity = max(severity, DUE)  # someone must accept Apple's new terms in the portal
    return Row(severity, server, token, replacement, now, apple_interval_s)


def severity_of(
    token: CurrentToken | None,
    replacement: Replacement | None,
    now: datetime,
    thresholds: Sequence[int],
    policy: Policy = DEFAULT_POLICY,
) -> int:
    if token is None:
        return DUE
    if token.expires_at <= now:
        return EXPIRED
    if replacement and replacement.most_urgent.get("rank", 0) >= catalog.IMMEDIATE.rank:
        return EXPIRED  # it no longer works: as bad as expired
    if replacement is not None or now >= policy.renewal_at(token.expires_at):
        return DUE  # its policy's renew-before is reached: the scan opens its renewal
    del thresholds  # the warnings before renew-before are information, not due
    return FINE


def ordered(rows: list[Row]) -> list[Row]:
    """Most urgent first: severity, then the soonest expiry, then the name."""
    far = datetime.max.replace(tzinfo=rows[0].now.tzinfo) if rows else None
    return sorted(
        rows,
        key=lambda r: (
            -r.severity,
            r.token.expires_at if r.token else far,
            r.server.name.casefold(),
        ),
    )


def verdict(rows: list[Row]) -> int:
    return max((r.severity for r in rows), default=FINE)

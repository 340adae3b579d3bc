"""What the expiry scan decides for one due token: pure, `now` passed in.

It lives beside the threshold arithmetic it uses (scheduler/thresholds.py) rather than with the
other rules in worker/rules/, because imports go scheduler -> worker; it builds the same
Decision, and opens replacements by the same rule (worker/rules/replacing.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events import catalog
from events.cloudevent import outgoing_event, stable_id
from scheduler.thresholds import EXPIRED, days_left, is_more_urgent, level_at, next_check_at
from worker.records import TOKEN_CURRENT, Server, Token
from worker.rules.decision import (
    STATUS,
    TOKEN,
    WARNED,
    AuditEntry,
    Decision,
    Guard,
    NextCheck,
    Warned,
)
from worker.rules.facts import ScanFacts
from worker.rules.renewal import (
    expiry_certificate,
    key_still_wanted,
    open_renewal,
    renewal_due,
    rotate_open_renewal,
)
from worker.rules.replacement import Cause, ReplacementNeeded
from worker.rules.replacing import replace_token
from worker.timefmt import format_rfc3339


@dataclass(frozen=True)
class Warning:
    server: str
    org: str
    token_id: str
    type: str
    level: int
    days_left: int
    expires_at: str
    downloaded_by: str

    def describe(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "org": self.org or None,
            "token_id": self.token_id,
            "type": self.type,
            "threshold_days": self.level or None,
            "days_left": self.days_left,
            "expires_at": self.expires_at,
            "downloaded_by": self.downloaded_by,
        }


def decide_scan(
    facts: ScanFacts, now: datetime, thresholds: Sequence[int]
) -> tuple[Decision, Warning | None]:
    """The decision for one due token, and the warning it sends (if any): the token's next
    check; a warning when its level is more urgent than the last one sent (once per level, even
    with two schedulers at once: the guards), as information; at expiry, a reason to replace
    the token; and when its policy's renew-before is reached, its renewal (renewal.py)."""
    token, server = facts.token, facts.server
    decision = Decision(now=now)
    if token.status != TOKEN_CURRENT or server is None:
        decision.next_checks.append(NextCheck(token.id, None))
        return decision, None
    level = level_at(token.expires_at, now, thresholds)
    decision.next_checks.append(NextCheck(token.id, _next_check(facts, level, now, thresholds)))
    warning = None
    state = facts.replacement
    if level is not None and is_more_urgent(level, token.warned):
        decision.guards += [
            Guard(TOKEN, token.id, STATUS, TOKEN_CURRENT),
            Guard(TOKEN, token.id, WARNED, "" if token.warned is None else str(token.warned)),
        ]
        decision.warned.append(Warned(token.id, level))
        warning, event = _warning(token, server, level, now)
        decision.outgoing.append(event)
        decision.results.append({"action": f"sent {event['type']}"})
        decision.audit = AuditEntry("scan", warning.describe())
        if level == EXPIRED:
            cause = Cause(
                type=event["type"],
                id=event["id"],
                source=catalog.SOURCE_SCHEDULER,
                time=token.expires_at,
            )
            # A server whose policy rotates keys gets its new key now, if its renewal never
            # staged one (the scheduler was down through renew-before, say).
            need = ReplacementNeeded(token, cause, expiry_certificate(decision, facts))
            state = replace_token(decision, state, need, server, now)
    if renewal_due(facts, now):
        open_renewal(decision, facts, state, now)
    elif level != EXPIRED and key_still_wanted(facts, now):
        rotate_open_renewal(decision, facts, state, now)
    return decision, warning


def _next_check(
    facts: ScanFacts, level: int | None, now: datetime, thresholds: Sequence[int]
) -> datetime | None:
    """The next threshold crossing, or the renewal moment when that comes first."""
    at = next_check_at(facts.token.expires_at, level, thresholds)
    renew_at = facts.policy.renewal_at(facts.token.expires_at)
    if facts.token.renewal_opened is None and renew_at > now and (at is None or renew_at < at):
        return renew_at
    return at


def _warning(
    token: Token, server: Server, level: int, now: datetime
) -> tuple[Warning, dict[str, Any]]:
    event_type = catalog.EXPIRED if level == EXPIRED else catalog.EXPIRY_APPROACHING
    warning = Warning(
        server=server.name,
        org=server.org,
        token_id=token.id,
        type=event_type,
        level=level,
        days_left=days_left(token.expires_at, now),
        expires_at=format_rfc3339(token.expires_at),
        downloaded_by=token.downloaded_by,
    )
    data = {
        "server": server.name,
        "org": server.org or None,
        "server_id": server.id,
        "token_id": token.id,
        "expires_at": warning.expires_at,
        "days_left": warning.days_left,
        "threshold_days": level or None,
        "downloaded_by": token.downloaded_by,
        "downloaded_at": format_rfc3339(token.downloaded_at),
    }
    event = outgoing_event(
        event_type,
        event_id=stable_id(event_type, token.id, str(level)),
        subject=server.name,
        time=now,
        data=data,
        source=catalog.SOURCE_SCHEDULER,
    )
    return warning, event

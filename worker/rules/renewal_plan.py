"""The renewal plan: for each server's current token, when its renewal is due under the policy
in force (worker/rules/policy.py), who owns it, and how far it has come (a new key staged, the
renewal or another replacement opened). `tokens due` lists it and `tokens due --ical` / the
intake's `/calendar/renewals.ics` turn it into calendar events (worker/renewal_feed.py).

Pure: the facts and `now` are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from worker.records import Replacement, Server, Token
from worker.rules.policy import Policy
from worker.timefmt import format_rfc3339

#: `tokens due` without --within: what falls due in the next 30 days (the built-in
#: renew-before), the overdue included.
DEFAULT_WITHIN_DAYS = 30

#: --within bounds, in days: a token lives a year, and a renew-before is at most 300 days.
MIN_WITHIN_DAYS, MAX_WITHIN_DAYS = 0, 400

#: What an entry's state says, most advanced first.
EXPIRED = "expired"  # the token is past its expiry: the server no longer syncs
RENEWAL_OPEN = "renewal open"  # the scan opened the renewal: people were told
REPLACEMENT_OPEN = "replacement open"  # a replacement is open for another reason
OVERDUE = "overdue"  # due, but not opened yet (the scan opens it at its next run)
PLANNED = "planned"  # due later

#: The new key column: a key pair staged; the policy rotates keys but none is staged yet; the
#: key is kept.
KEY_STAGED, KEY_WANTED, KEY_KEPT = "staged", "wanted", "-"


@dataclass(frozen=True)
class PlanEntry:
    """One server's next renewal."""

    server_id: str
    server: str
    org: str
    token_id: str
    installed_at: datetime
    expires_at: datetime
    #: When the renewal falls due: expires_at less the policy's renew-before.
    due_at: datetime
    #: Whole days from now to due_at, rounded down (negative: overdue).
    days_until_due: int
    policy: Policy
    new_key_staged: bool
    renewal_opened: datetime | None
    replacement_open: bool
    state: str

    @property
    def due_date(self) -> date:
        """The (UTC) day the renewal falls due: the calendar event's day."""
        return self.due_at.date()

    @property
    def new_key(self) -> str:
        if self.new_key_staged:
            return KEY_STAGED
        return KEY_WANTED if self.policy.rotates_key else KEY_KEPT

    @property
    def last_changed(self) -> datetime:
        """When the entry last moved for the token itself: its install, or its renewal
        opening (the calendar event's LAST-MODIFIED and SEQUENCE follow it)."""
        return max(self.installed_at, self.renewal_opened or self.installed_at)

    def describe(self) -> dict[str, object]:
        return {
            "server": self.server,
            "server_id": self.server_id,
            "org": self.org or None,
            "token_id": self.token_id,
            "expires_at": format_rfc3339(self.expires_at),
            "due_at": format_rfc3339(self.due_at),
            "due_date": self.due_date.isoformat(),
            "days_until_due": self.days_until_due,
            "state": self.state,
            "renew_before_days": self.policy.renew_before_days,
            "rotate_key": self.policy.rotate_key,
            "owners": list(self.policy.owners),
            "policy_from": dict(self.policy.sources),
            "new_key_staged": self.new_key_staged,
            "renewal_opened_at": (
                format_rfc3339(self.renewal_opened) if self.renewal_opened else None
            ),
            "replacement_open": self.replacement_open,
            "installed_at": format_rfc3339(self.installed_at),
        }


def plan_entry(
    server: Server,
    token: Token,
    policy: Policy,
    replacement: Replacement | None,
    now: datetime,
) -> PlanEntry:
    """The plan for `server`'s current `token` under `policy`, with the token's replacement
    (any status; only an open one counts)."""
    due_at = policy.renewal_at(token.expires_at)
    open_ = replacement is not None and replacement.status == "open"
    return PlanEntry(
        server_id=server.id,
        server=server.name,
        org=server.org,
        token_id=token.id,
        installed_at=token.installed_at,
        expires_at=token.expires_at,
        due_at=due_at,
        days_until_due=(due_at - now).days,
        policy=policy,
        new_key_staged=server.staged_key_id is not None,
        renewal_opened=token.renewal_opened,
        replacement_open=open_,
        state=_state(token, due_at, open_, now),
    )


def _state(token: Token, due_at: datetime, replacement_open: bool, now: datetime) -> str:
    if now >= token.expires_at:
        return EXPIRED
    if token.renewal_opened is not None:
        return RENEWAL_OPEN
    if replacement_open:
        return REPLACEMENT_OPEN
    return OVERDUE if now >= due_at else PLANNED


def in_window(entry: PlanEntry, now: datetime, within_days: int | None) -> bool:
    """Whether the entry is due by now + within_days (the overdue always are); None: every
    entry (a calendar feed holds them all)."""
    return within_days is None or entry.due_at <= now + timedelta(days=within_days)


def plan_order(entry: PlanEntry) -> tuple:
    """Soonest due first; then by organization and name (ignoring case), then id."""
    return (entry.due_at, entry.org.casefold(), entry.server.casefold(), entry.server_id)

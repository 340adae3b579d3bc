"""The renewal plan as an iCalendar feed (RFC 5545) that people subscribe to in their calendar:
one all-day event per server, on the day its token's renewal falls due.

- UID `<server id>@tokenwarden`: the same event for the server's whole life, so a subscribed
  calendar moves it instead of adding another when a new token is installed.
- LAST-MODIFIED and SEQUENCE follow the token's install (and its renewal opening): a new token
  gives its event a later date and a higher SEQUENCE, which clients take as the newer version.
- DTSTAMP: when the feed was made.

It names servers, organizations, owners and dates; never a credential, key or secret.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from icalendar import Calendar, Event, vDuration, vText

from worker.rules.policy import BUILT_IN, GLOBAL, ORG, SERVER
from worker.rules.renewal_plan import PlanEntry
from worker.timefmt import format_rfc3339

PRODID = "-//tokenwarden//Server token renewals//EN"
CALENDAR_NAME = "Server token renewals"
UID_DOMAIN = "tokenwarden"

#: How often a subscribed calendar should fetch the feed again (RFC 7986 REFRESH-INTERVAL,
#: and X-PUBLISHED-TTL, which Outlook and Apple read).
REFRESH = timedelta(hours=1)

#: SEQUENCE counts minutes since this moment to the entry's last change: it only grows, and
#: stays within the 32-bit integers clients keep it in for another 4,000 years.
SEQUENCE_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


def render_feed(entries: Iterable[PlanEntry], now: datetime, *, org: str | None = None) -> bytes:
    """The feed of `entries`, made at `now`; `org`: the organization it was made for."""
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    name = f"{CALENDAR_NAME}: {org.strip()}" if org else CALENDAR_NAME
    calendar.add("x-wr-calname", name)
    calendar.add("name", name)
    calendar.add(
        "x-wr-caldesc",
        "When each Apple School/Business Manager server token must be renewed (tokenwarden)",
    )
    calendar.add("refresh-interval", vDuration(REFRESH), parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", vDuration(REFRESH))
    for entry in entries:
        calendar.add_component(renewal_event(entry, now))
    return calendar.to_ical()


def event_uid(server_id: str) -> str:
    return f"{server_id}@{UID_DOMAIN}"


def sequence_of(entry: PlanEntry) -> int:
    return max(0, int((entry.last_changed - SEQUENCE_EPOCH).total_seconds() // 60))


def renewal_event(entry: PlanEntry, now: datetime) -> Event:
    event = Event()
    event.add("uid", event_uid(entry.server_id))
    event.add("dtstamp", now.astimezone(UTC))
    event.add("last-modified", entry.last_changed.astimezone(UTC))
    event.add("sequence", sequence_of(entry))
    event.add("dtstart", entry.due_date)
    event.add("dtend", entry.due_date + timedelta(days=1))
    event.add("transp", "TRANSPARENT")  # a reminder, not a meeting: the day stays free
    event.add("summary", f"Renew the server token of {_server_label(entry)}")
    event.add("description", vText(describe(entry)))
    event.add("categories", ["tokenwarden", "renewal"])
    for owner in entry.policy.owners:
        event.add("contact", owner)
    return event


def _server_label(entry: PlanEntry) -> str:
    return f"{entry.server} ({entry.org})" if entry.org else entry.server


def describe(entry: PlanEntry) -> str:
    """The event's description: the facts, then the steps."""
    policy = entry.policy
    lines = [
        f"The server token of {_server_label(entry)} expires {format_rfc3339(entry.expires_at)}.",
        f"Renewal is due {format_rfc3339(entry.due_at)}: {policy.renew_before_days} days "
        f"before expiry (set by {_LAYERS.get(policy.sources.get('renew_before_days', ''))}).",
        f"State: {entry.state}.",
        f"Owners: {', '.join(policy.owners) if policy.owners else 'none named'}.",
        _key_line(entry),
        "",
        "Steps:",
        *_steps(entry),
    ]
    return "\n".join(lines)


#: Where a policy value came from, as the description says it.
_LAYERS = {
    SERVER: "the server's own policy",
    ORG: "the organization's policy",
    GLOBAL: "the global policy",
    BUILT_IN: "the built-in default",
}


def _key_line(entry: PlanEntry) -> str:
    if entry.new_key_staged:
        return "A new key pair is staged: upload its certificate before downloading the token."
    if entry.policy.rotates_key:
        return (
            "The policy rotates the key: tokenwarden stages a new key pair when the renewal "
            "opens; upload its certificate before downloading the token."
        )
    return "The key is kept: no certificate to upload."


def _steps(entry: PlanEntry) -> list[str]:
    """The steps, as the replacement e-mail gives them (worker/notify/email.py)."""
    name = entry.server
    org = f' --org "{entry.org}"' if entry.org else ""
    steps = [
        "Sign in to Apple School Manager (school.apple.com) or Apple Business Manager "
        "(business.apple.com) as an Administrator, Site Manager or Device Enrollment Manager.",
        f'Open Preferences, then Your MDM Servers, and select "{name}".',
    ]
    if entry.new_key_staged or entry.policy.rotates_key:
        steps.append(
            f'Choose Edit and upload the new certificate (tokenwarden keys export "{name}"{org} '
            f"-o {_file(name)}.pem, once the key is staged), then save."
        )
    steps += [
        "Choose Download Token and confirm.",
        f'Install it: tokenwarden tokens install "{name}"{org} <downloaded file> '
        "--downloaded-by <your Managed Apple Account>",
    ]
    return [f"{number}. {step}" for number, step in enumerate(steps, 1)]


def _file(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name) or "server"

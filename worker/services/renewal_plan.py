"""The renewal plan of the estate (worker/rules/renewal_plan.py), read in batches: the servers a
few hundred at a time (store.listings' server_batches), then for each batch their current
tokens, their policies in force and their tokens' replacements, each in one round trip. Only
the entries in the window are kept, so a million tokens are read without being held.

`tokens due` prints the plan; `tokens due --ical` and the intake's `/calendar/renewals.ics`
serve it as an iCalendar feed (worker/renewal_feed.py).
"""

from __future__ import annotations

from datetime import datetime

from worker.errors import InvalidInput, NotFound
from worker.names import clean_label, name_key
from worker.records import TOKEN_CURRENT, Server
from worker.rules.renewal_plan import PlanEntry, in_window, plan_entry, plan_order
from worker.store.listings import BATCH
from worker.store.protocol import ServerListing, Store

#: Organizations an unknown --org's error names, at most.
ORGS_SHOWN = 10


def renewal_plan(
    store: Store,
    listings: ServerListing,
    now: datetime,
    *,
    within_days: int | None = None,
    org: str | None = None,
    batch: int = BATCH,
) -> list[PlanEntry]:
    """Each server's next renewal, soonest due first: those due by now + within_days (None:
    all), of organization `org` only when given (one no server is in: NotFound). The servers
    are read `batch` at a time."""
    wanted = _org_key(org)
    entries: dict[str, PlanEntry] = {}
    orgs: dict[str, str] = {}
    for servers in listings.server_batches(batch):
        orgs.update((name_key(s.org), s.org) for s in servers if s.org)
        if wanted is not None:
            servers = [s for s in servers if name_key(s.org) == wanted]
        chosen = [s for s in servers if s.token_id]
        for entry in _plan_batch(store, chosen, now):
            if in_window(entry, now, within_days):
                entries[entry.server_id] = entry  # a server read twice by HSCAN counts once
    if wanted is not None and wanted not in orgs:
        raise _unknown_org(org or "", orgs)
    return sorted(entries.values(), key=plan_order)


def renewal_feed(
    store: Store,
    listings: ServerListing,
    now: datetime,
    *,
    within_days: int | None = None,
    org: str | None = None,
) -> bytes:
    """The plan as an iCalendar feed: one event per server with a current token."""
    # Imported here: every command loads this module, and the icalendar library takes 40 ms.
    from worker.renewal_feed import render_feed

    entries = renewal_plan(store, listings, now, within_days=within_days, org=org)
    return render_feed(entries, now, org=org)


def _plan_batch(store: Store, servers: list[Server], now: datetime) -> list[PlanEntry]:
    if not servers:
        return []
    tokens = store.tokens_by_id({s.token_id for s in servers if s.token_id})
    policies = store.policies.effective_for(servers)
    replacements = store.events.replacements_by_token(set(tokens))
    entries = []
    for server in servers:
        token = tokens.get(server.token_id or "")
        if token is None or token.status != TOKEN_CURRENT:
            continue  # removed or superseded between the reads
        entries.append(
            plan_entry(server, token, policies[server.id], replacements.get(token.id), now)
        )
    return entries


def _org_key(org: str | None) -> str | None:
    if org is None:
        return None
    cleaned = clean_label(org, what="organization")
    if not cleaned:
        raise InvalidInput("give the organization's name after --org, as `servers list` shows it")
    return name_key(cleaned)


def _unknown_org(org: str, orgs: dict[str, str]) -> NotFound:
    shown = ", ".join(sorted(repr(o) for o in orgs.values())[:ORGS_SHOWN]) or "none yet"
    return NotFound(
        f"no server is registered in organization {org.strip()!r} (organizations: {shown}); "
        "give the name as `servers list` shows it"
    )

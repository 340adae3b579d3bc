"""The replacement rule: one open replacement per token, which later causes extend.

A cause that dooms a token opens its replacement, or merges into the open one (bounded: see
merge_reason). The certificate to upload stays with the replacement whatever reason comes
later. `replacement_required` is sent when the replacement opens and again only when there is
something new to tell (see notifies). Installing a newer token resolves it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from worker import outgoing
from worker.records import Server, Token
from worker.rules.decision import (
    REPLACEMENT,
    VERSION,
    Decision,
    Doomed,
    Guard,
    ReplacementChange,
    Resolution,
)
from worker.rules.facts import OPEN, RESOLVED, ReplacementFacts, cause_change, next_version
from worker.rules.replacement import (
    SAME,
    ReplacementNeeded,
    merge_reason,
    most_urgent,
    notifies,
    totals,
)
from worker.timefmt import format_rfc3339


def guard_replacement(decision: Decision, token_id: str, state: ReplacementFacts) -> None:
    """The decision holds only on the replacement as read (the first read of it, when the
    decision changes it more than once)."""
    if not any(g.record == REPLACEMENT and g.ident == token_id for g in decision.guards):
        decision.guards.append(Guard(REPLACEMENT, token_id, VERSION, state.version))


def replace_token(
    decision: Decision,
    state: ReplacementFacts,
    need: ReplacementNeeded,
    server: Server,
    now: datetime,
) -> ReplacementFacts:
    """Record in `decision` that `need` dooms its token; returns the replacement after it."""
    token = need.token
    guard_replacement(decision, token.id, state)
    decision.doomed.append(Doomed(token.id, need.cause.type))
    reason = outgoing.reason(need)
    entry: dict[str, Any] = {"token": token.id, "server": server.name, "cause": reason["id"]}
    decision.results.append(entry)
    opened = not state.is_open
    merge = merge_reason([] if opened else state.reasons, 0 if opened else state.omitted, reason)
    if merge.change == SAME:
        entry["action"] = "none: same cause already recorded"
        return state
    stored = None if opened else state.certificate
    after = ReplacementFacts(
        status=OPEN,
        opened_at=format_rfc3339(now) if opened else state.opened_at,
        reasons=merge.reasons,
        omitted=merge.omitted,
        certificate=need.certificate if need.certificate is not None else stored,
        version=next_version(state.version, *cause_change(need.cause, now)),
    )
    changed = need.certificate is not None and need.certificate != stored
    decision.replacements.append(
        ReplacementChange(token.id, token.server_id, opened, after, certificate_changed=changed)
    )
    entry["action"] = "opened" if opened else f"reason {merge.change}"
    if notifies(opened=opened, change=merge.change, certificate_changed=changed):
        decision.outgoing.append(_required(need, server, now, after, merge.reason))
    else:
        entry["action"] += " (nothing new to tell)"
    return after


def _required(
    need: ReplacementNeeded,
    server: Server,
    now: datetime,
    after: ReplacementFacts,
    reason: dict[str, Any],
) -> dict[str, Any]:
    """`replacement_required`: the reason this cause ended in, the reasons kept, and totals."""
    event = outgoing.replacement_required(need, server, now)
    event["data"].update(
        certificate=after.certificate,
        reason=reason,
        reasons=after.reasons,
        urgency=most_urgent(after.reasons),
        opened_at=after.opened_at,
        **totals(after.reasons, after.omitted),
    )
    return event


def resolve_replacement(
    decision: Decision,
    state: ReplacementFacts,
    server: Server,
    old: Token,
    new: Token,
    now: datetime,
) -> ReplacementFacts:
    """Record in `decision` that `new` replaced `old`: its replacement, if open, is closed, and
    `token.replaced` is sent with what the replacement held."""
    guard_replacement(decision, old.id, state)
    event = outgoing.replaced(server, old, new, now)
    entry: dict[str, Any] = {"token": old.id, "server": server.name}
    decision.results.append(entry)
    decision.outgoing.append(event)
    if not state.is_open:
        entry["action"] = "replaced (no replacement was open)"
        return state
    closed: dict[str, Any] = totals(state.reasons, state.omitted)
    closed.update(reasons=state.reasons, opened_at=state.opened_at)
    event["data"]["closed_replacement"] = closed
    version = next_version(state.version, old.id, new.id, now.isoformat())
    after = replace(state, status=RESOLVED, version=version)
    decision.resolutions.append(Resolution(old.id, by=new.id, state=after))
    entry["action"] = "replacement resolved"
    return after

"""Which server tokens must be replaced, and why: pure functions of (cause, tokens, now).

A *cause* is an event that can kill a token: the downloader's password changed or they left
(user causes), or a new key or a new token was made for the server (server causes). A token is
affected by a cause when it is the current token and was downloaded strictly before the cause
happened; a token downloaded afterwards already reflects it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from events import catalog
from worker.names import user_key
from worker.records import TOKEN_CURRENT, Token


@dataclass(frozen=True)
class Cause:
    """The event that makes a token replaceable, as recorded in a replacement's reasons."""

    type: str
    id: str
    source: str
    time: datetime

    @property
    def urgency(self) -> catalog.Urgency:
        return catalog.URGENCY_BY_TYPE[self.type]


@dataclass(frozen=True)
class ReplacementNeeded:
    token: Token
    cause: Cause
    #: PEM of the certificate the admin must upload (a staged key tokenwarden holds), if any.
    certificate: str | None = None


#: A token downloaded this little before a new-token or new-key event is taken to be the one
#: the event announces: the portal names files to the second, and whatever reports the event
#: stamps it a little later. (User causes have no margin: a false alarm beats a dead token.)
SERVER_CAUSE_MARGIN = timedelta(minutes=2)


def affected(token: Token, cause: Cause) -> bool:
    cutoff = cause.time - SERVER_CAUSE_MARGIN if cause.type in catalog.SERVER_EVENTS else cause.time
    return token.status == TOKEN_CURRENT and token.downloaded_at < cutoff


def for_user_cause(cause: Cause, user: str, tokens: Iterable[Token]) -> list[ReplacementNeeded]:
    """Password change or departure of `user`: every current token they downloaded before it.

    An unknown user simply has no tokens: nothing is affected, and that is not an error.
    """
    wanted = user_key(user)
    return [
        ReplacementNeeded(token=token, cause=cause)
        for token in sorted(tokens, key=lambda t: t.id)
        if user_key(token.downloaded_by) == wanted and affected(token, cause)
    ]


def for_server_cause(
    cause: Cause, current_token: Token | None, staged_certificate: str | None
) -> list[ReplacementNeeded]:
    """A new key or a new token for the server: its installed token from before it.

    For a new key, the certificate of the staged key (when tokenwarden holds one) travels with
    the decision: it is the file the admin must upload before downloading a new token.
    """
    if current_token is None or not affected(current_token, cause):
        return []
    certificate = staged_certificate if cause.type == catalog.KEY_REGENERATED else None
    return [ReplacementNeeded(token=current_token, cause=cause, certificate=certificate)]


def for_new_token(
    token: Token, recorded: Iterable[Cause], staged_certificate: str | None = None
) -> list[ReplacementNeeded]:
    """A token being installed that was downloaded before a cause already seen (events can
    arrive before the token they doom is installed): it must be replaced from the start."""
    return [
        ReplacementNeeded(
            token=token,
            cause=cause,
            certificate=staged_certificate if cause.type == catalog.KEY_REGENERATED else None,
        )
        for cause in sorted(recorded, key=lambda c: c.time)
        if affected(token, cause)
    ]


# ---- a replacement's reasons: merged, bounded ------------------------------------------------
#
# A reason is the JSON-ready dict the store keeps in a replacement and sends in outgoing events
# (see worker.outgoing.reason): `type`, `subject`, `urgency`, `rank`; `id`, `source`, `time` of
# the first event of its kind; `count`; and `last` ({`id`, `source`, `time`}) of the latest.
# worker/rules/replacing.py applies them to a replacement (tests/test_reason_merging.py: tables).

#: Distinct reasons a replacement keeps; causes beyond them are only counted (`omitted`).
MAX_REASONS = 20

#: What merging one more cause into a replacement's reasons did.
SAME = "same"  # that very event is already recorded: nothing changes
MERGED = "merged"  # a reason of its kind exists: its count and first/last seen moved
ADDED = "added"  # a new kind of reason, kept
DISPLACED = "displaced"  # a new kind, more urgent than one kept: it took that one's place
OMITTED = "omitted"  # a new kind, but the reasons are full of more urgent ones: only counted


def reason_subject(cause: Cause, token: Token) -> str:
    """Who or what the cause is about: the downloader for a user cause, the server for a
    server cause, the token itself for the scheduler's own (expiry). Two causes say the same
    thing when their type and subject are equal."""
    if cause.type in catalog.USER_EVENTS:
        return user_key(token.downloaded_by)
    if cause.type in catalog.SERVER_EVENTS:
        return token.server_id
    return token.id


def _same_kind(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # A reason recorded before reasons had subjects matches by type alone.
    subjects = (a.get("subject"), b.get("subject"))
    return a["type"] == b["type"] and (None in subjects or subjects[0] == subjects[1])


def _is_same_event(reason: dict[str, Any], new: dict[str, Any]) -> bool:
    ends = (reason, reason.get("last") or reason)
    return any((end["source"], end["id"]) == (new["source"], new["id"]) for end in ends)


def _absorb(reason: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`reason` with one more cause of its kind: counted; first and last seen by time (times
    are RFC 3339 UTC to the second, so they compare as text). On a tie the first stays first
    and the newer arrival becomes the last."""
    merged = dict(reason, count=reason["count"] + new["count"])
    if new["time"] < reason["time"]:
        merged.update(id=new["id"], source=new["source"], time=new["time"])
    if new["last"]["time"] >= reason["last"]["time"]:
        merged["last"] = dict(new["last"])
    return merged


@dataclass(frozen=True)
class Merge:
    reasons: list[dict[str, Any]]
    #: Causes counted but not kept as reasons (the reasons were full).
    omitted: int
    change: str
    #: The reason the new cause ended in (for OMITTED, the new cause's own, not kept).
    reason: dict[str, Any]


def merge_reason(
    reasons: list[dict[str, Any]], omitted: int, new: dict[str, Any], cap: int = MAX_REASONS
) -> Merge:
    """Record one more cause in a replacement's reasons, keeping them bounded.

    When `cap` reasons are kept, the first stays (it is what made the token die); a new kind
    more urgent than the least urgent of the others takes the place of the latest such one,
    so the reasons kept always show the replacement's real urgency; else it is only counted.
    """
    for reason in reasons:
        if _is_same_event(reason, new):
            return Merge(reasons, omitted, SAME, reason)
    for index, reason in enumerate(reasons):
        if _same_kind(reason, new):
            merged = _absorb(reason, new)
            kept = [*reasons[:index], merged, *reasons[index + 1 :]]
            return Merge(kept, omitted, MERGED, merged)
    if len(reasons) < cap:
        return Merge([*reasons, new], omitted, ADDED, new)
    # The least urgent after the first, the latest of equals (max by (-rank, index)).
    victim = max(range(1, len(reasons)), key=lambda i: (-reasons[i]["rank"], i), default=None)
    if victim is not None and new["rank"] > reasons[victim]["rank"]:
        kept = [*reasons[:victim], *reasons[victim + 1 :], new]
        return Merge(kept, omitted + reasons[victim]["count"], DISPLACED, new)
    return Merge(reasons, omitted + new["count"], OMITTED, new)


def notifies(*, opened: bool, change: str, certificate_changed: bool) -> bool:
    """Whether recording a cause sends a new `replacement_required`: once when the replacement
    opens, and again only for something new to the reader (a new kind of reason, which is also
    the only way the urgency rises, or a new certificate to upload); never for one more cause
    of a kind already told."""
    if change == SAME:
        return False
    return opened or change in (ADDED, DISPLACED) or certificate_changed


def totals(reasons: list[dict[str, Any]], omitted: int) -> dict[str, int]:
    """The counts an outgoing event carries beside its reasons."""
    return {
        "reason_count": len(reasons),
        "event_count": sum(r["count"] for r in reasons) + omitted,
        "omitted_events": omitted,
    }


def most_urgent(reasons: list[dict[str, Any]]) -> str:
    """The urgency of a replacement: its most urgent reason's (the first of equals)."""
    return max(reasons, key=lambda r: r["rank"])["urgency"]


def load_reasons(
    reasons: list[dict[str, Any]], omitted: int, cap: int = MAX_REASONS
) -> tuple[list[dict[str, Any]], int]:
    """Reasons as stored. Those recorded before merging existed (no `count`: one entry per
    event) are merged on the way in, once."""
    if all("count" in r for r in reasons):
        return reasons, omitted
    merged: list[dict[str, Any]] = []
    for reason in reasons:
        if "count" not in reason:
            first = {"id": reason["id"], "source": reason["source"], "time": reason["time"]}
            reason = {**reason, "count": 1, "last": first}
        step = merge_reason(merged, omitted, reason, cap)
        merged, omitted = step.reasons, step.omitted
    return merged, omitted

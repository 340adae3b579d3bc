"""The outgoing events a decision produces, as templates (worker/rules/replacing.py fills in
a replacement_required's reason as merged, the replacement's reasons (bounded), their totals,
its urgency and when it was opened).

Pure: records in, JSON-ready dicts out. Event ids are stable for the same decision, so a
repeated decision yields the same id and receivers can de-duplicate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from events import catalog
from events.cloudevent import outgoing_event, stable_id
from worker.records import Server, Token
from worker.rules.replacement import ReplacementNeeded, reason_subject
from worker.timefmt import format_rfc3339


def reason(need: ReplacementNeeded) -> dict[str, Any]:
    """One entry of a replacement's `reasons`, as its first cause (see the reason rules in
    worker.rules.replacement: worker.rules.replacing merges it with the reasons recorded)."""
    cause = need.cause
    urgency = cause.urgency
    seen = {"id": cause.id, "source": cause.source, "time": format_rfc3339(cause.time)}
    return {
        "type": cause.type,
        "subject": reason_subject(cause, need.token),
        **seen,
        "urgency": urgency.name,
        "rank": urgency.rank,
        "count": 1,
        "last": dict(seen),
    }


def _token_facts(server: Server, token: Token) -> dict[str, Any]:
    return {
        "server": server.name,
        "org": server.org or None,
        "server_id": server.id,
        "token_id": token.id,
        "downloaded_by": token.downloaded_by,
        "downloaded_at": format_rfc3339(token.downloaded_at),
        "expires_at": format_rfc3339(token.expires_at),
    }


def replacement_required(need: ReplacementNeeded, server: Server, now: datetime) -> dict[str, Any]:
    data = _token_facts(server, need.token)
    data["certificate"] = need.certificate  # the PEM to upload, for a key change
    return outgoing_event(
        catalog.REPLACEMENT_REQUIRED,
        event_id=stable_id(
            catalog.REPLACEMENT_REQUIRED, need.token.id, need.cause.source, need.cause.id
        ),
        subject=server.name,
        time=now,
        data=data,
    )


def replaced(server: Server, old: Token, new: Token, now: datetime) -> dict[str, Any]:
    data = _token_facts(server, old)
    data.update(
        {
            "replaced_by_token_id": new.id,
            "new_downloaded_by": new.downloaded_by,
            "new_downloaded_at": format_rfc3339(new.downloaded_at),
            "new_expires_at": format_rfc3339(new.expires_at),
            "closed_replacement": None,
        }
    )
    return outgoing_event(
        catalog.REPLACED,
        event_id=stable_id(catalog.REPLACED, old.id, new.id),
        subject=server.name,
        time=now,
        data=data,
    )


def rejected(
    server: Server, token: Token, code: str | None, now: datetime, detail: str
) -> dict[str, Any]:
    """Apple refused the installed token: sent once per token, the first time."""
    data = _token_facts(server, token)
    data.update(
        {
            "apple_code": code,
            "detail": detail,
            "first_seen_at": format_rfc3339(now),
            "server_uuid": token.apple.server_uuid,
        }
    )
    return outgoing_event(
        catalog.TOKEN_REJECTED,
        event_id=stable_id(catalog.TOKEN_REJECTED, token.id),
        subject=server.name,
        time=now,
        data=data,
        source=catalog.SOURCE_APPLE,
    )


def terms(
    event_type: str, server: Server, token: Token, since: datetime, now: datetime
) -> dict[str, Any]:
    """New terms wait in the portal since `since` (terms_not_accepted), or the first check
    after them passed (terms_accepted): one of each per episode, named by when it began."""
    data = {
        "server": server.name,
        "org": server.org or None,
        "server_id": server.id,
        "server_uuid": token.apple.server_uuid,
        "apple_org": server.apple_org,
        "since": format_rfc3339(since),
    }
    if event_type == catalog.TERMS_ACCEPTED:
        data["accepted_by"] = format_rfc3339(now)
    return outgoing_event(
        event_type,
        event_id=stable_id(event_type, server.id, format_rfc3339(since)),
        subject=server.name,
        time=now,
        data=data,
        source=catalog.SOURCE_APPLE,
    )

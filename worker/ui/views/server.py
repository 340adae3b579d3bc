"""One server's page: where it stands (the `status` row), its history (tokens installed, the
causes received and what was decided, the warnings sent, the deliveries), and how to renew it
in Apple School Manager or Apple Business Manager."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.names import name_key
from worker.notify.records import Delivery
from worker.records import Replacement, Server, Token
from worker.rules import status
from worker.rules.status import Row
from worker.timefmt import format_rfc3339
from worker.ui.reads import ServerHistory, Settings


@dataclass(frozen=True)
class ServerPage:
    row: Row
    described: dict[str, Any]
    history: ServerHistory
    tokens: list[dict[str, Any]]
    replacements: list[dict[str, Any]]
    causes: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]
    #: The command that installs the next token, and whether a new key pair waits (its
    #: certificate must be uploaded before the token is downloaded).
    install_command: str
    staged: bool


def server_page(history: ServerHistory, settings: Settings) -> ServerPage:
    server, token = history.server, history.token
    replacement = history.replacements.get(token.id) if token else None
    if replacement is not None and replacement.status != "open":
        replacement = None
    row = status.row_for(
        server, token, replacement, settings.now, settings.thresholds,
        settings.apple_interval_s, history.policy,
    )  # fmt: skip
    token_ids = {t.id for t in history.tokens}
    about = [e for e in history.audit if concerns(e, server, token_ids)]
    return ServerPage(
        row=row,
        described=row.describe(),
        history=history,
        tokens=[_token(t, settings.now) for t in reversed(history.tokens)],
        replacements=[_replacement(r) for r in _newest_first(history.replacements.values())],
        causes=[_cause(e, server, token_ids) for e in about if e.get("kind") != "scan"],
        warnings=[_warning(e) for e in about if e.get("kind") == "scan"],
        deliveries=[_delivery(d, history.subscriptions) for d in history.deliveries],
        install_command=install_command(server),
        staged=server.staged_key_id is not None,
    )


def concerns(entry: dict[str, Any], server: Server, token_ids: set[str]) -> bool:
    """Whether an audit entry is about `server`: it names the server's id or one of its
    tokens, or a decision of it does, or (an incoming event about a server) its name."""
    event = entry.get("event")
    if not isinstance(event, dict):
        return False
    if event.get("server_id") == server.id or event.get("token_id") in token_ids:
        return True
    if any(d.get("token") in token_ids for d in _decisions(entry)):
        return True
    data = event.get("data") if isinstance(event.get("data"), dict) else event
    named, org = data.get("server"), data.get("org") or ""
    if not isinstance(named, str) or not isinstance(org, str):
        return False
    return name_key(named) == name_key(server.name) and (
        not org or name_key(org) == name_key(server.org)
    )


def install_command(server: Server) -> str:
    """`tokenwarden tokens install` for the server, quoted for a POSIX shell."""
    org = f" --org {shlex.quote(server.org)}" if server.org else ""
    return f"tokenwarden tokens install {shlex.quote(server.name)}{org} DOWNLOADED_TOKEN.p7m"


def _decisions(entry: dict[str, Any]) -> list[dict[str, Any]]:
    found = entry.get("decisions")
    return [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []


def _short(event_type: object) -> str:
    return str(event_type or "?").rsplit(".", 1)[-1].replace("_", " ")


def _cause(entry: dict[str, Any], server: Server, token_ids: set[str]) -> dict[str, Any]:
    event, kind = entry["event"], entry.get("kind", "")
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    if kind == "event":
        what, about = _short(event.get("type")), data.get("user") or data.get("server") or ""
    elif kind == "apple" and isinstance(event.get("apple"), list):
        what, about = "apple: " + ", ".join(map(str, event["apple"])), ""
    elif kind == "install":
        what, about = "token installed", f"downloaded by {event.get('downloaded_by', '?')}"
    else:
        what, about = _short(event.get("type") or kind), ""
    mine = [
        d for d in _decisions(entry)
        if d.get("token") in token_ids or d.get("server") in (None, server.name)
    ]  # fmt: skip
    decided = "; ".join(str(d.get("action", "?")) for d in mine)
    return {
        "at": entry.get("at"),
        "kind": kind,
        "what": what,
        "about": about,
        "source": event.get("source") or "",
        "decision": decided or entry.get("note") or "no effect",
    }


def _warning(entry: dict[str, Any]) -> dict[str, Any]:
    event = entry["event"]
    if "type" in event:
        what = _short(event["type"])
        detail = f"{event.get('days_left', '?')} days left"
    else:  # the renewal its policy's renew-before opened
        what = "renewal due"
        detail = f"due at {event.get('due_at', '?')}"
    return {"at": entry.get("at"), "what": what, "detail": detail}


def _token(token: Token, now: datetime) -> dict[str, Any]:
    return {
        "id": token.id,
        "status": token.status_at(now),
        "installed_at": format_rfc3339(token.installed_at),
        "downloaded_by": token.downloaded_by,
        "downloaded_at": format_rfc3339(token.downloaded_at),
        "expires_at": format_rfc3339(token.expires_at),
        "superseded_at": format_rfc3339(token.superseded_at) if token.superseded_at else None,
    }


def _newest_first(replacements: Iterable[Replacement]) -> list[Replacement]:
    return sorted(replacements, key=lambda r: r.opened_at, reverse=True)


def _replacement(replacement: Replacement) -> dict[str, Any]:
    return {
        "token_id": replacement.token_id,
        "status": replacement.status,
        "opened_at": replacement.opened_at,
        "resolved_at": replacement.resolved_at,
        "urgency": replacement.most_urgent.get("urgency"),
        "because": replacement.label(times=True),
        "causes": replacement.event_count,
    }


def _delivery(delivery: Delivery, subscriptions: dict[str, str]) -> dict[str, Any]:
    described = delivery.describe()
    described["to"] = subscriptions.get(delivery.subscription_id, "(removed)")
    return described

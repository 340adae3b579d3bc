"""The owners of a server (the addresses its rotation policy in force names,
worker/rules/policy.py) are the people told about its events: every outgoing event about a
server is stamped at dispatch with `data.owners`, so ticketing systems can assign them, and,
when SMTP is set, each owner is sent the event by e-mail.

An owner is not a stored subscription. Its deliveries go to a synthetic one,
`own_<sha256 of the case-folded address, 16 hex digits>`, so the same event for the same owner
is always the same delivery (a re-dispatch after a crash sends nothing twice), and the
subscription's attempt slots, parked queue and retries work as for any other. The address is
the one the policy named when the event was dispatched, kept in the delivery (never taken from
an event): an owner handed over meanwhile is still told what happened while they owned it.

A policy change tells the owners before and after it: those the changed layer named before,
and those it names now (an organization's or the global change too, which is about no single
server).

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from events.catalog import POLICY_CHANGED
from worker.notify.subscriptions import EMAIL, Subscription

OWNER_PREFIX = "own_"

#: The field of an outgoing event's data that names the owners.
OWNERS_FIELD = "owners"


def owner_subscription_id(address: str) -> str:
    digest = hashlib.sha256(address.casefold().encode()).hexdigest()
    return f"{OWNER_PREFIX}{digest[:16]}"


def is_owner(subscription_id: str) -> bool:
    return subscription_id.startswith(OWNER_PREFIX)


def server_of(event: Mapping[str, Any]) -> str | None:
    """The id of the server an outgoing event is about, if it is about one."""
    data = event.get("data")
    server_id = data.get("server_id") if isinstance(data, Mapping) else None
    return server_id if isinstance(server_id, str) and server_id else None


def about_a_server(event: Mapping[str, Any]) -> bool:
    """Whether the event's data has a `server_id` (None for an organization's or the global
    policy change): those are stamped with `owners`."""
    data = event.get("data")
    return isinstance(data, Mapping) and "server_id" in data


def with_owners(
    event: dict[str, Any], owners_by_server: Mapping[str, tuple[str, ...]]
) -> dict[str, Any]:
    """The event with `data.owners` as the policies read say (whatever the event held), or
    the event as it is when it is not about a server."""
    if not about_a_server(event):
        return event
    owners = list(owners_by_server.get(server_of(event) or "", ()))
    if event.get("type") == POLICY_CHANGED:
        owners = _merged(owners, *_layer_owners(event["data"]))
    return {**event, "data": {**event["data"], OWNERS_FIELD: owners}}


def _layer_owners(data: Mapping[str, Any]) -> list[list[str]]:
    """The owners the changed layer named before and names now."""
    found = []
    for side in ("previous", "policy"):
        layer = data.get(side)
        named = layer.get("owners") if isinstance(layer, Mapping) else None
        if isinstance(named, list):
            found.append([a for a in named if isinstance(a, str)])
    return found


def _merged(*lists: list[str]) -> list[str]:
    """The addresses once each (compared ignoring case), in order."""
    seen: dict[str, str] = {}
    for address in (a for addresses in lists for a in addresses):
        seen.setdefault(address.casefold(), address)
    return list(seen.values())


def owner_subscriptions(
    event: dict[str, Any],
    owners: Iterable[str],
    subscriptions: Iterable[Subscription],
    now: datetime,
) -> list[Subscription]:
    """One synthetic e-mail subscription per owner, but none for an owner already sent the event
    by an active e-mail subscription of their own."""
    subscribed = {s.target.casefold() for s in subscriptions if s.kind == EMAIL and s.wants(event)}
    return [
        owner_subscription(address, event["type"], now)
        for address in owners
        if address.casefold() not in subscribed
    ]


def owner_subscription(address: str, event_type: str, created_at: datetime) -> Subscription:
    return Subscription(owner_subscription_id(address), EMAIL, address, (event_type,), created_at)


def owner_named(owners: Iterable[str], subscription_id: str) -> str | None:
    """The address among `owners` that the synthetic subscription is for, if still there."""
    return next((a for a in owners if owner_subscription_id(a) == subscription_id), None)

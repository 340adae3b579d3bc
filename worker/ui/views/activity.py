"""The activity page: the events received lately, by source; the events that could not be
handled (dead letters); the deliveries failing or failed; the directories asked on a schedule
and how their rounds go."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.notify.records import Delivery
from worker.timefmt import format_rfc3339
from worker.ui.reads import LISTED, Activity

#: Longest part of a dead letter's payload shown (the CLI's `events dead` shows less).
PAYLOAD_CHARS = 200

#: Audit entries that are events received (from a source), not decisions of our own.
RECEIVED = ("event", "ignored")


@dataclass(frozen=True)
class SourceCount:
    source: str
    received: int
    ignored: int
    last_at: str


@dataclass(frozen=True)
class ActivityPage:
    by_source: list[SourceCount]
    #: The audit entries summed up (the window), and the newest received events.
    window: int
    events: list[dict[str, Any]]
    dead: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    retrying: list[dict[str, Any]]
    sources: list[dict[str, Any]]


def activity_page(activity: Activity) -> ActivityPage:
    received = [e for e in activity.audit if e.get("kind") in RECEIVED]
    return ActivityPage(
        by_source=by_source(received),
        window=len(activity.audit),
        events=[_event(e) for e in received[:LISTED]],
        dead=[_dead(d) for d in activity.dead],
        failed=[_delivery(d, activity.subscriptions) for d in activity.failed],
        retrying=[_delivery(d, activity.subscriptions) for d in activity.retrying],
        sources=[
            {
                "name": name,
                "kind": kind,
                "last_success": state.last_success,
                "failing_since": state.failing_since,
                "error": state.error,
            }
            for name, kind, state in activity.sources
        ],
    )


def by_source(received: list[dict[str, Any]]) -> list[SourceCount]:
    """Events received (newest first) counted by their `source`, the busiest first."""
    counts: dict[str, list[Any]] = {}
    for entry in received:
        event = entry.get("event") if isinstance(entry.get("event"), dict) else {}
        source = str(event.get("source") or "?")
        found = counts.setdefault(source, [0, 0, entry.get("at") or ""])
        found[0 if entry.get("kind") == "event" else 1] += 1
    ordered = sorted(counts.items(), key=lambda item: (-(item[1][0] + item[1][1]), item[0]))
    return [SourceCount(source, c[0], c[1], c[2]) for source, c in ordered]


def _event(entry: dict[str, Any]) -> dict[str, Any]:
    event = entry.get("event") if isinstance(entry.get("event"), dict) else {}
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    decisions = entry.get("decisions") if isinstance(entry.get("decisions"), list) else []
    decided = "; ".join(
        f"{d.get('server', '?')}: {d.get('action', '?')}" for d in decisions if isinstance(d, dict)
    )
    return {
        "at": entry.get("at"),
        "source": event.get("source") or "?",
        "type": str(event.get("type") or "?").rsplit(".", 1)[-1].replace("_", " "),
        "about": data.get("user") or data.get("server") or event.get("subject") or "",
        "ignored": entry.get("kind") == "ignored",
        "decision": decided or entry.get("note") or "no effect",
    }


def _dead(letter: dict[str, Any]) -> dict[str, Any]:
    payload = str(letter.get("payload") or "")
    cut = len(payload) > PAYLOAD_CHARS or letter.get("truncated") == "1"
    return {
        "at": letter.get("at"),
        "reason": letter.get("reason"),
        "payload": payload[:PAYLOAD_CHARS] + ("…" if cut else ""),
    }


def _delivery(delivery: Delivery, subscriptions: dict[str, str]) -> dict[str, Any]:
    described = delivery.describe()
    described["to"] = subscriptions.get(delivery.subscription_id, "(removed)")
    described["created_at"] = format_rfc3339(delivery.created_at)
    return described

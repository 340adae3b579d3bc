"""Handling incoming events: decode, read the facts, decide (worker/rules/events.py, pure),
hand the decision to the store, which applies it atomically.

This is what the actor calls; it is kept free of dramatiq so tests and the scheduler can drive
it directly. A batch is decided in a few round trips whatever its size: the facts for all its
events are read in three pipelined round trips, and their decisions applied in one (each one
atomic on its own; one whose facts moved is decided again alone). A malformed event goes to the
dead letters with its reason and never stops the batch it came in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
import structlog

from events import catalog
from events.cloudevent import CloudEvent, MalformedEvent, check_not_future, parse_event
from worker.errors import ConcurrentChange
from worker.names import name_key, user_key
from worker.registry import key_offer
from worker.rules.decision import Decision
from worker.rules.events import advance, decide_event
from worker.rules.facts import EventFacts, KeyOffer
from worker.store.protocol import Applied, Store

log = structlog.get_logger(__name__)

#: Times a decision is made again on fresh state when the state moved under it.
DECISION_ATTEMPTS = 10

#: Times a batch is decided again with the key pairs its decisions wanted (a server may want
#: one only on the facts read again).
KEY_ROUNDS = 3


@dataclass(frozen=True)
class Outcome:
    event_id: str
    type: str
    outcome: str  # applied | duplicate | dead
    decisions: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


class EventHandler:
    def __init__(self, store: Store):
        self.store = store
        self.events = store.events

    def handle_batch(
        self,
        payloads: list[Any],
        *,
        received_at: datetime,
        now: datetime,
        message_id: str | None = None,
    ) -> list[Outcome]:
        outcomes: list[Outcome | None] = []
        valid: list[tuple[int, Any, CloudEvent]] = []
        for payload in payloads:
            try:
                event = parse_event(payload)
                check_not_future(event, now)
            except MalformedEvent as exc:
                outcomes.append(self._dead(payload, str(exc), now, message_id))
                continue
            valid.append((len(outcomes), payload, event))
            outcomes.append(None)
        try:
            decisions = self.decide_many([e for _, _, e in valid], received_at=received_at, now=now)
            applied = self.events.apply_many(decisions)
        except (redis.RedisError, ConcurrentChange):
            raise  # passing trouble: the whole message is retried, duplicates are dropped
        except Exception:
            # Something in the batch defeats batch planning: take the events one by one, so
            # only the culprit is dead-lettered.
            log.exception("batch_planning_failed")
            decisions, applied = [], []
        for position, (index, payload, event) in enumerate(valid):
            if position < len(applied) and applied[position].outcome != "retry":
                outcomes[index] = self._done(event, decisions[position], applied[position])
                continue
            try:
                outcomes[index] = self.handle(event, received_at=received_at, now=now)
            except (redis.RedisError, ConcurrentChange):
                raise
            except Exception as exc:
                # Bad input that slipped through validation must not hold back the batch.
                log.exception("event_failed", event_id=event.id)
                reason = f"could not be handled ({type(exc).__name__}); see the worker log"
                outcomes[index] = self._dead(payload, reason, now, message_id)
        return [o for o in outcomes if o is not None]

    def handle(self, event: CloudEvent, *, received_at: datetime, now: datetime) -> Outcome:
        """One event alone, decided again until it applies on the facts it was made on."""
        for _ in range(DECISION_ATTEMPTS):
            decision = self.decide(event, received_at=received_at, now=now)
            applied = self.events.apply(decision)
            if applied.outcome != "retry":
                return self._done(event, decision, applied)
        raise ConcurrentChange(f"event {event.id}: the state kept changing under the decision")

    def decide(self, event: CloudEvent, *, received_at: datetime, now: datetime) -> Decision:
        return self.decide_many([event], received_at=received_at, now=now)[0]

    def decide_many(
        self, events: Sequence[CloudEvent], *, received_at: datetime, now: datetime
    ) -> list[Decision]:
        """The decisions of a batch, read in three round trips. Each event is decided on the
        facts as the ones before it leave them (they are applied in order), so events about
        one user or token in a batch do not undo each other."""
        users = {user_key(e.user()) for e in events if e.type in catalog.USER_EVENTS}
        names = {name_key(e.server()[0]) for e in events if e.type in catalog.SERVER_EVENTS}
        rotated = {name_key(e.server()[0]) for e in events if e.type == catalog.KEY_REGENERATED}
        offers: dict[str, KeyOffer] = {}
        for _ in range(KEY_ROUNDS):
            facts = self.store.event_facts(users, names, rotated)  # read for this batch alone
            facts.key_offers.update({s: o for s, o in offers.items() if s in facts.servers})
            decisions = self._decide_in_order(facts, events, received_at, now)
            wanted = {s for d in decisions for s in d.keys_wanted} - offers.keys()
            if not wanted:
                break
            # Policies that rotate keys with a password change or departure want key pairs:
            # made here (never by a rule), then the batch is decided again with them.
            for server_id in sorted(wanted & facts.servers.keys()):
                offers[server_id] = key_offer(self.store, facts.servers[server_id], now)
        return decisions

    @staticmethod
    def _decide_in_order(
        facts: EventFacts, events: Sequence[CloudEvent], received_at: datetime, now: datetime
    ) -> list[Decision]:
        decisions = []
        for event in events:
            decision = decide_event(facts, event, now, received_at=received_at)
            decisions.append(decision)
            advance(facts, decision)
        return decisions

    def _done(self, event: CloudEvent, decision: Decision, applied: Applied) -> Outcome:
        with structlog.contextvars.bound_contextvars(event_id=event.id, event_type=event.type):
            if applied.outcome == "duplicate":
                log.info("event_duplicate_ignored")
            else:
                if event.type in catalog.SERVER_EVENTS and not decision.guards:
                    server, org = event.server()
                    note = decision.note
                    log.warning("event_server_unresolved", server=server, org=org, note=note)
                log.info("event_handled", decisions=applied.results, note=decision.note or None)
        return Outcome(
            event_id=event.id,
            type=event.type,
            outcome=applied.outcome,
            decisions=applied.results,
            note=decision.note,
        )

    def _dead(self, payload: Any, reason: str, now: datetime, message_id: str | None) -> Outcome:
        self.events.record_dead(payload, reason, now, message_id)
        log.warning("event_dead_lettered", reason=reason)
        return Outcome(event_id="", type="", outcome="dead", note=reason)

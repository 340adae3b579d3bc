"""Handling incoming events: decode, read the facts, decide (pure rules), apply atomically.

This is what the actor calls; it is kept free of dramatiq so tests and the scheduler can drive
it directly. A batch is decided in a few round trips whatever its size: the facts for all its
events are read in three pipelined round trips, and their plans applied in one (each plan is
atomic on its own; one that lost a race is decided again alone). A malformed event goes to the
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
from worker import outgoing
from worker.names import name_key, user_key
from worker.records import Server
from worker.rules.replacement import Cause, ReplacementNeeded, for_server_cause, for_user_cause
from worker.store import keys as k
from worker.store.event_store import Applied, Guard, OpenReplacement, Plan, RecordCause
from worker.store.redis_store import ConcurrentChange, DecisionFacts, RedisStore

log = structlog.get_logger(__name__)

#: Times a decision is made again on fresh state when the state moved under it.
DECISION_ATTEMPTS = 10


@dataclass(frozen=True)
class Outcome:
    event_id: str
    type: str
    outcome: str  # applied | duplicate | dead
    decisions: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


class EventHandler:
    def __init__(self, store: RedisStore):
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
            plans = self.plan_many([e for _, _, e in valid], received_at=received_at, now=now)
            applied = self.events.apply_many(plans)
        except (redis.RedisError, ConcurrentChange):
            raise  # passing trouble: the whole message is retried, duplicates are dropped
        except Exception:
            # Something in the batch defeats batch planning: take the events one by one, so
            # only the culprit is dead-lettered.
            log.exception("batch_planning_failed")
            plans, applied = [], []
        for position, (index, payload, event) in enumerate(valid):
            if position < len(applied) and applied[position].outcome != "retry":
                outcomes[index] = self._done(event, plans[position], applied[position])
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
        """One event alone, decided again until its plan applies on the state it read."""
        for _ in range(DECISION_ATTEMPTS):
            plan = self.plan(event, received_at=received_at, now=now)
            applied = self.events.apply(plan)
            if applied.outcome != "retry":
                return self._done(event, plan, applied)
        raise ConcurrentChange(f"event {event.id}: the state kept changing under the decision")

    def plan(self, event: CloudEvent, *, received_at: datetime, now: datetime) -> Plan:
        return self.plan_many([event], received_at=received_at, now=now)[0]

    def plan_on(
        self, event: CloudEvent, facts: DecisionFacts, *, received_at: datetime, now: datetime
    ) -> Plan:
        """One event's plan on facts the caller read (`keys rotate` decides its key_regenerated
        inside the transaction that stages the key)."""
        return self._plan(event, facts, received_at, now)

    def plan_many(
        self, events: Sequence[CloudEvent], *, received_at: datetime, now: datetime
    ) -> list[Plan]:
        users = {user_key(e.user()) for e in events if e.type in catalog.USER_EVENTS}
        names = {name_key(e.server()[0]) for e in events if e.type in catalog.SERVER_EVENTS}
        rotated = {name_key(e.server()[0]) for e in events if e.type == catalog.KEY_REGENERATED}
        facts = self.store.decision_facts(users, names, rotated)
        return [self._plan(event, facts, received_at, now) for event in events]

    def _plan(
        self, event: CloudEvent, facts: DecisionFacts, received_at: datetime, now: datetime
    ) -> Plan:
        cause = Cause(
            type=event.type, id=event.id, source=event.source, time=event.occurred_at(received_at)
        )
        plan = Plan(
            now=now, seen_key=k.seen(event.key), audit_kind="event", audit_event=event.to_wire()
        )
        if event.type in catalog.USER_EVENTS:
            needs = self._user_needs(plan, cause, event.user(), facts)
        else:
            needs = self._server_needs(plan, cause, *event.server(), facts)
        for need in needs:
            server = facts.servers[need.token.server_id]
            plan.open.append(
                OpenReplacement(
                    token_id=need.token.id,
                    server_id=server.id,
                    server_name=server.name,
                    reason=outgoing.reason(need),
                    outgoing=outgoing.replacement_required(need, server, now),
                )
            )
        return plan

    def _user_needs(
        self, plan: Plan, cause: Cause, user: str, facts: DecisionFacts
    ) -> list[ReplacementNeeded]:
        key = user_key(user)
        tokens = facts.user_tokens.get(key, [])
        plan.guards.append(Guard(k.user(key), k.USER_VERSION, facts.user_versions.get(key, "")))
        plan.causes.append(RecordCause.of_user(key, cause))
        if not tokens:
            plan.note = "no current token was downloaded by this user"
        return [
            n for n in for_user_cause(cause, user, tokens) if n.token.server_id in facts.servers
        ]

    def _server_needs(
        self, plan: Plan, cause: Cause, name: str, org: str | None, facts: DecisionFacts
    ) -> list[ReplacementNeeded]:
        matches: list[Server] = facts.servers_named.get(name_key(name), [])
        if org is not None:
            matches = [s for s in matches if name_key(s.org) == name_key(org)]
        if len(matches) != 1:
            plan.note = (
                f"no server named {name!r}"
                if not matches
                else f"{len(matches)} servers are named {name!r}; the event needs an org"
            )
            log.warning("event_server_unresolved", server=name, org=org, note=plan.note)
            return []
        server = matches[0]
        # The server must still exist, and hold the token and keys decided on, when the plan
        # applies (the cause is written into it).
        plan.guards += [
            Guard(k.server(server.id), "id", server.id),
            Guard(k.server(server.id), "token", server.token_id or ""),
            Guard(k.server(server.id), "staged_key", server.staged_key_id or ""),
        ]
        plan.causes.append(RecordCause(k.server(server.id), k.cause_field(cause.type), cause))
        token = facts.tokens.get(server.token_id) if server.token_id else None
        if token is None:
            plan.note = "the server has no token installed"
        return for_server_cause(cause, token, facts.staged_certificates.get(server.id))

    def _done(self, event: CloudEvent, plan: Plan, applied: Applied) -> Outcome:
        with structlog.contextvars.bound_contextvars(event_id=event.id, event_type=event.type):
            if applied.outcome == "duplicate":
                log.info("event_duplicate_ignored")
            else:
                log.info("event_handled", decisions=applied.results, note=plan.note or None)
        return Outcome(
            event_id=event.id,
            type=event.type,
            outcome=applied.outcome,
            decisions=applied.results,
            note=plan.note,
        )

    def _dead(self, payload: Any, reason: str, now: datetime, message_id: str | None) -> Outcome:
        self.events.record_dead(payload, reason, now, message_id)
        log.warning("event_dead_lettered", reason=reason)
        return Outcome(event_id="", type="", outcome="dead", note=reason)

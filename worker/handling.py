"""Handling incoming events: decode, read the facts, decide (pure rules), apply atomically.

This is what the actor calls; it is kept free of dramatiq so tests and the scheduler can drive
it directly. A malformed event goes to the dead letters with its reason and never stops the
batch it came in.
"""

from __future__ import annotations

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
from worker.rules.replacement import (
    Cause,
    ReplacementNeeded,
    for_server_cause,
    for_user_cause,
)
from worker.store import keys as k
from worker.store.event_store import Guard, OpenReplacement, Plan, RecordCause
from worker.store.redis_store import ConcurrentChange, RedisStore

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
        outcomes = []
        for payload in payloads:
            try:
                event = parse_event(payload)
                check_not_future(event, now)
            except MalformedEvent as exc:
                outcomes.append(self._dead(payload, str(exc), now, message_id))
                continue
            try:
                outcomes.append(self.handle(event, received_at=received_at, now=now))
            except (redis.RedisError, ConcurrentChange):
                raise  # passing trouble: the whole message is retried, duplicates are dropped
            except Exception as exc:
                # Bad input that slipped through validation must not hold back the batch.
                log.exception("event_failed", event_id=event.id)
                reason = f"could not be handled ({type(exc).__name__}); see the worker log"
                outcomes.append(self._dead(payload, reason, now, message_id))
        return outcomes

    def _dead(self, payload: Any, reason: str, now: datetime, message_id: str | None) -> Outcome:
        self.events.record_dead(payload, reason, now, message_id)
        log.warning("event_dead_lettered", reason=reason)
        return Outcome(event_id="", type="", outcome="dead", note=reason)

    def handle(self, event: CloudEvent, *, received_at: datetime, now: datetime) -> Outcome:
        with structlog.contextvars.bound_contextvars(event_id=event.id, event_type=event.type):
            for _ in range(DECISION_ATTEMPTS):
                plan = self.plan(event, received_at=received_at, now=now)
                applied = self.events.apply(plan)
                if applied.outcome == "retry":
                    continue
                self._log(applied.outcome, applied.results, plan.note)
                return Outcome(
                    event_id=event.id,
                    type=event.type,
                    outcome=applied.outcome,
                    decisions=applied.results,
                    note=plan.note,
                )
        raise ConcurrentChange(f"event {event.id}: the state kept changing under the decision")

    def plan(self, event: CloudEvent, *, received_at: datetime, now: datetime) -> Plan:
        cause = Cause(
            type=event.type, id=event.id, source=event.source, time=event.occurred_at(received_at)
        )
        plan = Plan(
            now=now, seen_key=k.seen(event.key), audit_kind="event", audit_event=event.to_wire()
        )
        if event.type in catalog.USER_EVENTS:
            needs, servers = self._user_facts(plan, cause, event.user())
        else:
            needs, servers = self._server_facts(plan, cause, *event.server())
        for need in needs:
            server = servers[need.token.server_id]
            plan.open.append(
                OpenReplacement(
                    token_id=need.token.id,
                    server_id=server.id,
                    server_name=server.name,
                    reason=outgoing.reason(need.cause),
                    outgoing=outgoing.replacement_required(need, server, now),
                )
            )
        return plan

    def _user_facts(
        self, plan: Plan, cause: Cause, user: str
    ) -> tuple[list[ReplacementNeeded], dict[str, Server]]:
        key = user_key(user)
        # The version is read before the tokens: if a token is installed in between, the
        # guard fails and the decision is made again with it.
        version, _ = self.events.user_state(key)
        tokens = self.store.current_tokens_of_user(user)
        plan.guards.append(Guard(k.user(key), k.USER_VERSION, version))
        plan.causes.append(RecordCause(k.user(key), k.cause_field(cause.type), cause))
        needs = for_user_cause(cause, user, tokens)
        servers = {
            s.id: s
            for s in (self.store.get_server(i) for i in {n.token.server_id for n in needs})
            if s
        }
        needs = [n for n in needs if n.token.server_id in servers]
        if not tokens:
            plan.note = "no current token was downloaded by this user"
        return needs, servers

    def _server_facts(
        self, plan: Plan, cause: Cause, name: str, org: str | None
    ) -> tuple[list[ReplacementNeeded], dict[str, Server]]:
        matches = self.store.servers_named(name)
        if org is not None:
            matches = [s for s in matches if name_key(s.org) == name_key(org)]
        if len(matches) != 1:
            plan.note = (
                f"no server named {name!r}"
                if not matches
                else f"{len(matches)} servers are named {name!r}; the event needs an org"
            )
            log.warning("event_server_unresolved", server=name, org=org, note=plan.note)
            return [], {}
        server = matches[0]
        # The server must still exist when the plan applies (the cause is written into it).
        plan.guards.append(Guard(k.server(server.id), "id", server.id))
        plan.guards.append(Guard(k.server(server.id), "token", server.token_id or ""))
        plan.guards.append(Guard(k.server(server.id), "staged_key", server.staged_key_id or ""))
        plan.causes.append(RecordCause(k.server(server.id), k.cause_field(cause.type), cause))
        token = self.store.get_token(server.token_id) if server.token_id else None
        staged = self.store.get_key(server.staged_key_id) if server.staged_key_id else None
        needs = for_server_cause(cause, token, staged.cert_pem if staged else None)
        if token is None:
            plan.note = "the server has no token installed"
        return needs, {server.id: server}

    @staticmethod
    def _log(outcome: str, decisions: list[dict[str, Any]], note: str) -> None:
        if outcome == "duplicate":
            log.info("event_duplicate_ignored")
            return
        log.info("event_handled", decisions=decisions, note=note or None)

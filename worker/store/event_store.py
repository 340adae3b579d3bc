"""The Redis side of decisions: applying them atomically (see decisions.py), the outbox, the
audit trail, the dead letters and the replacements."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import redis

from worker.records import Replacement
from worker.rules.decision import Decision
from worker.store import keys as k
from worker.store.decisions import (
    APPLY_DECISION,
    DEFAULT_AUDIT_MAX,
    DEFAULT_SEEN_TTL,
    encode,
)
from worker.store.facts import replacement_from_hash
from worker.store.protocol import Applied
from worker.store.replication import ReplicaWait
from worker.timefmt import format_rfc3339

#: Dead letters kept (approximately).
DEFAULT_DEAD_MAX = 10_000

#: Longest raw payload kept with a dead letter, in characters.
DEAD_PAYLOAD_CHARS = 4096


def _json_list(value: str) -> list[Any]:
    decoded = json.loads(value) if value else []
    return decoded if isinstance(decoded, list) else []  # Lua's cjson writes [] as {}


def dead_letter(payload: Any, reason: str, now: datetime, message_id: str | None) -> dict[str, str]:
    """What a dead letter keeps: the reason, and the payload (escaped, cut to a bound)."""
    raw = payload if isinstance(payload, str) else json.dumps(payload, default=repr)
    # Lone surrogates and the like cannot be sent to Redis as UTF-8: escape them.
    raw = raw.encode("utf-8", "backslashreplace").decode("utf-8")
    return {
        "at": format_rfc3339(now),
        "reason": reason[:1000],
        "message_id": message_id or "",
        "payload": raw[:DEAD_PAYLOAD_CHARS],
        "truncated": "1" if len(raw) > DEAD_PAYLOAD_CHARS else "0",
    }


class EventStore:
    def __init__(
        self,
        client: redis.Redis,
        *,
        seen_ttl: int = DEFAULT_SEEN_TTL,
        audit_max: int = DEFAULT_AUDIT_MAX,
        dead_max: int = DEFAULT_DEAD_MAX,
        replica_wait: ReplicaWait | None = None,
    ):
        self._redis = client
        self.replica_wait = replica_wait or ReplicaWait()
        self._seen_ttl = seen_ttl
        self._audit_max = audit_max
        self._dead_max = dead_max
        self._apply = client.register_script(APPLY_DECISION)

    # ---- applying decisions ------------------------------------------------------------------

    def apply(self, decision: Decision) -> Applied:
        if not self.replica_wait.replicas:
            return Applied.of(decision, self._call(decision))
        return self.apply_many([decision])[0]

    def apply_many(self, decisions: list[Decision]) -> list[Applied]:
        """Apply many independent decisions in one round trip (each one atomic on its own),
        followed by WAIT for replicas when it is asked for (replication.py)."""
        if not decisions:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for decision in decisions:
            self._call(decision, pipe)
        waited = self.replica_wait.queue(pipe)
        outcomes = pipe.execute()
        if waited:
            self.replica_wait.check(outcomes.pop(), f"{len(decisions)} decisions")
        return [Applied.of(d, o) for d, o in zip(decisions, outcomes, strict=True)]

    def replicated(self, what: str) -> None:
        """WAIT for replicas after a transaction that carried a decision (queue_apply)."""
        self.replica_wait.after_transaction(self._redis, what)

    def queue_apply(self, pipe: redis.client.Pipeline, decision: Decision) -> None:
        """Queue the decision inside a caller's MULTI/EXEC (install and key rotation use this;
        they WATCH what its guards read, so the guards cannot move before EXEC)."""
        self._call(decision, pipe)

    def _call(self, decision: Decision, client: Any = None) -> Any:
        keys, argument = encode(decision, seen_ttl=self._seen_ttl, audit_max=self._audit_max)
        return self._apply(keys=keys, args=[argument], client=client)

    # ---- audit trail and dead letters ---------------------------------------------------------

    def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        entries = self._redis.xrevrange(k.AUDIT, count=limit)
        return [
            {
                "entry": entry_id,
                "at": f.get("at"),
                "kind": f.get("kind"),
                "outcome": f.get("outcome"),
                "note": f.get("note") or None,
                "event": json.loads(f.get("event") or "{}"),
                "decisions": _json_list(f.get("decisions", "")),
            }
            for entry_id, f in entries
        ]

    def record_dead(
        self, payload: Any, reason: str, now: datetime, message_id: str | None = None
    ) -> None:
        # With WAIT on, in one pipeline: the message is acknowledged after this, and a
        # failover must not lose the event without even its dead letter.
        pipe = self._redis.pipeline(transaction=False)
        pipe.xadd(
            k.DEAD,
            dead_letter(payload, reason, now, message_id),
            maxlen=self._dead_max,
            approximate=True,
        )
        if self.replica_wait.queue(pipe):
            self.replica_wait.check(pipe.execute()[-1], "a dead letter")
        else:
            pipe.execute()

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        return [
            {"entry": entry_id, **fields}
            for entry_id, fields in self._redis.xrevrange(k.DEAD, count=limit)
        ]

    # ---- replacements and the outbox ---------------------------------------------------------

    def replacements(self, *, include_resolved: bool = False) -> list[Replacement]:
        index = k.REPLACEMENTS if include_resolved else k.REPLACEMENTS_OPEN
        token_ids = self._redis.zrange(index, 0, -1)
        pipe = self._redis.pipeline(transaction=False)
        for token_id in token_ids:
            pipe.hgetall(k.replacement(token_id))
        return [replacement_from_hash(d) for d in pipe.execute() if d]

    def replacements_by_token(self, token_ids: set[str]) -> dict[str, Replacement]:
        """The replacements of many tokens, in one round trip."""
        ordered = sorted(token_ids)
        pipe = self._redis.pipeline(transaction=False)
        for token_id in ordered:
            pipe.hgetall(k.replacement(token_id))
        return {
            t: replacement_from_hash(d) for t, d in zip(ordered, pipe.execute(), strict=True) if d
        }

    def replacement(self, token_id: str) -> Replacement | None:
        data = self._redis.hgetall(k.replacement(token_id))
        return replacement_from_hash(data) if data else None

    def outbox(self, limit: int = 1000) -> list[dict[str, Any]]:
        return [
            json.loads(fields["event"]) for _, fields in self._redis.xrange(k.OUTBOX, count=limit)
        ]

"""The Redis side of decisions: applying a plan atomically, the outbox, the audit trail, the
dead letters, replacements, and the causes recorded per user and per server."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from importlib import resources
from typing import Any

import redis

from worker.records import Replacement, from_ms, to_ms
from worker.rules.install import LONGEST_TOKEN_LIFE
from worker.rules.replacement import MAX_REASONS, Cause, load_reasons
from worker.store import keys as k
from worker.timefmt import format_rfc3339

_LUA = resources.files("worker.store").joinpath("lua")
#: The reason rules (merge_reason.lua) come first: Redis scripts have no imports.
_APPLY_PLAN = "\n".join(
    _LUA.joinpath(name).read_text() for name in ("merge_reason.lua", "apply_plan.lua")
)

#: How long an event's (source, id) is remembered to drop a second delivery, in seconds.
DEFAULT_SEEN_TTL = 30 * 24 * 3600

#: How long the record of a user with no current token is kept after a cause, in seconds.
#: A cause dooms only tokens downloaded before it, and a token expires at most
#: LONGEST_TOKEN_LIFE after download (install refuses an expired one), so after this long no
#: token the cause could doom can be installed.
TOKENLESS_USER_TTL = int(LONGEST_TOKEN_LIFE.total_seconds())

#: Audit entries kept (approximately; older ones are trimmed).
DEFAULT_AUDIT_MAX = 100_000

#: Longest event kept whole in an audit entry, in characters of JSON. A larger one (an event
#: may be 64 KiB) keeps what tokenwarden read from it: its attributes and the user or server.
AUDIT_EVENT_CHARS = 4096

#: What an audit entry keeps of an event too large to keep whole.
_AUDIT_ATTRIBUTES = ("specversion", "id", "source", "type", "time", "subject")
_AUDIT_DATA = ("user", "server", "org")

#: Dead letters kept (approximately).
DEFAULT_DEAD_MAX = 10_000

#: Longest raw payload kept with a dead letter, in characters.
DEAD_PAYLOAD_CHARS = 4096


@dataclass(frozen=True)
class Guard:
    """The decision holds only while `field` of hash `key` still reads `value` ("" = absent)."""

    key: str
    field: str
    value: str


@dataclass(frozen=True)
class OpenReplacement:
    token_id: str
    server_id: str
    server_name: str
    reason: dict[str, Any]
    outgoing: dict[str, Any]


@dataclass(frozen=True)
class ResolveReplacement:
    token_id: str
    server_name: str
    by: str
    outgoing: dict[str, Any]


@dataclass(frozen=True)
class RecordCause:
    key: str
    field: str
    cause: Cause
    #: Seconds after which the hash at `key` goes unless it lists a current token (a field
    #: starting with USER_TOKEN_PREFIX); None: it stays.
    tokenless_ttl: int | None = None

    @classmethod
    def of_user(cls, user_key: str, cause: Cause) -> RecordCause:
        """The latest cause of its kind for a user, kept for a token installed later. A user
        with no current token (anyone can be named in an event) is forgotten after
        TOKENLESS_USER_TTL: no token a cause that old could doom can be installed any more."""
        return cls(k.user(user_key), k.cause_field(cause.type), cause, TOKENLESS_USER_TTL)


@dataclass(frozen=True)
class Write:
    """A plain write carried by a decision: `hset` (key, field, value), `zadd` (key, member,
    score) or `zrem` (key, member)."""

    op: str
    key: str
    field: str = ""
    value: str = ""
    member: str = ""
    score: int = 0


@dataclass
class Plan:
    now: datetime
    seen_key: str | None = None
    guards: list[Guard] = field(default_factory=list)
    causes: list[RecordCause] = field(default_factory=list)
    open: list[OpenReplacement] = field(default_factory=list)
    resolve: list[ResolveReplacement] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    emit: list[dict[str, Any]] = field(default_factory=list)
    audit_kind: str | None = None
    audit_event: dict[str, Any] | None = None
    #: Why the plan has no effect, when that is worth telling (unknown server, ...).
    note: str = ""

    def encode(self, seen_ttl: int, audit_max: int) -> str:
        plan: dict[str, Any] = {
            "now_ms": to_ms(self.now),
            "now_text": format_rfc3339(self.now),
            "outbox_key": k.OUTBOX,
            "user_token_prefix": k.USER_TOKEN_PREFIX,
            "audit_key": k.AUDIT,
            "audit_max": audit_max,
            "seen_ttl": seen_ttl,
            "max_reasons": MAX_REASONS,
            "guards": [g.__dict__ for g in self.guards],
            "causes": [
                {
                    "key": c.key,
                    "field": c.field,
                    "at": to_ms(c.cause.time),
                    "value": json.dumps(cause_to_json(c.cause)),
                    **({"tokenless_ttl": c.tokenless_ttl} if c.tokenless_ttl else {}),
                }
                for c in self.causes
            ],
            "open": [
                {
                    "token": o.token_id,
                    "server": o.server_id,
                    "server_name": o.server_name,
                    "reason": o.reason,
                    "outgoing": json.dumps(o.outgoing),
                }
                for o in self.open
            ],
            "writes": [w.__dict__ for w in self.writes],
            "emit": [{"type": e["type"], "event": json.dumps(e)} for e in self.emit],
            "resolve": [
                {
                    "token": r.token_id,
                    "server_name": r.server_name,
                    "by": r.by,
                    "outgoing": json.dumps(r.outgoing),
                }
                for r in self.resolve
            ],
        }
        if self.seen_key:  # absent, not null: a JSON null is truthy in Lua
            plan["seen_key"] = self.seen_key
        if self.audit_kind:
            plan["audit"] = {
                "kind": self.audit_kind,
                "note": self.note,
                "event": audit_text(self.audit_event or {}),
            }
        return json.dumps(plan)  # ASCII: nothing a client sent can break the UTF-8 to Redis


@dataclass(frozen=True)
class Applied:
    outcome: str  # applied | duplicate | retry
    results: list[dict[str, Any]]


def audit_text(event: dict[str, Any]) -> str:
    """The event as an audit entry keeps it: whole, unless larger than AUDIT_EVENT_CHARS, so
    the capped audit trail is capped in bytes too."""
    whole = json.dumps(event)
    if len(whole) <= AUDIT_EVENT_CHARS:
        return whole
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    kept: dict[str, Any] = {name: event[name] for name in _AUDIT_ATTRIBUTES if name in event}
    kept["data"] = {name: data[name] for name in _AUDIT_DATA if name in data}
    kept["truncated"] = f"{len(whole)} characters; only what tokenwarden reads is kept"
    return json.dumps(kept)


def cause_to_json(cause: Cause) -> dict[str, Any]:
    return {
        "type": cause.type,
        "id": cause.id,
        "source": cause.source,
        "time": format_rfc3339(cause.time),
        "at": to_ms(cause.time),
    }


def cause_from_json(value: str) -> Cause:
    data = json.loads(value)
    return Cause(type=data["type"], id=data["id"], source=data["source"], time=from_ms(data["at"]))


def _json_list(value: str) -> list[Any]:
    decoded = json.loads(value) if value else []
    return decoded if isinstance(decoded, list) else []  # Lua's cjson writes [] as {}


class EventStore:
    def __init__(
        self,
        client: redis.Redis,
        *,
        seen_ttl: int = DEFAULT_SEEN_TTL,
        audit_max: int = DEFAULT_AUDIT_MAX,
        dead_max: int = DEFAULT_DEAD_MAX,
    ):
        self._redis = client
        self._seen_ttl = seen_ttl
        self._audit_max = audit_max
        self._dead_max = dead_max
        self._apply = client.register_script(_APPLY_PLAN)

    # ---- applying decisions ------------------------------------------------------------------

    def apply(self, plan: Plan) -> Applied:
        answer = json.loads(self._apply(args=[plan.encode(self._seen_ttl, self._audit_max)]))
        results = answer.get("results")
        return Applied(
            outcome=answer["outcome"], results=results if isinstance(results, list) else []
        )

    def apply_many(self, plans: list[Plan]) -> list[Applied]:
        """Apply many independent plans in one round trip (each one atomic on its own)."""
        pipe = self._redis.pipeline(transaction=False)
        for plan in plans:
            self._apply(args=[plan.encode(self._seen_ttl, self._audit_max)], client=pipe)
        answers = [json.loads(a) for a in pipe.execute()] if plans else []
        return [
            Applied(
                outcome=a["outcome"],
                results=a["results"] if isinstance(a.get("results"), list) else [],
            )
            for a in answers
        ]

    def queue_apply(self, pipe: redis.client.Pipeline, plan: Plan) -> None:
        """Queue the plan inside a caller's MULTI/EXEC (install uses this)."""
        self._apply(args=[plan.encode(self._seen_ttl, self._audit_max)], client=pipe)

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
        raw = payload if isinstance(payload, str) else json.dumps(payload, default=repr)
        # Lone surrogates and the like cannot be sent to Redis as UTF-8: escape them.
        raw = raw.encode("utf-8", "backslashreplace").decode("utf-8")
        self._redis.xadd(
            k.DEAD,
            {
                "at": format_rfc3339(now),
                "reason": reason[:1000],
                "message_id": message_id or "",
                "payload": raw[:DEAD_PAYLOAD_CHARS],
                "truncated": "1" if len(raw) > DEAD_PAYLOAD_CHARS else "0",
            },
            maxlen=self._dead_max,
            approximate=True,
        )

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


def replacement_from_hash(data: dict[str, str]) -> Replacement:
    """A replacement as stored, its reasons merged if they were recorded one per event."""
    stored = Replacement.from_hash(data)
    reasons, omitted = load_reasons(stored.reasons, stored.omitted)
    return replace(stored, reasons=reasons, omitted=omitted)


def causes_in(data: dict[str, str]) -> list[Cause]:
    return [
        cause_from_json(value)
        for name, value in data.items()
        if name.startswith(k.CAUSE_FIELD_PREFIX)
    ]

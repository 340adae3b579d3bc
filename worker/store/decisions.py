"""Applying a decision (worker/rules/decision.py): the Redis writes it means, and the one Lua
script (lua/apply_decision.lua) that makes them atomically, checking first the event's
de-duplication marker and the guards (the versions of the facts it was made on).

This is the only place that knows which keys and fields a decision writes.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from worker.records import ms_field, to_ms
from worker.rules import policy
from worker.rules.decision import (
    EXISTS,
    INSTALLED_TOKEN,
    POLICY,
    REJECTED,
    RENEWAL,
    REPLACEMENT,
    SERVER,
    STAGED_KEY,
    STATUS,
    TERMS,
    TOKEN,
    USER,
    VERSION,
    WARNED,
    Decision,
    ReplacementChange,
    Resolution,
)
from worker.rules.facts import OPEN
from worker.rules.install import LONGEST_TOKEN_LIFE
from worker.store import keys as k
from worker.store.facts import cause_to_json
from worker.timefmt import format_rfc3339

APPLY_DECISION = resources.files("worker.store").joinpath("lua/apply_decision.lua").read_text()

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

#: (record, fact) of a guard -> (Redis key of the record, hash field holding the fact).
_GUARDED = {
    (USER, VERSION): (k.user, k.USER_VERSION),
    (SERVER, VERSION): (k.server, k.SERVER_VERSION),
    (SERVER, EXISTS): (k.server, "id"),
    (SERVER, INSTALLED_TOKEN): (k.server, "token"),
    (SERVER, STAGED_KEY): (k.server, "staged_key"),
    (SERVER, TERMS): (k.server, "terms_since"),
    (TOKEN, STATUS): (k.token, "status"),
    (TOKEN, WARNED): (k.token, "warned"),
    (TOKEN, REJECTED): (k.token, "a_rejected"),
    (TOKEN, RENEWAL): (k.token, "renewal"),
    (POLICY, VERSION): (k.policy_holder, k.POLICY_VERSION),
    (REPLACEMENT, VERSION): (k.replacement, k.REPLACEMENT_VERSION),
}

#: Record that remembers causes -> (its key, its version field).
_CAUSE_HOLDERS = {USER: (k.user, k.USER_VERSION), SERVER: (k.server, k.SERVER_VERSION)}


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


class _Script:
    """The script's arguments being built: keys numbered as they are first named."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._index: dict[str, int] = {}
        self.guards: list[list[str | int]] = []
        self.writes: list[list[str | int]] = []

    def key(self, name: str) -> int:
        if name not in self._index:
            self.keys.append(name)
            self._index[name] = len(self.keys)  # Lua counts from 1
        return self._index[name]

    def write(self, command: str, key: str, *args: object) -> None:
        self.writes.append([command, self.key(key), *(str(a) for a in args)])


def encode(decision: Decision, *, seen_ttl: int, audit_max: int) -> tuple[list[str], str]:
    """The script's KEYS and ARGV[1] for `decision`."""
    script = _Script()
    now_text = format_rfc3339(decision.now)
    payload: dict[str, Any] = {}
    if decision.event_key is not None:  # absent, not null: a JSON null is truthy in Lua
        payload["marker"] = [script.key(k.seen(decision.event_key)), now_text, str(seen_ttl)]
    for guard in decision.guards:
        key_of, field = _GUARDED[(guard.record, guard.fact)]
        script.guards.append([script.key(key_of(guard.ident)), field, guard.value])
    _write_facts(script, decision)
    for change in decision.replacements:
        _write_replacement(script, change, decision)
    for resolution in decision.resolutions:
        _write_resolution(script, resolution, now_text)
    for event in decision.outgoing:
        text = json.dumps(event, separators=(",", ":"))  # compact: it is stored per delivery
        script.write("XADD", k.OUTBOX, "*", "type", event["type"], "event", text)
    if decision.audit is not None:
        script.write(
            "XADD", k.AUDIT, "MAXLEN", "~", audit_max, "*",
            "at", now_text,
            "kind", decision.audit.kind,
            "event", audit_text(decision.audit.event),
            "outcome", "applied",
            "note", decision.note,
            "decisions", json.dumps(decision.results),
        )  # fmt: skip
    payload.update(guards=script.guards, writes=script.writes)
    return script.keys, json.dumps(payload)  # ASCII: nothing sent can break the UTF-8 to Redis


def _write_facts(script: _Script, decision: Decision) -> None:
    """Causes remembered, users forgotten in time, the scan's next checks and warnings."""
    for remembered in decision.causes:
        key_of, version_field = _CAUSE_HOLDERS[remembered.record]
        value = json.dumps(cause_to_json(remembered.cause))
        script.write(
            "HSET", key_of(remembered.ident),
            k.cause_field(remembered.cause.type), value,
            version_field, remembered.version,
        )  # fmt: skip
    for user in decision.forget_users:
        script.write("EXPIRE", k.user(user), TOKENLESS_USER_TTL)
    for check in decision.next_checks:
        if check.at is None:
            script.write("ZREM", k.TOKENS_NEXT_CHECK, check.token_id)
        else:
            script.write("ZADD", k.TOKENS_NEXT_CHECK, to_ms(check.at), check.token_id)
    for warned in decision.warned:
        script.write("HSET", k.token(warned.token_id), "warned", warned.level)
    _write_apple_facts(script, decision)
    _write_policy_facts(script, decision)


def _write_policy_facts(script: _Script, decision: Decision) -> None:
    """Renewals opened, keys staged with them, and policy layers set."""
    now_ms = to_ms(decision.now)
    for renewal in decision.renewals:
        script.write("HSET", k.token(renewal.token_id), "renewal", now_ms)
    for staged in decision.staged_keys:
        pair = staged.offer.pair
        fields = {**pair.to_hash(), k.SEALED_PRIVATE_KEY: staged.offer.sealed_private_key}
        script.write("HSET", k.key_pair(pair.id), *(x for item in fields.items() for x in item))
        script.write("ZADD", k.server_keys(pair.server_id), to_ms(pair.created_at), pair.id)
        script.write("HSET", k.server(pair.server_id), "staged_key", pair.id)
    for written in decision.policies:
        holder = k.policy_holder(written.scope)
        script.write("HDEL", holder, *policy.FIELDS)
        fields = {**written.layer.to_fields(), k.POLICY_VERSION: written.version}
        script.write("HSET", holder, *(x for item in fields.items() for x in item))
        script.write("HSET", k.POLICY_CHANGES, written.scope, written.version)


def _write_apple_facts(script: _Script, decision: Decision) -> None:
    """What asking Apple found: the token's state, the server as Apple names it, and the
    token moved to the user Apple says downloaded it."""
    for checked in decision.apple:
        fields = [item for pair in checked.state.to_fields().items() for item in pair]
        script.write("HSET", k.token(checked.token_id), *fields)
    for seen in decision.servers_seen:
        script.write(
            "HSET", k.server(seen.server_id),
            "apple_name", seen.apple_name or "",
            "apple_org", seen.apple_org or "",
            "terms_since", ms_field(seen.terms_since),
        )  # fmt: skip
    for moved in decision.downloaders:
        field = k.user_token_field(moved.token_id)
        script.write("HSET", k.token(moved.token_id), "downloaded_by", moved.user)
        script.write("HDEL", k.user(moved.old_key), field)
        script.write("HSET", k.user(moved.old_key), k.USER_VERSION, moved.old_version)
        if moved.forget_old:
            script.write("EXPIRE", k.user(moved.old_key), TOKENLESS_USER_TTL)
        script.write("HSET", k.user(moved.new_key), field, 1, k.USER_VERSION, moved.new_version)
        script.write("PERSIST", k.user(moved.new_key))  # it may have been set to expire
        domain = k.user_domain(moved.new_key)
        script.write("SADD", k.watched(domain), moved.new_key)
        script.write("SADD", k.WATCHED_DOMAINS, domain)


def _write_replacement(script: _Script, change: ReplacementChange, decision: Decision) -> None:
    key, state = k.replacement(change.token_id), change.state
    fields: list[object] = ["reasons", json.dumps(state.reasons), "omitted", state.omitted]
    fields += [k.REPLACEMENT_VERSION, state.version]
    if change.certificate_changed:
        fields += ["certificate", state.certificate]
    if not change.opened:
        script.write("HSET", key, *fields)
        return
    script.write("DEL", key)  # a replacement opened again starts afresh
    script.write(
        "HSET", key,
        "token", change.token_id, "server", change.server_id, "status", OPEN,
        "opened_at", state.opened_at, "resolved_at", "", "resolved_by", "",
        *fields,
    )  # fmt: skip
    opened_ms = to_ms(decision.now)
    script.write("ZADD", k.REPLACEMENTS_OPEN, opened_ms, change.token_id)
    script.write("ZADD", k.REPLACEMENTS, opened_ms, change.token_id)


def _write_resolution(script: _Script, resolution: Resolution, now_text: str) -> None:
    script.write(
        "HSET", k.replacement(resolution.token_id),
        "status", resolution.state.status,
        "resolved_at", now_text,
        "resolved_by", resolution.by,
        k.REPLACEMENT_VERSION, resolution.state.version,
    )  # fmt: skip
    script.write("ZREM", k.REPLACEMENTS_OPEN, resolution.token_id)

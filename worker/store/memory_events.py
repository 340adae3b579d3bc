"""The in-memory side of decisions (the counterpart of event_store.py and decisions.py):
applying a decision atomically under the state's lock, with the Redis script's semantics (a
repeated event dropped by its marker, "retry" when a guard moved, else every write), the
audit trail, the dead letters, the replacements and the outbox.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from dataclasses import replace
from datetime import datetime
from typing import Any

from worker.records import AppleState, Replacement, from_ms, ms_field, to_ms
from worker.rules.decision import (
    USER,
    Decision,
    DownloaderCorrected,
    RememberCause,
    ReplacementChange,
    Resolution,
)
from worker.rules.facts import OPEN
from worker.rules.replacement import Cause
from worker.store.decisions import (
    DEFAULT_AUDIT_MAX,
    DEFAULT_SEEN_TTL,
    TOKENLESS_USER_TTL,
    audit_text,
)
from worker.store.event_store import DEFAULT_DEAD_MAX, dead_letter
from worker.store.memory_state import MemoryState, ReplacementRow
from worker.store.protocol import Applied
from worker.timefmt import format_rfc3339

#: Outgoing events kept (the oldest are dropped; memory_notify reads them into deliveries).
OUTBOX_KEPT = 100_000


class InMemoryEvents:
    def __init__(
        self,
        state: MemoryState,
        *,
        seen_ttl: int = DEFAULT_SEEN_TTL,
        audit_max: int = DEFAULT_AUDIT_MAX,
        dead_max: int = DEFAULT_DEAD_MAX,
    ):
        self._state = state
        self._seen_ttl = seen_ttl
        self._audit: deque[dict[str, Any]] = deque(maxlen=audit_max)
        self._dead: deque[dict[str, Any]] = deque(maxlen=dead_max)
        self._sequence = itertools.count(1)

    # ---- applying decisions ------------------------------------------------------------------

    def apply(self, decision: Decision) -> Applied:
        with self._state.lock:
            return Applied.of(decision, self.apply_locked(decision))

    def apply_many(self, decisions: list[Decision]) -> list[Applied]:
        """Each decision atomic on its own, in order."""
        return [self.apply(decision) for decision in decisions]

    def apply_locked(self, decision: Decision) -> str:
        """Apply `decision`, the caller holding the lock: "applied", "duplicate" or "retry"."""
        state = self._state
        if decision.event_key is not None and self._seen(decision.event_key):
            return "duplicate"
        if any(state.fact(guard) != guard.value for guard in decision.guards):
            return "retry"
        if decision.event_key is not None:
            state.seen[decision.event_key] = time.time() + self._seen_ttl
        self._write_facts(decision)
        for change in decision.replacements:
            self._write_replacement(change, decision.now)
        for resolution in decision.resolutions:
            self._write_resolution(resolution, decision.now)
        for event in decision.outgoing:
            self._add_outgoing(event)
        if decision.audit is not None:
            self._audit.append(self._audit_entry(decision))
        return "applied"

    def _add_outgoing(self, event: dict[str, Any]) -> None:
        state = self._state
        state.outbox_last += 1
        state.outbox[state.outbox_last] = json.dumps(event, separators=(",", ":"))
        state.outbox_written[state.outbox_last] = round(time.time() * 1000)
        if len(state.outbox) > OUTBOX_KEPT:  # bounded: the oldest go
            oldest = next(iter(state.outbox))
            del state.outbox[oldest], state.outbox_written[oldest]

    def _seen(self, event_key: str) -> bool:
        lapses = self._state.seen.get(event_key)
        if lapses is not None and lapses <= time.time():
            del self._state.seen[event_key]
            return False
        return lapses is not None

    def _write_facts(self, decision: Decision) -> None:
        state = self._state
        for remembered in decision.causes:
            self._remember(remembered)
        for user in decision.forget_users:
            row = state.user(user)
            if row is not None:
                row.forget_at = time.time() + TOKENLESS_USER_TTL
        for check in decision.next_checks:
            if check.at is None:
                state.next_checks.pop(check.token_id, None)
            else:
                state.next_checks[check.token_id] = to_ms(check.at)
        for warned in decision.warned:
            token = state.tokens.get(warned.token_id)
            if token is not None:
                state.tokens[token.id] = replace(token, warned=warned.level)
        self._write_apple_facts(decision)
        self._write_policy_facts(decision)

    def _write_policy_facts(self, decision: Decision) -> None:
        """As decisions.py's: renewals opened, keys staged, policy layers set."""
        state = self._state
        for renewal in decision.renewals:
            token = state.tokens.get(renewal.token_id)
            if token is not None:
                state.tokens[token.id] = replace(token, renewal_opened=decision.now)
        for staged in decision.staged_keys:
            pair = staged.offer.pair
            state.keys[pair.id] = pair
            state.sealed_keys[pair.id] = staged.offer.sealed_private_key
            server = state.servers[pair.server_id]
            state.servers[server.id] = replace(server, staged_key_id=pair.id)
        for written in decision.policies:
            state.policies[written.scope] = (written.layer, written.version)
            state.policy_changes[written.scope] = written.version
            kind, _, ident = written.scope.partition(":")
            server = state.servers.get(ident) if kind == "server" else None
            if server is not None:
                state.servers[ident] = replace(server, policy=written.layer)

    def _write_apple_facts(self, decision: Decision) -> None:
        state = self._state
        for checked in decision.apple:
            token = state.tokens.get(checked.token_id)
            if token is not None:
                # Through the fields Redis keeps, so its times are to the millisecond, as the
                # Redis store gives them back (terms_since below too).
                fields = checked.state.to_fields()
                kept = AppleState.from_hash({name: str(value) for name, value in fields.items()})
                state.tokens[token.id] = replace(token, apple=kept)
        for seen in decision.servers_seen:
            server = state.servers.get(seen.server_id)
            if server is not None:
                state.servers[server.id] = replace(
                    server,
                    apple_name=seen.apple_name,
                    apple_org=seen.apple_org,
                    terms_since=from_ms(ms_field(seen.terms_since)),
                )
        for moved in decision.downloaders:
            self._move_token(moved)

    def _move_token(self, moved: DownloaderCorrected) -> None:
        state = self._state
        token = state.tokens.get(moved.token_id)
        if token is not None:
            state.tokens[token.id] = replace(token, downloaded_by=moved.user)
        old = state.user_for_write(moved.old_key)
        old.token_ids.discard(moved.token_id)
        old.version = moved.old_version
        if moved.forget_old:
            old.forget_at = time.time() + TOKENLESS_USER_TTL
        new = state.user_for_write(moved.new_key)
        new.token_ids.add(moved.token_id)
        new.version = moved.new_version
        new.forget_at = None

    def _remember(self, remembered: RememberCause) -> None:
        # Stored to the millisecond, as Redis keeps a cause's time.
        cause = remembered.cause
        cause = Cause(cause.type, cause.id, cause.source, from_ms(to_ms(cause.time)))
        if remembered.record == USER:
            row = self._state.user_for_write(remembered.ident)
            row.causes[cause.type] = cause
            row.version = remembered.version
        else:
            causes = self._state.server_causes
            causes[remembered.ident] = self._state.recorded_server(remembered.ident).with_cause(
                cause, remembered.version
            )

    def _write_replacement(self, change: ReplacementChange, now: datetime) -> None:
        state, after = self._state, change.state
        row = state.replacements.get(change.token_id)
        if change.opened:  # a replacement opened again starts afresh
            row = state.replacements[change.token_id] = ReplacementRow(
                token_id=change.token_id,
                server_id=change.server_id,
                status=OPEN,
                opened_at=after.opened_at,
                reasons=[],
                omitted=0,
                version="",
                opened_ms=to_ms(now),
            )
            state.open_replacements.add(change.token_id)
            state.all_replacements.add(change.token_id)
        if row is None:
            return
        row.reasons, row.omitted, row.version = _copy(after.reasons), after.omitted, after.version
        if change.certificate_changed:
            row.certificate = after.certificate

    def _write_resolution(self, resolution: Resolution, now: datetime) -> None:
        row = self._state.replacements.get(resolution.token_id)
        if row is not None:
            row.status = resolution.state.status
            row.resolved_at = format_rfc3339(now)
            row.resolved_by = resolution.by
            row.version = resolution.state.version
        self._state.open_replacements.discard(resolution.token_id)

    def _audit_entry(self, decision: Decision) -> dict[str, Any]:
        assert decision.audit is not None
        return {
            "entry": self._entry_id(),
            "at": format_rfc3339(decision.now),
            "kind": decision.audit.kind,
            "outcome": "applied",
            "note": decision.note or None,
            "event": json.loads(audit_text(decision.audit.event)),
            "decisions": _copy(decision.results),
        }

    def _entry_id(self) -> str:
        """As a stream entry's id: milliseconds, then a sequence."""
        return f"{int(time.time() * 1000)}-{next(self._sequence)}"

    # ---- audit trail and dead letters ---------------------------------------------------------

    def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._state.lock:
            return _copy(list(reversed(self._audit))[:limit])

    def record_dead(
        self, payload: Any, reason: str, now: datetime, message_id: str | None = None
    ) -> None:
        letter = {"entry": self._entry_id(), **dead_letter(payload, reason, now, message_id)}
        with self._state.lock:
            self._dead.append(letter)

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._state.lock:
            return _copy(list(reversed(self._dead))[:limit])

    # ---- replacements and the outbox ---------------------------------------------------------

    def replacements(self, *, include_resolved: bool = False) -> list[Replacement]:
        with self._state.lock:
            state = self._state
            index = state.all_replacements if include_resolved else state.open_replacements
            rows = [state.replacements[t] for t in index if t in state.replacements]
            rows.sort(key=lambda row: (row.opened_ms, row.token_id))
            return [_record(row) for row in rows]

    def replacements_by_token(self, token_ids: set[str]) -> dict[str, Replacement]:
        with self._state.lock:
            rows = self._state.replacements
            return {t: _record(rows[t]) for t in sorted(token_ids) if t in rows}

    def replacement(self, token_id: str) -> Replacement | None:
        return self.replacements_by_token({token_id}).get(token_id)

    def outbox(self, limit: int = 1000) -> list[dict[str, Any]]:
        with self._state.lock:
            texts = itertools.islice(self._state.outbox.values(), limit)
            return [json.loads(text) for text in texts]


def _record(row: ReplacementRow) -> Replacement:
    facts = row.facts()
    return Replacement(
        token_id=row.token_id,
        server_id=row.server_id,
        status=row.status,
        opened_at=row.opened_at or "",
        resolved_at=row.resolved_at or None,
        resolved_by=row.resolved_by or None,
        reasons=_copy(facts.reasons),
        omitted=facts.omitted,
    )


def _copy(value: Any) -> Any:
    """A copy through JSON, as values come back from Redis (no aliasing of what was stored)."""
    return json.loads(json.dumps(value))

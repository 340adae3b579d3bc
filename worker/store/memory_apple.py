"""The checks with Apple's enrollment service, kept in memory (see apple_checks.py, the Redis
one, for what each method means)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from worker.names import user_key
from worker.records import TOKEN_CURRENT, Token, to_ms
from worker.rules.facts import AppleCheckFacts
from worker.store.apple_checks import spread_offset_ms
from worker.store.memory_state import MemoryState


class MemoryAppleChecks:
    def __init__(self, state: MemoryState):
        self._state = state

    def schedule(self, token_id: str, at: datetime, *, only_if_scheduled: bool = False) -> None:
        with self._state.lock:
            checks = self._state.apple_checks
            if not only_if_scheduled or token_id in checks:
                checks[token_id] = to_ms(at)

    def reschedule(self, times: Mapping[str, datetime]) -> None:
        with self._state.lock:
            checks = self._state.apple_checks
            for token_id, at in times.items():
                if token_id in checks:
                    checks[token_id] = to_ms(at)

    def unschedule(self, token_ids: list[str]) -> None:
        with self._state.lock:
            for token_id in token_ids:
                self._state.apple_checks.pop(token_id, None)

    def claim_due(self, now: datetime, limit: int, lease_until: datetime) -> list[str]:
        with self._state.lock:
            checks = self._state.apple_checks
            due = sorted((at, t) for t, at in checks.items() if at <= to_ms(now))[:limit]
            for _, token_id in due:
                checks[token_id] = to_ms(lease_until)
            return [token_id for _, token_id in due]

    def due_count(self, now: datetime) -> int:
        with self._state.lock:
            return sum(1 for at in self._state.apple_checks.values() if at <= to_ms(now))

    def scheduled_count(self) -> int:
        return len(self._state.apple_checks)

    def backfill(self, now: datetime, spread_s: int) -> int:
        with self._state.lock:
            state = self._state
            if state.apple_backfilled:
                return 0
            missing = [t for t in state.next_checks if t not in state.apple_checks]
            for token_id in missing:
                state.apple_checks[token_id] = to_ms(now) + spread_offset_ms(token_id, spread_s)
            state.apple_backfilled = True
            return len(missing)

    def interval(self) -> int | None:
        return self._state.apple_interval

    def set_interval(self, seconds: int) -> None:
        self._state.apple_interval = seconds

    def bring_forward(self, now: datetime, interval_s: int) -> int:
        with self._state.lock:
            checks, latest = self._state.apple_checks, to_ms(now) + interval_s * 1000
            late = [t for t, at in checks.items() if at > latest]
            for token_id in late:
                checks[token_id] = to_ms(now) + spread_offset_ms(token_id, interval_s)
            return len(late)

    def facts(self, token_ids: list[str], named: dict[str, str]) -> list[AppleCheckFacts]:
        with self._state.lock:
            state = self._state
            found = []
            for token in (state.tokens.get(t) for t in token_ids):
                if token is None:
                    continue
                downloader = state.user(user_key(token.downloaded_by))
                found.append(
                    AppleCheckFacts(
                        token=token,
                        server=state.servers.get(token.server_id),
                        replacement=state.replacement_facts(token.id),
                        downloader=state.recorded_user(user_key(token.downloaded_by)),
                        downloader_tokens=tuple(sorted(downloader.token_ids if downloader else ())),
                        named=state.recorded_user(named[token.id]) if token.id in named else None,
                    )
                )
            return found

    def current_tokens(self, token_ids: list[str]) -> list[Token]:
        with self._state.lock:
            tokens = (self._state.tokens.get(t) for t in token_ids)
            return [t for t in tokens if t is not None and t.status == TOKEN_CURRENT]

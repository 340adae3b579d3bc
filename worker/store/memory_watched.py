"""The people directories are asked about, in memory: the users holding a current token, read
from the state itself (no index to keep)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from events import catalog
from worker.records import TOKEN_CURRENT
from worker.rules.directory import WatchedUser
from worker.store.keys import user_domain
from worker.store.memory_state import MemoryState


class MemoryWatched:
    def __init__(self, state: MemoryState):
        self._state = state

    def users(self, domains: Sequence[str] | None, batch: int = 200) -> Iterator[list[WatchedUser]]:
        everyone = self._snapshot(domains)
        for start in range(0, len(everyone), batch):
            yield everyone[start : start + batch]

    def count(self, domains: Sequence[str] | None) -> int:
        return len(self._snapshot(domains))

    def domains(self) -> set[str]:
        return {user_domain(user.key) for user in self._snapshot(None)}

    def backfill(self) -> int:
        return 0

    def _snapshot(self, domains: Sequence[str] | None) -> list[WatchedUser]:
        wanted = set(domains) if domains is not None else None
        with self._state.lock:
            users = []
            for key in sorted(self._state.users):
                row = self._state.user(key)
                if row is None or (wanted is not None and user_domain(key) not in wanted):
                    continue
                tokens = [self._state.tokens.get(t) for t in row.token_ids]
                current = [t for t in tokens if t is not None and t.status == TOKEN_CURRENT]
                if not current:
                    continue
                causes = {t: c for t, c in row.causes.items() if t in catalog.USER_EVENTS}
                downloads = tuple(sorted(t.downloaded_at for t in current))
                first = min(current, key=lambda t: t.id)
                users.append(WatchedUser(key, first.downloaded_by, downloads, causes))
            return users

"""The users SCIM sources provisioned, in Redis: per source, each user's stored attributes
(a JSON record the SCIM layer builds; never a password), its version, and an index of userNames.

Writes are Lua scripts (one round trip, atomic), each checking the version the caller read, so
two requests about one user cannot both win. Outcomes are plain words; the SCIM layer turns
them into SCIM errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis

from worker.store import keys as k

#: Users read per round trip when a search walks a source's users.
WALK_CHUNK = 500


def _script(name: str) -> str:
    return resources.files("worker.store").joinpath(f"lua/{name}.lua").read_text()


@dataclass(frozen=True)
class StoredUser:
    user_id: str
    record: dict[str, Any]
    version: int


class ScimUserStore:
    def __init__(self, client: redis.Redis):
        self._redis = client
        self._create = client.register_script(_script("scim_create"))
        self._update = client.register_script(_script("scim_update"))
        self._delete = client.register_script(_script("scim_delete"))

    def get(self, source: str, user_id: str) -> StoredUser | None:
        return _stored(user_id, self._redis.hgetall(k.scim_user(source, user_id)))

    def id_named(self, source: str, name_key: str) -> str | None:
        """The id of the user whose userName compares as `name_key`."""
        return self._redis.hget(k.scim_user_names(source), name_key)

    def count(self, source: str) -> int:
        return self._redis.zcard(k.scim_users(source))

    def page(self, source: str, start: int, count: int) -> list[StoredUser]:
        """Users `start` to `start + count` (0-based) in creation order."""
        if count <= 0:
            return []
        ids = self._redis.zrange(k.scim_users(source), start, start + count - 1)
        return self._many(source, ids)

    def walk(self, source: str) -> Iterator[list[StoredUser]]:
        """Every user of the source, WALK_CHUNK at a time (memory stays bounded)."""
        start = 0
        while ids := self._redis.zrange(k.scim_users(source), start, start + WALK_CHUNK - 1):
            yield self._many(source, ids)
            start += WALK_CHUNK

    def _many(self, source: str, ids: list[str]) -> list[StoredUser]:
        pipe = self._redis.pipeline(transaction=False)
        for user_id in ids:
            pipe.hgetall(k.scim_user(source, user_id))
        found = (_stored(i, data) for i, data in zip(ids, pipe.execute(), strict=True))
        return [user for user in found if user is not None]

    def create(
        self, source: str, user: StoredUser, name_key: str, created_ms: int, cap: int
    ) -> str:
        """'ok', 'full' (the source holds `cap` users) or 'taken' (the userName is)."""
        keys = [k.scim_users(source), k.scim_user_names(source), k.scim_user(source, user.user_id)]
        args = [user.user_id, name_key, _json(user.record), created_ms, cap]
        return self._create(keys=keys, args=args)

    def update(
        self, source: str, user: StoredUser, expected: int | None, name_key: str
    ) -> int | str:
        """The new version, or 'gone', 'moved' (not at `expected` any more) or 'taken'."""
        keys = [k.scim_user(source, user.user_id), k.scim_user_names(source)]
        args = [user.user_id, "" if expected is None else expected, name_key, _json(user.record)]
        outcome = self._update(keys=keys, args=args)
        return int(outcome) if outcome.isdigit() else outcome

    def delete(self, source: str, user_id: str, expected: int | None) -> str:
        """'ok', 'gone' or 'moved'."""
        keys = [k.scim_user(source, user_id), k.scim_user_names(source), k.scim_users(source)]
        return self._delete(keys=keys, args=[user_id, "" if expected is None else expected])


def _json(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def _stored(user_id: str, data: dict[str, str]) -> StoredUser | None:
    if not data.get("r"):
        return None
    return StoredUser(user_id, json.loads(data["r"]), int(data["v"]))

"""The users SCIM sources provisioned, in Redis: per source, each user's stored attributes
(a JSON record the SCIM layer builds; never a password), its version, and an index of userNames.

Writes are Lua scripts (one round trip, atomic), each checking the version the caller read, so
two requests about one user cannot both win, and (creations and updates) that the source still
exists, so a request let in just before `sources remove` cannot bring back a user it forgot.
Outcomes are plain words; the SCIM layer turns them into SCIM errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis

from worker.store import keys as k


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

    def _many(self, source: str, ids: list[str]) -> list[StoredUser]:
        pipe = self._redis.pipeline(transaction=False)
        for user_id in ids:
            pipe.hgetall(k.scim_user(source, user_id))
        found = (_stored(i, data) for i, data in zip(ids, pipe.execute(), strict=True))
        return [user for user in found if user is not None]

    def create(
        self, source: str, user: StoredUser, name_key: str, created_ms: int, cap: int
    ) -> str:
        """'ok', 'full' (the source holds `cap` users), 'taken' (the userName is) or
        'nosource' (the source was removed)."""
        keys = [
            k.scim_users(source),
            k.scim_user_names(source),
            k.scim_user(source, user.user_id),
            k.source(source),
        ]
        args = [user.user_id, name_key, record_json(user.record), created_ms, cap]
        return self._create(keys=keys, args=args)

    def update(
        self, source: str, user: StoredUser, expected: int | None, name_key: str
    ) -> int | str:
        """The new version, or 'gone', 'moved' (not at `expected` any more), 'taken' or
        'nosource' (the source was removed)."""
        keys = [k.scim_user(source, user.user_id), k.scim_user_names(source), k.source(source)]
        expected_arg = "" if expected is None else expected
        args = [user.user_id, expected_arg, name_key, record_json(user.record)]
        outcome = self._update(keys=keys, args=args)
        return int(outcome) if outcome.isdigit() else outcome

    def delete(self, source: str, user_id: str, expected: int | None) -> str:
        """'ok', 'gone' or 'moved'."""
        keys = [k.scim_user(source, user_id), k.scim_user_names(source), k.scim_users(source)]
        return self._delete(keys=keys, args=[user_id, "" if expected is None else expected])


def record_json(record: dict[str, Any]) -> str:
    """A user's record as stored."""
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def _stored(user_id: str, data: dict[str, str]) -> StoredUser | None:
    if not data.get("r"):
        return None
    return StoredUser(user_id, json.loads(data["r"]), int(data["v"]))

"""scim2-server's storage for one SCIM request of one source: provisioned users in Redis
(worker/store/scim_users.py), and the events a write means (scim_events.py).

A write is checked first (the user exists at the version asked for, a new userName is free, the
source is still there), then its events are handed to the workers, then it is written, guarded
by the version read: a refused request enqueues nothing, and a write never lands without its
event (at least once; a retry sends the same event id, dropped as a repeat). Between the check
and the guarded write another request about the same user can win; this one then fails (412,
409 or 404) with its event already enqueued, for a change that did not happen. That is taken on
purpose: a false alarm (a replacement opened that an admin closes) beats a departure missed,
which writing first and enqueuing after would risk on a crash between the two, unless a durable
outbox and a sweeper re-sent it, far more machinery for a race between a directory's own
requests about one user. The event names the user as stored, so it never blames another.

Only what provisioning needs is stored: id, userName, externalId, active, displayName, name,
emails (the User schema the service publishes has nothing else). A password is dropped unread.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from scim2_models import (
    ForbiddenException,
    InvalidFilterException,
    InvalidValueException,
    Meta,
    NotFoundException,
    Path,
    PreconditionFailedException,
    Resource,
    ResourceType,
    ResponseParameters,
    SearchRequest,
    UniquenessException,
)
from scim2_models.path import CompareOperator, Comparison
from scim2_server.storage import AsyncScimStorage, SearchPage
from scim2_server.utils import parametrize
from starlette.concurrency import run_in_threadpool

from events.errors import MalformedEvent
from worker.intake import scim_events
from worker.intake.context import Intake
from worker.intake.sources import Source
from worker.records import from_ms, to_ms
from worker.store.scim_users import ScimUserStore, StoredUser, record_json

#: Most users one SCIM source may provision; a creation beyond is refused (403). The people
#: who download tokens, or at worst every member of staff: the largest school districts
#: (New York City's, about 150,000 staff) fit; their students are not to be provisioned.
MAX_USERS_PER_SOURCE = 200_000

#: Longest string stored (userName, a name part, an e-mail...), as in every tokenwarden event.
MAX_STRING = 256

#: Most entries of a multi-valued attribute stored (emails: a directory sends one or two).
MAX_VALUES = 5

#: Most bytes one user may take: its stored record (JSON) and its userName twice (the index
#: entry and the user's own). With Redis's own overhead a user costs under 2.5 KiB, a source at
#: its cap under 0.5 GiB; a user as Okta or Entra ID sends it counts about 400 bytes.
MAX_USER_BYTES = 1536

#: The attributes stored, as the SCIM payloads spell them.
STORED = ("userName", "externalId", "active", "displayName", "name", "emails")

#: The form of the ids this storage gives out (anything else is unknown without asking Redis).
_ID_LENGTH = 32


class RedisScimStorage(AsyncScimStorage):
    def __init__(
        self,
        intake: Intake,
        users: ScimUserStore,
        source: Source,
        model: type[Resource[Any]],
        now: datetime,
        request_digest: str,
    ):
        self.intake = intake
        self.users = users
        self.source = source
        self.model = model
        self.now = now
        #: The request's digest (scim_events.request_digest): a password change's id.
        self.request_digest = request_digest
        self.name_binding = parametrize(Path, model)("userName").resolve()

    # -- reads ------------------------------------------------------------------------------

    async def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        return self._resource(await self._stored(resource_id))

    async def search(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        start = search_request.start_index_0 or 0
        count = search_request.count if search_request.count is not None else 0
        flt = search_request.filter
        if flt is None:
            total = await self._call(self.users.count, self.source.name)
            if start >= total:  # also a startIndex beyond what Redis takes
                return SearchPage(total, [])
            page = await self._call(self.users.page, self.source.name, start, count)
            return SearchPage(total, [self._resource(u) for u in page])
        named = self._user_name_equal_to(flt)
        if named is None:
            # Any other filter would read every user of the source; Okta and Entra ID only
            # ever ask `userName eq`.
            raise InvalidFilterException(detail='only filter=userName eq "..." is supported')
        user_id = await self._call(self.users.id_named, self.source.name, named)
        stored = await self._call(self.users.get, self.source.name, user_id) if user_id else None
        found = [self._resource(stored)] if stored else []
        return SearchPage(len(found), found[start : start + count])

    def _user_name_equal_to(self, flt: Any) -> str | None:
        """For `userName eq "..."` (what Okta and Entra ask), the name as it compares."""
        node = flt.ast
        if not (
            isinstance(node, Comparison)
            and node.op == CompareOperator.eq
            and isinstance(node.value, str)
        ):
            return None
        if flt.resolve_comparison(node.attr_path, strict=False) != self.name_binding:
            return None
        try:
            return self.name_binding.comparable(node.value)
        except ValueError:
            return None

    # -- writes -----------------------------------------------------------------------------

    async def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        resource.password = None  # type: ignore[attr-defined]  # a first password: not a change
        user_id = uuid.uuid4().hex
        record = self._record(resource, created_ms=to_ms(self.now))
        user = StoredUser(user_id, record, 1)
        outcome = await self._call(
            self.users.create,
            self.source.name,
            user,
            self._name_key(record),
            to_ms(self.now),
            MAX_USERS_PER_SOURCE,
        )
        if outcome == "nosource":  # removed since the request was let in
            raise NotFoundException(detail="no such source")
        if outcome == "full":
            raise ForbiddenException(
                detail=f"this source holds its most users ({MAX_USERS_PER_SOURCE:,}); "
                "deprovision some or add another source"
            )
        if outcome == "taken":
            raise UniquenessException(detail="a user with this userName exists")
        return self._resource(user)

    async def update(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
    ) -> Resource[Any]:
        # Only whether a password came is looked at; it goes no further than this line.
        password_given = getattr(resource, "password", None) is not None
        resource.password = None  # type: ignore[attr-defined]
        before = await self._stored(resource.id)
        _check_version(expected_version, before)
        record = self._record(resource, created_ms=before.record["created"])
        name_key = self._name_key(record)
        await self._check_name_free(name_key, before.user_id)
        changes = scim_events.on_update(
            before.user_id,
            before.record,
            before.version,
            record,
            password_request=self.request_digest if password_given else None,
        )
        await self._enqueue(changes)
        if _same(record, before.record):
            return self._resource(before)
        return await self._write(StoredUser(before.user_id, record, before.version), name_key)

    async def _check_name_free(self, name_key: str, user_id: str) -> None:
        """409 when the userName is another user's (checked again by the write)."""
        owner = await self._call(self.users.id_named, self.source.name, name_key)
        if owner is not None and owner != user_id:
            raise UniquenessException(detail="a user with this userName exists")

    async def _write(self, user: StoredUser, name_key: str) -> Resource[Any]:
        outcome = await self._call(
            self.users.update, self.source.name, user, user.version, name_key
        )
        if outcome in ("gone", "nosource"):
            raise NotFoundException(detail="no such user")
        if outcome == "moved":
            raise PreconditionFailedException
        if outcome == "taken":
            raise UniquenessException(detail="a user with this userName exists")
        return self._resource(StoredUser(user.user_id, user.record, int(outcome)))

    async def delete(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        expected_version: str | None = None,
    ) -> None:
        before = await self._stored(resource_id)
        _check_version(expected_version, before)
        await self._enqueue(scim_events.on_delete(before.user_id, before.record, before.version))
        outcome = await self._call(
            self.users.delete, self.source.name, before.user_id, before.version
        )
        if outcome == "gone":
            raise NotFoundException(detail="no such user")
        if outcome == "moved":
            raise PreconditionFailedException

    # -- helpers ----------------------------------------------------------------------------

    async def _call(self, fn, *args):
        return await run_in_threadpool(fn, *args)

    async def _stored(self, resource_id: str | None) -> StoredUser:
        stored = None
        if resource_id and len(resource_id) == _ID_LENGTH and resource_id.isalnum():
            stored = await self._call(self.users.get, self.source.name, resource_id)
        if stored is None:
            raise NotFoundException(detail="no such user")
        return stored

    async def _enqueue(self, changes: list[scim_events.Change]) -> None:
        if not changes:
            return
        try:
            events = scim_events.to_events(changes, self.source, self.now)
        except MalformedEvent as exc:
            raise InvalidValueException(detail=f"userName: {exc}") from None
        await self.intake.enqueue(self.source, events)

    def _name_key(self, record: dict[str, Any]) -> str:
        try:
            name_key = self.name_binding.comparable(record["userName"])
        except ValueError:
            raise InvalidValueException(detail="userName cannot be compared") from None
        size = len(record_json(record)) + 2 * len(name_key.encode())
        if size > MAX_USER_BYTES:
            raise InvalidValueException(
                detail=f"the user takes {size} bytes; at most {MAX_USER_BYTES} are kept"
            )
        return name_key

    def _record(self, resource: Resource[Any], *, created_ms: int) -> dict[str, Any]:
        """What is stored of a user: the STORED attributes, each bounded."""
        dumped = resource.model_dump(mode="json", by_alias=True, exclude_none=True)
        record = {name: dumped[name] for name in STORED if name in dumped}
        _check_bounds(record)
        record["created"] = created_ms
        record["lastModified"] = to_ms(self.now)
        return record

    def _resource(self, stored: StoredUser) -> Resource[Any]:
        record = dict(stored.record)
        created, modified = from_ms(record.pop("created")), from_ms(record.pop("lastModified"))
        resource = self.model.model_validate(record)
        resource.id = stored.user_id
        resource.meta = Meta(
            resource_type="User",
            created=created,
            last_modified=modified,
            version=f'W/"{stored.version}"',
        )
        return resource


def _same(record: dict[str, Any], stored: dict[str, Any]) -> bool:
    ignored = ("created", "lastModified")
    return {k: v for k, v in record.items() if k not in ignored} == {
        k: v for k, v in stored.items() if k not in ignored
    }


def _check_version(expected_version: str | None, stored: StoredUser) -> None:
    """412 unless the If-Match version (if any) is the stored one."""
    expected = _version_number(expected_version)
    if expected is not None and expected != stored.version:
        raise PreconditionFailedException


def _version_number(version: str | None) -> int | None:
    """Our ETags are W/"<n>"; anything else cannot match (412)."""
    if version is None:
        return None
    digits = version.removeprefix("W/").strip('"')
    if not digits.isdigit():
        raise PreconditionFailedException
    return int(digits)


def _check_bounds(value: Any, path: str = "") -> None:
    """Refuse (400 invalidValue) a string longer than MAX_STRING or a list longer than
    MAX_VALUES anywhere in what would be stored."""
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise InvalidValueException(detail=f"{path} is longer than {MAX_STRING} characters")
    if isinstance(value, list):
        if len(value) > MAX_VALUES:
            raise InvalidValueException(detail=f"{path} has more than {MAX_VALUES} values")
        for item in value:
            _check_bounds(item, path)
    if isinstance(value, dict):
        for key, item in value.items():
            _check_bounds(item, f"{path}.{key}" if path else key)

"""The viewers of the web pages: people who may look, each with a password tokenwarden makes,
shows once, and keeps only as an Argon2id hash (argon2-cffi's RFC 9106 parameters).

`tokenwarden viewers add|list|remove` (worker/cli/viewers.py) and the login form
(worker/ui/access.py) go through the functions here; worker/store/viewer_store.py keeps them.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from worker.errors import InvalidInput, NotFound
from worker.store.viewer_store import Viewer, ViewerStore

__all__ = ["Viewer", "WithPassword", "add_viewer", "check_password", "list_viewers"]

#: A viewer's name: a login or an e-mail address (what an SSO proxy's header names).
_NAME = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,63}")

#: Random bytes in a generated password (24 characters of URL-safe base64).
PASSWORD_BYTES = 18

#: Longest password checked, in characters: a longer one is wrong without being hashed.
MAX_PASSWORD_CHARS = 1024


@dataclass(frozen=True)
class WithPassword:
    """A viewer and their password in clear: shown once, never stored."""

    viewer: Viewer
    password: str = field(repr=False)


def clean_viewer_name(raw: str) -> str:
    name = raw.strip().lower()
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"viewer name {raw.strip()[:80]!r} is not usable: use 1 to 64 lowercase letters, "
            "digits, '.', '_', '@', '+' or '-', starting with a letter or digit "
            "(e.g. alice or alice@school.edu)"
        )
    return name


def usable_name(raw: str) -> str | None:
    """The viewer name `raw` stands for, or None when it cannot be one (a login form's)."""
    try:
        return clean_viewer_name(raw)
    except InvalidInput:
        return None


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@cache
def _decoy_hash() -> str:
    """A hash checked for a name that is no viewer, so both answers take as long."""
    return _hasher().hash(secrets.token_urlsafe(PASSWORD_BYTES))


def add_viewer(store: ViewerStore, name: str, *, now: datetime) -> WithPassword:
    """Conflict when the name is taken."""
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    viewer = Viewer(
        name=clean_viewer_name(name),
        password_hash=_hasher().hash(password),
        created_at=now,
        generation=secrets.token_hex(8),
    )
    store.add(viewer)
    return WithPassword(viewer, password)


def list_viewers(store: ViewerStore) -> list[Viewer]:
    return store.all()


def remove_viewer(store: ViewerStore, name: str) -> None:
    """NotFound when there is no such viewer. Their cookies are refused from now on."""
    clean = clean_viewer_name(name)
    if not store.remove(clean):
        raise NotFound(f"no viewer named {clean!r}; `tokenwarden viewers list` shows them")


def check_password(store: ViewerStore, name: str | None, password: str) -> Viewer | None:
    """The viewer when `password` is theirs, else None; as slow for a name that is no viewer
    (or none at all) as for a wrong password. A hash made with weaker parameters than today's
    is made again."""
    viewer = store.get(name) if name is not None else None
    too_long = len(password) > MAX_PASSWORD_CHARS
    try:
        _hasher().verify(
            viewer.password_hash if viewer else _decoy_hash(), "" if too_long else password
        )
    except (VerificationError, InvalidHashError):
        return None
    if viewer is None or too_long:
        return None
    if _hasher().check_needs_rehash(viewer.password_hash):
        store.set_hash(viewer.name, viewer.generation, _hasher().hash(password))
    return viewer

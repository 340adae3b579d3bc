"""The login cookie of the web pages: the viewer's name, their generation and when it expires,
signed (itsdangerous, HMAC-SHA256) with a key derived from the master key (HKDF), so every
replica of `serve` signs and checks alike and no key of its own needs keeping. Pure: the
keys and `now` are handed in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from itsdangerous import BadSignature, URLSafeSerializer

#: What the cookie's signing keys are derived for (HKDF's info): a key of its own, so a
#: cookie's signature tells nothing of any other use of the master key.
KEY_PURPOSE = "tokenwarden web pages session v1"

#: itsdangerous's salt: a value signed for something else never passes as a session.
_SALT = "tokenwarden.ui.session"

#: Longest cookie value read, in characters (a real one is about 150).
MAX_COOKIE_CHARS = 512


@dataclass(frozen=True)
class Session:
    viewer: str
    generation: str
    expires: int  # seconds since the epoch


def _serializer(keys: list[bytes]) -> URLSafeSerializer:
    # itsdangerous signs with the last key and accepts each: the primary master key's last.
    return URLSafeSerializer(list(reversed(keys)), salt=_SALT)


def sign(session: Session, keys: list[bytes]) -> str:
    """The cookie's value; `keys`: derived from each master key, the primary's first."""
    return _serializer(keys).dumps([session.viewer, session.generation, session.expires])


def read(value: str, keys: list[bytes], now: datetime) -> Session | None:
    """The session `value` holds when its signature is good and it has not expired; else
    None (whatever was wrong: nothing to learn from a refusal)."""
    if len(value) > MAX_COOKIE_CHARS:
        return None
    try:
        viewer, generation, expires = _serializer(keys).loads(value)
    except (BadSignature, ValueError, TypeError):
        return None
    if not (isinstance(viewer, str) and isinstance(generation, str) and type(expires) is int):
        return None
    if now.timestamp() >= expires:
        return None
    return Session(viewer, generation, expires)

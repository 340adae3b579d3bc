"""Encryption at rest: every private key and token credential is sealed before it reaches Redis.

AES-256-GCM under a master key, with the record's Redis key and field as associated data, so a
sealed value copied into another record does not open. A sealed value names the master key that
sealed it (`tw1:<key id>:<base64>`), which is what lets a new master key be added while values
sealed under the old one stay readable until they are re-sealed.

The keyring holds the primary key (seals everything new) and older keys (open only).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from worker.errors import ConfigError, SecretsError, UnknownMasterKey

#: Prefix of every sealed value; the number is the format version.
SEALED_PREFIX = "tw1"

#: Master keys are 32 random bytes (AES-256), written as URL-safe base64.
MASTER_KEY_BYTES = 32

#: GCM nonce length in bytes (random per value; 2**32 values per key stay far below the bound).
NONCE_BYTES = 12


def generate_master_key() -> str:
    """A new master key in the text form TOKENWARDEN_MASTER_KEY and master.key take."""
    return base64.urlsafe_b64encode(os.urandom(MASTER_KEY_BYTES)).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


@dataclass(frozen=True, repr=False)
class MasterKey:
    key_id: str
    _secret: bytes

    @classmethod
    def from_text(cls, text: str, *, where: str) -> MasterKey:
        try:
            secret = _b64decode(text.strip())
        except (binascii.Error, ValueError, UnicodeEncodeError):
            secret = b""
        if len(secret) != MASTER_KEY_BYTES:
            raise ConfigError(
                f"a master key in {where} is not {MASTER_KEY_BYTES} bytes of URL-safe base64; "
                "make one with `tokenwarden secrets generate-key`"
            )
        digest = hashlib.sha256(b"tokenwarden master key id\0" + secret).hexdigest()
        return cls(key_id=digest[:8], _secret=secret)

    def __repr__(self) -> str:  # never show the key itself
        return f"MasterKey(key_id={self.key_id!r})"


@dataclass(frozen=True)
class _Keys:
    primary: MasterKey
    by_id: dict[str, MasterKey]


class Keyring:
    """The primary master key and the older ones still accepted for opening."""

    def __init__(self, keys: Iterable[MasterKey]):
        ordered = list(keys)
        if not ordered:
            raise ConfigError("no master key configured")
        by_id: dict[str, MasterKey] = {}
        for key in ordered:
            by_id.setdefault(key.key_id, key)
        # One attribute holds every key, so a keyring refreshed in place (see
        # worker.crypto.masterkey.LiveKeyring) is seen by other threads whole, never half.
        self._keys = _Keys(ordered[0], by_id)

    @classmethod
    def from_text(cls, text: str, *, where: str) -> Keyring:
        """Keys separated by commas or newlines, primary first; `#` starts a comment line."""
        parts = []
        for line in text.splitlines():
            if line.strip().startswith("#"):
                continue
            parts.extend(
                MasterKey.from_text(item, where=where) for item in line.split(",") if item.strip()
            )
        if not parts:
            raise ConfigError(f"{where} holds no master key")
        return cls(parts)

    @property
    def primary(self) -> MasterKey:
        return self._keys.primary

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys.by_id)

    def seal(self, plaintext: bytes, context: str) -> str:
        primary = self.primary
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(primary._secret).encrypt(nonce, plaintext, context.encode())
        body = base64.b64encode(nonce + sealed).decode("ascii")
        return f"{SEALED_PREFIX}:{primary.key_id}:{body}"

    def open(self, sealed: str, context: str) -> bytes:
        key_id, body = self._split(sealed)
        key = self._key(key_id)
        raw = base64.b64decode(body)
        nonce, ciphertext = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
        try:
            return AESGCM(key._secret).decrypt(nonce, ciphertext, context.encode())
        except InvalidTag:
            raise SecretsError(
                f"a stored secret ({context}) failed its integrity check: it was altered "
                "or moved; restore it from a backup"
            ) from None

    def derive(self, purpose: str) -> list[bytes]:
        """A 32-byte key for `purpose` from each master key (HKDF-SHA256), the primary's
        first: every replica with the same master keys derives the same ones, and a value made
        under an older key stays verifiable until that key is dropped."""
        keys = self._keys
        ordered = [keys.primary, *(k for k in keys.by_id.values() if k is not keys.primary)]
        return [
            HKDF(hashes.SHA256(), 32, salt=None, info=purpose.encode()).derive(key._secret)
            for key in ordered
        ]

    def _key(self, key_id: str) -> MasterKey:
        key = self._keys.by_id.get(key_id)
        if key is None:
            raise UnknownMasterKey(
                f"a stored secret was sealed with master key {key_id}, which is not configured "
                f"(configured: {', '.join(self.key_ids)}); add that key after the primary one",
                key_id,
            )
        return key

    def _adopt(self, other: Keyring) -> None:
        """Take `other`'s keys in one step."""
        self._keys = other._keys

    def needs_reseal(self, sealed: str) -> bool:
        key_id, _ = self._split(sealed)
        return key_id != self.primary.key_id

    @staticmethod
    def _split(sealed: str) -> tuple[str, str]:
        prefix, _, rest = sealed.partition(":")
        key_id, _, body = rest.partition(":")
        if prefix != SEALED_PREFIX or not key_id or not body:
            raise SecretsError("a stored secret is not in tokenwarden's sealed format")
        return key_id, body

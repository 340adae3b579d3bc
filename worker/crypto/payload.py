"""The decrypted server token: a MIME text part whose body wraps the OAuth credentials in JSON.

    -----BEGIN MESSAGE-----
    {"consumer_key": ..., "consumer_secret": ..., "access_token": ..., "access_secret": ...,
     "access_token_expiry": "2026-01-17T11:02:21Z"}
    -----END MESSAGE-----

All four credentials are secrets: they live in `SecretStr` so no repr, log line or validation
error can show them.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
from datetime import UTC, datetime

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    SecretStr,
    ValidationError,
    field_validator,
)

from worker.errors import InvalidTime, InvalidTokenPayload
from worker.timefmt import in_range_utc

_BEGIN = "-----BEGIN MESSAGE-----"
_END = "-----END MESSAGE-----"

CREDENTIAL_FIELDS = ("consumer_key", "consumer_secret", "access_token", "access_secret")


class TokenCredentials(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="ignore", str_strip_whitespace=True, hide_input_in_errors=True
    )

    consumer_key: SecretStr
    consumer_secret: SecretStr
    access_token: SecretStr
    access_secret: SecretStr
    access_token_expiry: AwareDatetime

    @field_validator(*CREDENTIAL_FIELDS)
    @classmethod
    def _not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("it is empty")
        return value

    @field_validator("access_token_expiry")
    @classmethod
    def _expiry_in_range(cls, value: datetime) -> datetime:
        try:
            return in_range_utc(value, what="it")
        except InvalidTime as exc:
            raise ValueError(str(exc)) from None

    @property
    def expires_at(self) -> datetime:
        return self.access_token_expiry.astimezone(UTC)

    @property
    def consumer_id(self) -> str:
        """A stable, non-secret id of the consumer key (which is itself a secret)."""
        return _digest("consumer", self.consumer_key.get_secret_value())

    @property
    def fingerprint(self) -> str:
        """A stable, non-secret id of this exact token, to recognise a re-install."""
        return _digest(
            "token", self.consumer_key.get_secret_value(), self.access_token.get_secret_value()
        )

    def sealable(self) -> bytes:
        """The four credentials, for sealing only, in a compact form (see pack_credentials)."""
        return pack_credentials({f: getattr(self, f).get_secret_value() for f in CREDENTIAL_FIELDS})


#: Marks the compact form of sealed credentials (a token is stored a million times: the JSON
#: keys alone would cost some 80 bytes each).
_PACKED = "tw-cred-1"


def pack_credentials(values: dict[str, str]) -> bytes:
    """The four credentials, newline separated in CREDENTIAL_FIELDS order."""
    if any("\n" in values[f] for f in CREDENTIAL_FIELDS):
        return json.dumps(values, separators=(",", ":")).encode()  # odd values: keep JSON
    return "\n".join([_PACKED, *(values[f] for f in CREDENTIAL_FIELDS)]).encode()


def unpack_credentials(data: bytes) -> dict[str, str]:
    text = data.decode()
    if text.startswith(_PACKED + "\n"):
        return dict(zip(CREDENTIAL_FIELDS, text.split("\n")[1:], strict=True))
    return json.loads(text)


def _digest(purpose: str, *parts: str) -> str:
    material = "\0".join(("tokenwarden", purpose, *parts)).encode()
    return hashlib.sha256(material).hexdigest()[:32]


def parse_token_payload(mime_part: bytes, *, source: str) -> TokenCredentials:
    """From the decrypted MIME part to validated credentials, or an error naming the problem."""
    text = _message_body(mime_part)
    start, end = text.find(_BEGIN), text.find(_END)
    if start < 0 or end < start:
        raise InvalidTokenPayload(
            f"{source} decrypted, but holds no -----BEGIN MESSAGE----- block; "
            "it is not a server token"
        )
    try:
        document = json.loads(text[start + len(_BEGIN) : end])
    except RecursionError:
        raise InvalidTokenPayload(
            f"{source} decrypted, but its message nests JSON too deeply to be a server token"
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidTokenPayload(
            f"{source} decrypted, but its message is not JSON (line {exc.lineno}, column "
            f"{exc.colno}); download the server token again"
        ) from None
    if not isinstance(document, dict):
        raise InvalidTokenPayload(f"{source} decrypted, but its message is not a JSON object")
    try:
        return TokenCredentials.model_validate(document)
    except ValidationError as exc:
        raise InvalidTokenPayload(f"{source} decrypted, but {_first_problem(exc)}") from None


def _message_body(mime_part: bytes) -> str:
    # Apple's part is 7bit text/plain, so the block is visible as it is; a part sent with a
    # transfer encoding is decoded by the email parser first.
    if _BEGIN.encode() in mime_part:
        return mime_part.decode("utf-8", errors="replace")
    message = email.message_from_bytes(mime_part, policy=email.policy.compat32)
    body = message.get_payload(decode=True)
    return (body if isinstance(body, bytes) else mime_part).decode("utf-8", errors="replace")


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_input=False, include_url=False)[0]
    field = ".".join(str(part) for part in error["loc"]) or "the token"
    if error["type"] == "missing":
        return f"its JSON has no {field!r} field; download the server token again"
    if field == "access_token_expiry" and "out of range" in error["msg"]:
        return f"its 'access_token_expiry' {error['msg'].removeprefix('Value error, it ')}"
    if field == "access_token_expiry":
        return f"its 'access_token_expiry' is not an RFC 3339 time with an offset ({error['msg']})"
    return f"its {field!r} field is unusable ({error['msg']})"

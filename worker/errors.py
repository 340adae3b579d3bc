"""Every error tokenwarden raises on purpose, under one root.

    TokenwardenError                 anything tokenwarden reports to a user (exit code 1)
    ├── ConfigError                  the environment or a setting is wrong (exit code 2)
    ├── StoreUnavailable             Redis cannot be reached (exit code 3)
    ├── AppleError                   Apple's enrollment service said no, or could not be asked
    │   ├── AppleRejected            Apple refuses the token: it is dead
    │   ├── AppleTermsNotAccepted    new terms wait to be accepted in the portal
    │   ├── AppleUnreachable         timeouts, connection errors, 429, 5xx (exit code 3)
    │   └── AppleMalformed           an answer that cannot be understood
    ├── DirectoryError               a directory (Okta, Entra ID, Google) could not be asked
    │   ├── DirectoryCredentialsRejected   its credential is expired, revoked or lacks rights
    │   │                            (exit code 2)
    │   └── DirectoryUnreachable     timeouts, connection errors, 5xx, throttled (exit code 3)
    ├── SecretsError                 a sealed value cannot be opened (wrong master key)
    │   └── UnknownMasterKey         sealed under a master key this process does not hold
    ├── NotFound                     a named thing (or a part of it) does not exist
    ├── Conflict                     the request clashes with what is stored
    │   ├── DuplicateServer
    │   ├── StaleToken               an older token than the installed one
    │   ├── ConsumerKeyChanged       a token from another ASM/ABM server entry
    │   └── ConcurrentChange         the state moved under a decision; it is decided again
    └── InvalidInput                 the user gave something unusable
        ├── MalformedEvent           not a valid tokenwarden CloudEvent (raised in events/)
        ├── InvalidServerName
        ├── InvalidTime
        ├── InvalidKeyMaterial       certificate or private key unreadable or mismatched
        ├── InvalidEvent             an event refused at publish time
        └── TokenFileError           a server token file that cannot be used
            ├── WrongRecipient       encrypted to a certificate this server does not hold
            ├── UnsupportedCipher
            ├── InvalidTokenPayload  the decrypted JSON is wrong
            └── TokenExpired

Messages are written for the person at the terminal: what was wrong, with which file or name,
and what to do. They never contain secrets.

The root, InvalidInput and MalformedEvent are defined in events/errors.py, the lowest layer, so
that events/ raises under the root without importing worker/ (imports go scheduler -> worker ->
events); they are re-exported here.
"""

from __future__ import annotations

from events.errors import InvalidInput, MalformedEvent, TokenwardenError

__all__ = [
    "AppleError",
    "AppleMalformed",
    "AppleRejected",
    "AppleTermsNotAccepted",
    "AppleUnreachable",
    "ConcurrentChange",
    "ConfigError",
    "Conflict",
    "ConsumerKeyChanged",
    "DirectoryCredentialsRejected",
    "DirectoryError",
    "DirectoryUnreachable",
    "DuplicateServer",
    "InvalidEvent",
    "InvalidInput",
    "InvalidKeyMaterial",
    "InvalidServerName",
    "InvalidTime",
    "InvalidTokenPayload",
    "MalformedEvent",
    "NotFound",
    "SecretsError",
    "StaleToken",
    "StoreUnavailable",
    "TokenExpired",
    "TokenFileError",
    "TokenwardenError",
    "UnknownMasterKey",
    "UnsupportedCipher",
    "WrongRecipient",
]


class ConfigError(TokenwardenError):
    """The environment or a setting is unusable."""

    exit_code = 2


class StoreUnavailable(TokenwardenError):
    """Redis cannot be reached or answered with an error."""

    exit_code = 3


class AppleError(TokenwardenError):
    """Apple's enrollment service refused a token or could not be asked. `code` is Apple's
    error code or what went wrong on the way; the message never holds a credential."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class AppleRejected(AppleError):
    """Apple refuses the token (revoked, replaced, expired, bad signature, unknown consumer)."""


class AppleTermsNotAccepted(AppleError):
    """Someone with the right role must accept Apple's new terms in the portal."""


class AppleUnreachable(AppleError):
    """Apple could not be reached, or stayed busy (429, 5xx) through the retries."""

    exit_code = 3


class AppleMalformed(AppleError):
    """Apple answered something tokenwarden cannot understand."""


class DirectoryError(TokenwardenError):
    """A directory polled for its users could not be asked. The message is one line with the
    provider's own error code or status, and never holds a credential."""


class DirectoryCredentialsRejected(DirectoryError):
    """The directory refused tokenwarden's credential (expired, revoked, or without the
    permission the checks need): nothing can be learned until an admin fixes it (exit code
    2, as any setting that is wrong)."""

    exit_code = 2


class DirectoryUnreachable(DirectoryError):
    """The directory could not be reached, or stayed busy (429, 5xx) through the retries."""

    exit_code = 3


class SecretsError(TokenwardenError):
    """A sealed value cannot be opened with the configured master keys."""


class UnknownMasterKey(SecretsError):
    """A sealed value names a master key (`key_id`) that is not configured."""

    def __init__(self, message: str, key_id: str):
        super().__init__(message)
        self.key_id = key_id


class NotFound(TokenwardenError):
    """A named server, key or token does not exist."""


class Conflict(TokenwardenError):
    """The request clashes with what is stored."""


class DuplicateServer(Conflict):
    pass


class StaleToken(Conflict):
    pass


class ConsumerKeyChanged(Conflict):
    pass


class ConcurrentChange(Conflict):
    """What a decision was based on changed before it was written: nothing was written, and
    the caller decides again on fresh state."""


class InvalidServerName(InvalidInput):
    pass


class InvalidTime(InvalidInput):
    pass


class InvalidKeyMaterial(InvalidInput):
    pass


class InvalidEvent(InvalidInput):
    pass


class TokenFileError(InvalidInput):
    """A server token file cannot be read, decrypted or understood."""


class WrongRecipient(TokenFileError):
    pass


class UnsupportedCipher(TokenFileError):
    pass


class InvalidTokenPayload(TokenFileError):
    pass


class TokenExpired(TokenFileError):
    pass

"""What `tokens install` asks Apple before it stores a token, and what it makes of the answer:
who downloaded the token (Apple knows it better than whoever types it), which server entry it
belongs to, and whether Apple refuses it outright.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from worker.apple.verdicts import AppleAccount, Verdict
from worker.crypto.payload import TokenCredentials
from worker.errors import (
    AppleError,
    AppleRejected,
    AppleTermsNotAccepted,
    AppleUnreachable,
    InvalidInput,
)
from worker.names import clean_user, user_key
from worker.records import NEVER_ASKED, AppleState


class AccountAsker(Protocol):
    def account(self, credentials: TokenCredentials) -> AppleAccount: ...


@dataclass(frozen=True)
class AskedApple:
    """Apple's answer at install: the account, or why there is none (a warning to print)."""

    account: AppleAccount | None
    state: AppleState
    warning: str | None = None
    #: Why there is no account (Apple's error), for the error when no downloader is given.
    reason: str | None = None


OFFLINE = AskedApple(account=None, state=NEVER_ASKED)


def ask_apple(
    apple: AccountAsker | None, credentials: TokenCredentials, source: str, now: datetime
) -> AskedApple:
    """Apple's account for the token; AppleRejected (with the file named) when Apple refuses
    it. Apple unreachable, or new terms waiting: no account, and a warning."""
    if apple is None:
        return OFFLINE
    try:
        account = apple.account(credentials)
    except AppleRejected as exc:
        raise AppleRejected(f"{source} was refused by Apple: {exc}", exc.code) from None
    except AppleError as exc:
        return AskedApple(None, _failed_state(exc, now), _warning(exc), reason=str(exc))
    state = AppleState(
        verdict=Verdict.ACCEPTED.value,
        checked_at=now,
        confirmed_at=now,
        server_uuid=account.server_uuid,
    )
    return AskedApple(account, state)


def _failed_state(exc: AppleError, now: datetime) -> AppleState:
    if isinstance(exc, AppleTermsNotAccepted):
        # Not marked confirmed: the next round asks again at once, and its decision records
        # the waiting terms on the server and tells people (the install only warns).
        return AppleState(Verdict.TERMS_NOT_ACCEPTED.value, exc.code, now)
    verdict = Verdict.UNREACHABLE if isinstance(exc, AppleUnreachable) else Verdict.MALFORMED
    return AppleState(verdict.value, exc.code, checked_at=now)


def _warning(exc: AppleError) -> str:
    if isinstance(exc, AppleTermsNotAccepted):
        return f"{exc}; the token is installed, and checked again at the next check"
    return f"Apple could not be asked about the token ({exc}); it is checked at the next check"


def choose_downloader(given: str | None, asked: AskedApple) -> tuple[str, str | None]:
    """Who downloaded the token, and a warning when the person installing it said otherwise:
    Apple's `admin_id` when it has one, else `--downloaded-by`, which is then required."""
    admin = asked.account.admin_id if asked.account else None
    if admin:
        try:
            apple_says = clean_user(admin)
        except InvalidInput:
            apple_says = None
        if apple_says is not None:
            if given is not None and user_key(given) != user_key(apple_says):
                return apple_says, (
                    f"Apple says {apple_says} downloaded this token, not {clean_user(given)}; "
                    f"{apple_says} is recorded"
                )
            return apple_says, None
    if given is None:
        if asked is OFFLINE:
            why = "--offline was given"
        elif asked.reason:
            why = f"Apple could not be asked ({asked.reason})"
        else:
            why = "Apple did not say who downloaded the token"
        raise InvalidInput(
            f"{why}: give --downloaded-by USER (the Managed Apple Account that downloaded "
            "the token)"
        )
    return clean_user(given), None

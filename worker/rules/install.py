"""Installing a token: whether a decrypted token may be installed for a server, and as what
(check_install), and what installing it decides (decide_install).

Apple sets a token's expiry exactly one year after its download, and a new download invalidates
the installed token, so a token that expires no later than the installed one is stale.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from events import catalog
from events.cloudevent import stable_id
from worker.errors import ConsumerKeyChanged, InvalidTime, StaleToken, TokenExpired
from worker.records import Token
from worker.rules.decision import AuditEntry, Decision
from worker.rules.facts import NO_REPLACEMENT, InstallFacts
from worker.rules.replacement import Cause, ReplacementNeeded, for_new_token
from worker.rules.replacing import replace_token, resolve_replacement
from worker.timefmt import format_rfc3339

#: Longest a token lives after download: a year, plus a day for leap years and clock skew.
LONGEST_TOKEN_LIFE = timedelta(days=367)

#: How far in the future a download time may be before it is a typo, not clock skew.
CLOCK_SKEW = timedelta(minutes=5)


class InstallOutcome(enum.Enum):
    INSTALL = "installed"
    ALREADY_INSTALLED = "already installed"


@dataclass(frozen=True)
class NewToken:
    consumer_id: str
    fingerprint: str
    expires_at: datetime
    downloaded_at: datetime
    #: Where the download time came from, to name it in errors.
    downloaded_at_source: str = "downloaded-at"
    #: The MDM server entry in ASM/ABM the token belongs to, when Apple was asked.
    server_uuid: str | None = None


def check_download_time(
    downloaded_at: datetime, expires_at: datetime, now: datetime, what: str = "downloaded-at"
) -> None:
    if downloaded_at > now + CLOCK_SKEW:
        raise InvalidTime(
            f"{what} {format_rfc3339(downloaded_at)} is in the future "
            f"(now is {format_rfc3339(now)}); give the time the token was downloaded"
        )
    if downloaded_at >= expires_at:
        raise InvalidTime(
            f"{what} {format_rfc3339(downloaded_at)} is not before the token's expiry "
            f"{format_rfc3339(expires_at)}; give the time the token was downloaded"
        )
    if expires_at - downloaded_at > LONGEST_TOKEN_LIFE:
        raise InvalidTime(
            f"{what} {format_rfc3339(downloaded_at)} is more than a year before the "
            f"token's expiry {format_rfc3339(expires_at)}, and Apple sets the expiry one year "
            "after download; check the date"
        )


def check_install(
    new: NewToken,
    installed: Token | None,
    *,
    now: datetime,
    allow_consumer_change: bool,
    source: str,
) -> InstallOutcome:
    if installed is not None and installed.fingerprint == new.fingerprint:
        return InstallOutcome.ALREADY_INSTALLED
    if new.expires_at <= now:
        raise TokenExpired(
            f"{source} expired at {format_rfc3339(new.expires_at)}; "
            "download a new server token from ASM/ABM"
        )
    check_download_time(new.downloaded_at, new.expires_at, now, new.downloaded_at_source)
    if installed is None:
        return InstallOutcome.INSTALL
    if new.expires_at <= installed.expires_at:
        raise StaleToken(
            f"{source} is older than the installed token (it expires "
            f"{format_rfc3339(new.expires_at)}, the installed one "
            f"{format_rfc3339(installed.expires_at)}); downloading the installed token made it "
            "invalid: install the newest download"
        )
    if allow_consumer_change:
        return InstallOutcome.INSTALL
    known = installed.apple.server_uuid
    if new.server_uuid and known:
        # Apple names the server entry of both: that settles it, whatever the consumer keys.
        if new.server_uuid != known:
            raise ConsumerKeyChanged(
                f"{source} belongs to a different MDM server entry in ASM/ABM than the "
                f"installed token (Apple says server {new.server_uuid}, not {known}); check "
                "you are signed in to the right organization and downloaded it for the right "
                "server, or repeat with --allow-server-change if the server was re-created "
                "in the portal"
            )
        return InstallOutcome.INSTALL
    if new.consumer_id != installed.consumer_id:
        raise ConsumerKeyChanged(
            f"{source} belongs to a different MDM server entry in ASM/ABM than the installed "
            f"token (consumer {new.consumer_id[:12]} instead of {installed.consumer_id[:12]}); "
            "check you are signed in to the right organization, or repeat with "
            "--allow-server-change if the server was re-created in the portal"
        )
    return InstallOutcome.INSTALL


def decide_install(
    facts: InstallFacts, token: Token, now: datetime, *, rotation_pending: bool = False
) -> Decision:
    """What installing `token` decides: open its replacement at once when a cause recorded
    earlier already dooms it (events can arrive before the token they doom is installed), or
    when its server's policy rotates keys and it is still for the old key (`rotation_pending`:
    a key is staged, its certificate not uploaded); and close the replaced token's
    replacement (`token.replaced`)."""
    server, old = facts.server, facts.replaced
    decision = Decision(now=now, audit=AuditEntry("install", _install_audit(facts, token)))
    state = NO_REPLACEMENT
    needs = for_new_token(token, facts.causes, facts.staged_certificate)
    if rotation_pending and facts.staged_certificate and not any(n.certificate for n in needs):
        needs.append(_pending_rotation(token, facts.staged_certificate, now))
    for need in needs:
        state = replace_token(decision, state, need, server, now)
    if old is not None:
        resolve_replacement(decision, facts.replaced_replacement, server, old, token, now)
    return decision


def _pending_rotation(token: Token, certificate: str, now: datetime) -> ReplacementNeeded:
    """The new key waits: the token must be replaced by one made for it (a key change, as
    `keys rotate` records, soon: the token works but is tied to the old key)."""
    cause = Cause(
        type=catalog.KEY_REGENERATED,
        id=stable_id(catalog.KEY_REGENERATED, "pending", token.id),
        source=catalog.SOURCE_WORKER,
        time=now,
    )
    return ReplacementNeeded(token, cause, certificate)


def _install_audit(facts: InstallFacts, token: Token) -> dict[str, object]:
    return {
        "server": facts.server.name,
        "org": facts.server.org or None,
        "token_id": token.id,
        "downloaded_by": token.downloaded_by,
        "downloaded_at": format_rfc3339(token.downloaded_at),
        "expires_at": format_rfc3339(token.expires_at),
        "supersedes": facts.replaced.id if facts.replaced else None,
    }

"""Which server tokens must be replaced, and why: pure functions of (cause, tokens, now).

A *cause* is an event that can kill a token: the downloader's password changed or they left
(user causes), or a new key or a new token was made for the server (server causes). A token is
affected by a cause when it is the current token and was downloaded strictly before the cause
happened; a token downloaded afterwards already reflects it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from events import catalog
from worker.names import user_key
from worker.records import TOKEN_CURRENT, Token


@dataclass(frozen=True)
class Cause:
    """The event that makes a token replaceable, as recorded in a replacement's reasons."""

    type: str
    id: str
    source: str
    time: datetime

    @property
    def urgency(self) -> catalog.Urgency:
        return catalog.URGENCY_BY_TYPE[self.type]


@dataclass(frozen=True)
class ReplacementNeeded:
    token: Token
    cause: Cause
    #: PEM of the certificate the admin must upload (a staged key tokenwarden holds), if any.
    certificate: str | None = None


#: A token downloaded this little before a new-token or new-key event is taken to be the one
#: the event announces: the portal names files to the second, and whatever reports the event
#: stamps it a little later. (User causes have no margin: a false alarm beats a dead token.)
SERVER_CAUSE_MARGIN = timedelta(minutes=2)


def affected(token: Token, cause: Cause) -> bool:
    cutoff = cause.time - SERVER_CAUSE_MARGIN if cause.type in catalog.SERVER_EVENTS else cause.time
    return token.status == TOKEN_CURRENT and token.downloaded_at < cutoff


def for_user_cause(cause: Cause, user: str, tokens: Iterable[Token]) -> list[ReplacementNeeded]:
    """Password change or departure of `user`: every current token they downloaded before it.

    An unknown user simply has no tokens: nothing is affected, and that is not an error.
    """
    wanted = user_key(user)
    return [
        ReplacementNeeded(token=token, cause=cause)
        for token in sorted(tokens, key=lambda t: t.id)
        if user_key(token.downloaded_by) == wanted and affected(token, cause)
    ]


def for_server_cause(
    cause: Cause, current_token: Token | None, staged_certificate: str | None
) -> list[ReplacementNeeded]:
    """A new key or a new token for the server: its installed token from before it.

    For a new key, the certificate of the staged key (when tokenwarden holds one) travels with
    the decision: it is the file the admin must upload before downloading a new token.
    """
    if current_token is None or not affected(current_token, cause):
        return []
    certificate = staged_certificate if cause.type == catalog.KEY_REGENERATED else None
    return [ReplacementNeeded(token=current_token, cause=cause, certificate=certificate)]


def for_new_token(
    token: Token, recorded: Iterable[Cause], staged_certificate: str | None = None
) -> list[ReplacementNeeded]:
    """A token being installed that was downloaded before a cause already seen (events can
    arrive before the token they doom is installed): it must be replaced from the start."""
    return [
        ReplacementNeeded(
            token=token,
            cause=cause,
            certificate=staged_certificate if cause.type == catalog.KEY_REGENERATED else None,
        )
        for cause in sorted(recorded, key=lambda c: c.time)
        if affected(token, cause)
    ]

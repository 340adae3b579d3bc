"""What a directory client answers, whatever the directory: for each login asked about, what
was observed of that person (found or not, enabled or not, when their password last changed),
or why it could not be observed.

The rules (worker/rules/directory.py) decide what an observation means for tokens; a client
only reports. "Not found" is an Observation with `found=False`, and a client gives one only for
a real "no such user" answer of the provider (its own 404 with its own error shape): an error
page, a 500 or a timeout is Unobserved, never a departure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol


class WatchedLogin(NamedTuple):
    """A directory login to ask about, and since when changes matter: the earliest download
    of the current tokens its Managed Apple Account holds (Google's Reports API is asked for
    password changes from then)."""

    login: str
    since: datetime


@dataclass(frozen=True)
class Observation:
    login: str
    #: False only when the directory said, in its own words, that no such user exists.
    found: bool
    #: False when the account is disabled (Okta SUSPENDED or DEPROVISIONED, Entra
    #: accountEnabled false, Google suspended or archived).
    enabled: bool = True
    #: The directory's own word for the account's state, as `sources check` shows it
    #: (ACTIVE, SUSPENDED, accountEnabled=false, archived, not found, ...).
    status: str = ""
    #: When the password last changed, as the directory says (None: never, or not told).
    password_changed_at: datetime | None = None
    #: When the account's status last changed, when the directory says (Okta's
    #: statusChanged); None otherwise.
    status_changed_at: datetime | None = None


@dataclass(frozen=True)
class Unobserved:
    """A login that could not be observed this round (one line of why, never a credential):
    nothing is concluded about it."""

    login: str
    why: str


class DirectoryClient(Protocol):
    """One source's directory. Raises DirectoryCredentialsRejected when the directory refuses
    the credential (every later request would fail the same way), DirectoryUnreachable when it
    cannot be reached at all; a failure about one login is that login's Unobserved."""

    #: HTTP requests made so far (token requests included): the benchmark's count.
    requests_made: int

    def observe(self, logins: Sequence[WatchedLogin]) -> list[Observation | Unobserved]:
        """One answer per login, in the order asked."""
        ...

    def close(self) -> None: ...

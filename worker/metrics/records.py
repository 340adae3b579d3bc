"""What a scrape reads from the store, as plain frozen records. Pure: no I/O (the store's
EstateMetricsStore builds them; estate.py turns them into metric families). Times are integer
milliseconds since the epoch, as the store keeps them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TokenFacts:
    """A current token, with what its server says of it."""

    token_id: str
    server: str
    org: str
    expires_ms: int
    downloaded_ms: int
    #: Apple's last verdict (worker.apple.verdicts.Verdict value); None: never asked.
    apple_verdict: str | None = None
    #: When Apple last answered about the token (None: never).
    apple_confirmed_ms: int | None = None
    #: When Apple first refused it (None: never); believed until Apple accepts it again.
    apple_rejected_ms: int | None = None


@dataclass(frozen=True)
class TermsPending:
    """A server whose new terms wait to be accepted in the portal, since `since_ms`."""

    server: str
    org: str
    since_ms: int


@dataclass(frozen=True)
class OpenReplacement:
    token_id: str
    opened_ms: int
    #: The urgency of its most urgent reason, and the type of each reason it holds.
    urgency: str
    reason_types: tuple[str, ...]


@dataclass(frozen=True)
class SourceFacts:
    """A directory source asked on a schedule, and how its rounds went."""

    name: str
    last_success_ms: int | None
    failing: bool


@dataclass(frozen=True)
class EstateFacts:
    tokens: list[TokenFacts] = field(default_factory=list)
    terms_pending: list[TermsPending] = field(default_factory=list)
    replacements: list[OpenReplacement] = field(default_factory=list)
    #: Dead letters ever recorded (the stream is capped; this is its count of entries added).
    dead_total: int = 0
    #: Deliveries by status: pending, parked, failed.
    deliveries: dict[str, int] = field(default_factory=dict)
    #: Outgoing events not yet turned into deliveries.
    outbox_pending: int = 0
    #: When the latest expiry scan ran (None: none ever did).
    last_scan_ms: int | None = None
    sources: list[SourceFacts] = field(default_factory=list)

"""What each page reads, through the stores of the App (blocking calls: the pages run them in
Starlette's thread pool, off the event loop). Reads are bounded: the whole estate (at most one
row per server), else the newest entries of capped streams and indexes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker import registry
from worker.bootstrap import App
from worker.errors import NotFound
from worker.notify.records import PENDING, Delivery
from worker.records import KeyPair, Replacement, Server, Token
from worker.rules.policy import Policy
from worker.services import sources as sources_service
from worker.store.page_reads import EstateEntry
from worker.store.source_store import PollState

#: Newest audit entries a server page looks through for that server's history.
AUDIT_WINDOW = 2_000

#: Newest deliveries looked through (a server's, the failing ones).
DELIVERY_WINDOW = 1_000

#: Newest audit entries the activity page sums up by source, and rows of each of its tables.
ACTIVITY_WINDOW = 1_000
LISTED = 50

#: What a server id looks like (`srv_` and hex); anything else is no server.
_SERVER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Settings:
    """What the pages take of the settings, and the time they are read at."""

    now: datetime
    thresholds: tuple[int, ...]
    apple_interval_s: int


@dataclass(frozen=True)
class ServerHistory:
    server: Server
    policy: Policy
    tokens: list[Token]
    keys: list[KeyPair]
    #: Every replacement of the server's tokens, open and resolved, by token id.
    replacements: dict[str, Replacement]
    #: The newest AUDIT_WINDOW entries of the audit trail (the view picks the server's).
    audit: list[dict[str, Any]]
    deliveries: list[Delivery]
    #: Each subscription's target as it may be shown (a webhook's host only).
    subscriptions: dict[str, str]

    @property
    def token(self) -> Token | None:
        return next((t for t in self.tokens if t.id == self.server.token_id), None)


@dataclass(frozen=True)
class Activity:
    audit: list[dict[str, Any]]
    dead: list[dict[str, Any]]
    #: Deliveries failed for good, and those still retrying after a failed attempt.
    failed: list[Delivery]
    retrying: list[Delivery]
    subscriptions: dict[str, str]
    #: The directories asked on a schedule, with how their rounds went.
    sources: list[tuple[str, str, PollState]]


def settings(app: App) -> Settings:
    return Settings(
        now=app.now(),
        thresholds=app.settings.scheduler.thresholds,
        apple_interval_s=app.settings.apple.check_interval_s,
    )


def estate(app: App) -> tuple[list[EstateEntry], Settings]:
    """Every server as the estate and timeline pages show it."""
    return app.page_reads.estate(), settings(app)


def server(app: App, server_id: str) -> Server | None:
    if not _SERVER_ID.fullmatch(server_id):
        return None
    return app.store.get_server(server_id)


def server_history(app: App, server_id: str) -> ServerHistory | None:
    """One server's records and the newest entries that may concern it; None: no server."""
    found = server(app, server_id)
    if found is None:
        return None
    tokens = app.store.tokens_of_server(found.id)
    return ServerHistory(
        server=found,
        policy=app.store.policies.effective_for([found])[found.id],
        tokens=tokens,
        keys=app.store.keys_of(found.id),
        replacements=app.store.events.replacements_by_token({t.id for t in tokens}),
        audit=app.store.events.audit(AUDIT_WINDOW),
        deliveries=[
            d for d in app.deliveries.deliveries(limit=DELIVERY_WINDOW) if d.server_id == found.id
        ],
        subscriptions=_subscriptions(app),
    )


def certificate(app: App, server_id: str) -> tuple[Server, KeyPair] | None:
    """The certificate to upload for the server (the staged key's while a rotation waits);
    None: no such server, or it holds no key pair."""
    found = server(app, server_id)
    if found is None:
        return None
    try:
        return found, registry.certificate_to_upload(app.store, found)
    except NotFound:
        return None


def activity(app: App) -> Activity:
    recent = app.deliveries.deliveries(limit=DELIVERY_WINDOW)
    failed = app.deliveries.deliveries(failed_only=True, limit=LISTED)
    listed = [s for s in sources_service.list_sources(app.sources) if s.polls]
    states = sources_service.poll_states(app.sources, listed)
    return Activity(
        audit=app.store.events.audit(ACTIVITY_WINDOW),
        dead=app.store.events.dead_letters(LISTED),
        failed=failed,
        retrying=[d for d in recent if d.status == PENDING and d.last_error][:LISTED],
        subscriptions=_subscriptions(app),
        sources=[(s.name, s.kind, states.get(s.name, PollState())) for s in listed],
    )


def _subscriptions(app: App) -> dict[str, str]:
    return {s.id: s.shown for s in app.deliveries.subscriptions()}

"""Adding, listing, rotating and removing the sources of the HTTP intake."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from worker.errors import NotFound
from worker.intake.sources import (
    Source,
    check_secret,
    clean_kind,
    clean_source_name,
    generate_secret,
    parse_domain_maps,
    secret_hash,
)
from worker.store.source_store import SourceStore


@dataclass(frozen=True)
class WithSecret:
    """A source and its secret in clear: shown once, never stored."""

    source: Source
    secret: str


def add_source(
    sources: SourceStore,
    name: str,
    kind: str,
    *,
    now: datetime,
    secret: str | None = None,
    map_domain: tuple[str, ...] = (),
) -> WithSecret:
    clear = check_secret(secret) if secret is not None else generate_secret()
    source = Source(
        name=clean_source_name(name),
        kind=clean_kind(kind),
        created_at=now,
        secret_hash=secret_hash(clear),
        domain_maps=parse_domain_maps(map_domain),
    )
    sources.add(source)
    return WithSecret(source, clear)


def find_source(sources: SourceStore, name: str) -> Source:
    source = sources.get(clean_source_name(name))
    if source is None:
        raise NotFound(f"no source named {name.strip()!r}; `tokenwarden sources list` shows them")
    return source


def rotate_secret(
    sources: SourceStore,
    name: str,
    *,
    now: datetime,
    grace: timedelta,
    secret: str | None = None,
) -> WithSecret:
    """A new secret; the old one keeps working for `grace` (0: stops at once)."""
    clear = check_secret(secret) if secret is not None else generate_secret()
    rotated = find_source(sources, name).rotated(clear, now, grace)
    sources.replace(rotated)
    return WithSecret(rotated, clear)


def remove_source(sources: SourceStore, name: str) -> None:
    if not sources.remove(clean_source_name(name)):
        raise NotFound(f"no source named {name.strip()!r}; `tokenwarden sources list` shows them")


def list_sources(sources: SourceStore) -> list[Source]:
    return sources.all()

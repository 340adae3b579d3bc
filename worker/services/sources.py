"""Adding, listing, rotating and removing sources: those of the HTTP intake, and the
directories tokenwarden asks on a schedule (checked by worker/services/directory_checks.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from worker.errors import InvalidInput, NotFound
from worker.intake.sources import (
    DEFAULT_POLL_INTERVAL_S,
    ENTRA,
    GOOGLE,
    MAX_POLL_INTERVAL_S,
    MIN_POLL_INTERVAL_S,
    OKTA_API,
    POLL_KINDS,
    Source,
    check_secret,
    clean_kind,
    clean_poll_options,
    clean_source_name,
    generate_secret,
    parse_domain_maps,
    secret_hash,
)
from worker.store.source_store import PollState, SourceStore

#: Longest credential taken on the command line, in characters (a Google key file is read
#: from its file instead).
MAX_CREDENTIAL_CHARS = 4096


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
    kind = clean_kind(kind)
    if kind in POLL_KINDS:
        raise InvalidInput(f"a source of kind {kind} asks its directory: use add_directory")
    clear = check_secret(secret) if secret is not None else generate_secret()
    source = Source(
        name=clean_source_name(name),
        kind=kind,
        created_at=now,
        secret_hash=secret_hash(clear),
        domain_maps=parse_domain_maps(map_domain),
    )
    sources.add(source)
    return WithSecret(source, clear)


def add_directory(
    sources: SourceStore,
    name: str,
    kind: str,
    *,
    now: datetime,
    options: dict[str, str | None],
    credentials: dict[str, Any],
    map_domain: tuple[str, ...] = (),
    domains: tuple[str, ...] = (),
    interval_s: int = DEFAULT_POLL_INTERVAL_S,
) -> Source:
    """A directory asked on a schedule, its first round due at once; its credential sealed.
    It is asked only about the people of the Managed Apple Account domains it holds: `domains`
    as they are, `map_domain` rewritten (FROM=TO); one of them is needed, else a directory would
    call everyone of another directory's domains "not found"."""
    kind = clean_kind(kind)
    if kind not in POLL_KINDS:
        raise InvalidInput(f"a source of kind {kind} pushes over HTTP: use add_source")
    if not MIN_POLL_INTERVAL_S <= interval_s <= MAX_POLL_INTERVAL_S:
        raise InvalidInput(
            f"--interval {interval_s} is not from {MIN_POLL_INTERVAL_S} to "
            f"{MAX_POLL_INTERVAL_S} seconds"
        )
    source = Source(
        name=clean_source_name(name),
        kind=kind,
        created_at=now,
        secret_hash="",
        domain_maps=directory_domains(domains, map_domain),
        options=clean_poll_options(kind, options),
        interval_s=interval_s,
    )
    sources.add(source, check_credentials(kind, credentials), first_round=now)
    return source


def directory_domains(
    domains: tuple[str, ...], map_domain: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    if not domains and not map_domain:
        raise InvalidInput(
            "name the Managed Apple Account domains this directory holds: --domain school.edu "
            "(repeatable), or --map-domain school.edu=appleid.school.edu when the logins differ"
        )
    as_maps = tuple(f"{d.strip()}={d.strip()}" for d in domains)
    return parse_domain_maps(as_maps + map_domain, polling=True)


def check_credentials(kind: str, given: dict[str, Any]) -> dict[str, Any]:
    """The credential a kind needs, checked, or InvalidInput naming the flag (never the
    value)."""
    if kind == GOOGLE:
        if not given.get("service_account_text"):
            raise InvalidInput("a source of kind google needs --service-account-file")
        from worker.directories.google import read_service_account

        return {"service_account": read_service_account(given["service_account_text"])}
    field, flag = {
        OKTA_API: ("api_token", "--api-token"),
        ENTRA: ("client_secret", "--client-secret"),
    }[kind]
    value = (given.get(field) or "").strip()
    if not value:
        raise InvalidInput(f"a source of kind {kind} needs {flag} ('-' reads it from stdin)")
    printable = value.isascii() and value.isprintable() and " " not in value
    if len(value) > MAX_CREDENTIAL_CHARS or not printable:
        raise InvalidInput(
            f"{flag} is not usable: one line of printable ASCII without spaces, as the portal "
            "shows it"
        )
    return {field: value}


def set_credential(
    sources: SourceStore, name: str, credentials: dict[str, Any], *, now: datetime
) -> Source:
    """A directory source's new credential (the old one revoked or expiring); its next round
    is due at once, so a source reported failing is seen to recover."""
    source = find_source(sources, name)
    if not source.polls:
        raise InvalidInput(
            f"source {source.name!r} ({source.kind}) pushes over HTTP; give it a new secret "
            f"with `tokenwarden sources rotate-secret {source.name}`"
        )
    sources.set_credentials(source.name, check_credentials(source.kind, credentials), due=now)
    return source


def poll_states(sources: SourceStore, listed: list[Source]) -> dict[str, PollState]:
    return sources.poll_states([s.name for s in listed if s.polls])


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
    source = find_source(sources, name)
    if source.polls:
        raise InvalidInput(
            f"source {source.name!r} ({source.kind}) has no secret of its own; give it a new "
            f"credential with `tokenwarden sources set-credential {source.name}`"
        )
    clear = check_secret(secret) if secret is not None else generate_secret()
    rotated = source.rotated(clear, now, grace)
    sources.replace(rotated)
    return WithSecret(rotated, clear)


def remove_source(sources: SourceStore, name: str) -> None:
    if not sources.remove(clean_source_name(name)):
        raise NotFound(f"no source named {name.strip()!r}; `tokenwarden sources list` shows them")


def list_sources(sources: SourceStore) -> list[Source]:
    return sources.all()

"""The operations on servers, key pairs and tokens that the CLI (and later the actors) call.

Each takes the store and `now`, combines the pure rules and the crypto, and leaves the Redis
writes to the store. Nothing here reads the clock or the environment.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from events import catalog
from events.cloudevent import CloudEvent, new_event, stable_id
from worker.apple.verdicts import standing
from worker.config import DEFAULT_APPLE_CHECK_INTERVAL_S
from worker.crypto.keys import KeyMaterial, generate_key_material, import_key_material
from worker.errors import InvalidInput, NotFound
from worker.names import clean_label, clean_server_name, name_key
from worker.records import KEY_CURRENT, KEY_STAGED, KeyPair, Server, Token
from worker.rules.events import decide_key_rotation
from worker.rules.facts import KeyOffer
from worker.store.protocol import Store
from worker.timefmt import format_rfc3339

#: Times a write that lost a race is decided again on fresh state before giving up.
WRITE_ATTEMPTS = 5


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


# ---- servers ---------------------------------------------------------------------------------


def resolve_server(store: Store, name: str, org: str | None = None) -> Server:
    """The server with this name (and organization, when several share the name)."""
    matches = store.servers_named(name)
    if org is not None:
        matches = [s for s in matches if name_key(s.org) == name_key(org)]
    if not matches:
        where = f" in organization {org!r}" if org else ""
        raise NotFound(
            f"no server named {name.strip()!r}{where}; `tokenwarden servers list` shows them"
        )
    if len(matches) > 1:
        orgs = ", ".join(repr(s.org) for s in matches)
        raise InvalidInput(
            f"several servers are named {name.strip()!r} (organizations {orgs}); add --org"
        )
    return matches[0]


def add_server(
    store: Store,
    raw_name: str,
    *,
    org: str | None,
    now: datetime,
    cert: tuple[bytes, str] | None = None,
    key: tuple[bytes, str] | None = None,
) -> tuple[Server, KeyPair]:
    """Register a server with a generated key pair, or with the vendor's (cert, key) files."""
    name = clean_server_name(raw_name)
    organization = clean_label(org, what="organization")
    if (cert is None) != (key is None):
        raise InvalidInput("give both --cert and --key, or neither to generate a key pair")
    if cert is not None and key is not None:
        material = import_key_material(cert[0], key[0], cert_source=cert[1], key_source=key[1])
    else:
        material = generate_key_material(f"tokenwarden {name}", now)
    server = Server(id=new_id("srv"), name=name, org=organization, created_at=now)
    pair = _key_pair(server.id, material, KEY_CURRENT, now)
    server = Server(**{**server.__dict__, "current_key_id": pair.id})
    store.add_server(server, pair, material)
    return server, pair


def _key_pair(server_id: str, material: KeyMaterial, state: str, now: datetime) -> KeyPair:
    cert = material.certificate
    return KeyPair(
        id=new_id("key"),
        server_id=server_id,
        state=state,
        fingerprint=material.fingerprint,
        serial_number=f"{cert.serial_number:X}",
        not_after=cert.not_valid_after_utc,
        created_at=now,
        cert_pem=material.cert_pem.decode("ascii"),
        promoted_at=now if state == KEY_CURRENT else None,
    )


# ---- keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rotation:
    #: The key pair staged.
    pair: KeyPair
    #: The key pair staged before and discarded for it (`replace_staged`), if any.
    discarded: KeyPair | None
    #: The key_regenerated event the rotation recorded, decided with it.
    event: CloudEvent
    #: The installed token the new key dooms (its replacement is open), if any.
    doomed_token_id: str | None


def rotate_key(
    store: Store,
    server: Server,
    *,
    now: datetime,
    replace_staged: bool = False,
    source: str = catalog.SOURCE_CLI,
) -> Rotation:
    """Stage a new key pair; it becomes current once a token encrypted to it is installed.

    The new key dooms the installed token (encrypted to the old key): the key_regenerated
    event is decided by the same rules as any other and applied in the same transaction as
    the staging, so no crash or broker failure can leave a key staged without the replacement
    that tells people to upload its certificate.

    A key already staged may have had its certificate uploaded, so it is discarded only when
    `replace_staged` says so.
    """
    material = generate_key_material(f"tokenwarden {server.name}", now)
    pair = _key_pair(server.id, material, KEY_STAGED, now)
    data = {"server": server.name, **({"org": server.org} if server.org else {})}
    event = new_event(
        catalog.KEY_REGENERATED,
        data,
        source=source,
        time=now,
        event_id=stable_id(catalog.KEY_REGENERATED, pair.id),
        subject=server.name,
    )
    discarded, decision = store.stage_key(
        server,
        pair,
        material,
        replace_staged=replace_staged,
        decide=lambda facts: decide_key_rotation(facts, event, now),
    )
    doomed = decision.doomed[0].token_id if decision.doomed else None
    return Rotation(pair=pair, discarded=discarded, event=event, doomed_token_id=doomed)


def key_offer(store: Store, server: Server, now: datetime) -> KeyOffer:
    """A new key pair for `server`, its private key sealed, for a decision that may stage it
    (a renewal whose policy rotates keys): staged only if the decision applies."""
    material = generate_key_material(f"tokenwarden {server.name}", now)
    pair = _key_pair(server.id, material, KEY_STAGED, now)
    return KeyOffer(pair, store.seal_private_key(pair.id, material))


def certificate_to_upload(store: Store, server: Server) -> KeyPair:
    """The staged key's certificate if one is waiting, else the current one."""
    key_id = server.staged_key_id or server.current_key_id
    pair = store.get_key(key_id) if key_id else None
    if pair is None:
        raise NotFound(f"server {server.name!r} has no key pair; remove and add it again")
    return pair


# ---- tokens ----------------------------------------------------------------------------------


def describe_token(
    token: Token,
    server: Server | None,
    now: datetime,
    apple_interval_s: int = DEFAULT_APPLE_CHECK_INTERVAL_S,
) -> dict[str, object]:
    """The public facts of a token, as `tokens list --json` shows them."""
    return {
        "server": server.name if server else None,
        "org": server.org if server else None,
        "token_id": token.id,
        "status": token.status_at(now),
        "downloaded_by": token.downloaded_by,
        "downloaded_at": format_rfc3339(token.downloaded_at),
        "expires_at": format_rfc3339(token.expires_at),
        "days_left": max(0, (token.expires_at - now).days),
        "installed_at": format_rfc3339(token.installed_at),
        "consumer_id": token.consumer_id,
        "key_id": token.key_id,
        "superseded_at": format_rfc3339(token.superseded_at) if token.superseded_at else None,
        "apple": describe_apple(token, server, now, apple_interval_s),
    }


def describe_apple(
    token: Token, server: Server | None, now: datetime, interval_s: int
) -> dict[str, object]:
    """What Apple said of the token: its verdict as it stands, and when it was last asked and
    last confirmed."""
    state = token.apple
    terms = server.terms_since if server else None

    def when(moment: datetime | None) -> str | None:
        return format_rfc3339(moment) if moment else None

    return {
        "verdict": standing(state, terms, now, interval_s),
        "last_answer": state.verdict,
        "code": state.code,
        "last_checked_at": when(state.checked_at),
        "last_confirmed_at": when(state.confirmed_at),
        "rejected_at": when(state.rejected_at),
        "terms_pending_since": when(terms),
        "server_uuid": state.server_uuid,
        "server_name": server.apple_name if server else None,
        "org_name": server.apple_org if server else None,
    }

"""The operations on servers, key pairs and tokens that the CLI (and later the actors) call.

Each takes the store and `now`, combines the pure rules and the crypto, and leaves the Redis
writes to the store. Nothing here reads the clock or the environment.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import PurePath

from cryptography import x509

from events import catalog
from events.cloudevent import CloudEvent, new_event, stable_id
from worker.crypto.keys import KeyMaterial, generate_key_material, import_key_material
from worker.crypto.payload import TokenCredentials, parse_token_payload
from worker.crypto.smime import decrypt_envelope, describe_mismatch, read_envelope
from worker.errors import ConcurrentChange, InvalidInput, NotFound, WrongRecipient
from worker.names import clean_label, clean_server_name, clean_user, name_key, user_key
from worker.records import KEY_CURRENT, KEY_RETIRED, KEY_STAGED, KeyPair, Server, Token
from worker.rules.events import decide_key_rotation
from worker.rules.install import InstallOutcome, NewToken, check_install, decide_install
from worker.store.protocol import Store
from worker.timefmt import format_rfc3339, parse_rfc3339

#: Times a write that lost a race is decided again on fresh state before giving up.
WRITE_ATTEMPTS = 5

# `<ServerName>_Token_<YYYY-MM-DDTHH-MM-SSZ>_smime.p7m`, as the portal names a download.
_DOWNLOAD_NAME = re.compile(
    r"^(?P<server>.+)_Token_(?P<date>\d{4}-\d{2}-\d{2})T(?P<h>\d{2})-(?P<m>\d{2})-(?P<s>\d{2})Z"
    r"_smime\.p7m$"
)


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


def certificate_to_upload(store: Store, server: Server) -> KeyPair:
    """The staged key's certificate if one is waiting, else the current one."""
    key_id = server.staged_key_id or server.current_key_id
    pair = store.get_key(key_id) if key_id else None
    if pair is None:
        raise NotFound(f"server {server.name!r} has no key pair; remove and add it again")
    return pair


# ---- tokens ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstallResult:
    server: Server
    token: Token
    outcome: InstallOutcome
    promoted_key: KeyPair | None = None
    superseded: Token | None = None
    #: Types of the causes, already seen, that doom this token from the start.
    doomed_by: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def download_time_from_file_name(file_name: str) -> datetime | None:
    """The portal names a download after the moment it was made; use it when it is there."""
    match = _DOWNLOAD_NAME.match(PurePath(file_name).name)
    if match is None:
        return None
    stamp = f"{match['date']}T{match['h']}:{match['m']}:{match['s']}Z"
    try:
        return parse_rfc3339(stamp)
    except InvalidInput:
        return None


def install_token(
    store: Store,
    server_name: str,
    data: bytes,
    *,
    source: str,
    downloaded_by: str,
    now: datetime,
    org: str | None = None,
    downloaded_at: datetime | None = None,
    allow_consumer_change: bool = False,
) -> InstallResult:
    user = clean_user(downloaded_by)
    envelope = read_envelope(data, source=source)
    downloaded_at, downloaded_at_source = _download_time(source, downloaded_at, now)
    for _ in range(WRITE_ATTEMPTS):
        server = resolve_server(store, server_name, org)
        pair, credentials, candidates = _open_token_file(store, server, envelope, source)
        installed = store.get_token(server.token_id) if server.token_id else None
        new = NewToken(
            consumer_id=credentials.consumer_id,
            fingerprint=credentials.fingerprint,
            expires_at=credentials.expires_at,
            downloaded_at=downloaded_at,
            downloaded_at_source=downloaded_at_source,
        )
        outcome = check_install(
            new, installed, now=now, allow_consumer_change=allow_consumer_change, source=source
        )
        if outcome is InstallOutcome.ALREADY_INSTALLED:
            return _already_installed(server, installed, user)
        token = Token(
            id=new_id("tok"),
            server_id=server.id,
            consumer_id=credentials.consumer_id,
            fingerprint=credentials.fingerprint,
            downloaded_by=user,
            downloaded_at=downloaded_at,
            expires_at=credentials.expires_at,
            installed_at=now,
            key_id=pair.id,
        )
        try:
            result = _store_token(store, server, token, credentials, installed, candidates, now)
        except ConcurrentChange:
            continue
        return replace(result, warnings=_file_name_warnings(source, server))
    raise ConcurrentChange(
        f"server {server_name!r} kept changing while the token was being installed; try again"
    )


def _download_time(
    source: str, downloaded_at: datetime | None, now: datetime
) -> tuple[datetime, str]:
    """When the token was downloaded, and where that came from (to name it in errors)."""
    if downloaded_at is not None:
        return downloaded_at, "--downloaded-at"
    from_name = download_time_from_file_name(source)
    if from_name is not None:
        return from_name, "the download time in the file name"
    return now, "the install time"


def _open_token_file(
    store: Store, server: Server, envelope, source: str
) -> tuple[KeyPair, TokenCredentials, list[KeyPair]]:
    """The server's key the file was encrypted to (staged or current), the credentials it
    holds, and the keys tried."""
    candidates = [
        pair
        for pair in (store.get_key(i) for i in (server.staged_key_id, server.current_key_id) if i)
        if pair is not None
    ]
    materials = [(pair, store.open_key_material(pair)) for pair in candidates]
    chosen = next(((p, m) for p, m in materials if envelope.is_for(m.certificate)), None)
    if chosen is None:
        _refuse_retired_key(store, server, envelope, source)
        raise describe_mismatch(envelope, source, [(p.state, m.certificate) for p, m in materials])
    pair, material = chosen
    credentials = parse_token_payload(
        decrypt_envelope(envelope, material.certificate, material.private_key, source=source),
        source=source,
    )
    return pair, credentials, candidates


def _already_installed(server: Server, installed: Token, user: str) -> InstallResult:
    warnings: tuple[str, ...] = ()
    if user_key(user) != user_key(installed.downloaded_by):
        warnings = (
            f"it is recorded as downloaded by {installed.downloaded_by}; {user} was not recorded",
        )
    return InstallResult(
        server=server,
        token=installed,
        outcome=InstallOutcome.ALREADY_INSTALLED,
        warnings=warnings,
    )


def _store_token(
    store: Store,
    server: Server,
    token: Token,
    credentials: TokenCredentials,
    installed: Token | None,
    candidates: list[KeyPair],
    now: datetime,
) -> InstallResult:
    """Install `token` with what installing it decides (decide_install), in one transaction."""
    promote = token.key_id if _state_of(token.key_id, candidates) == KEY_STAGED else None
    # A token for the current key while a new key waits: a recorded key change dooms it,
    # and the notice carries the certificate to upload.
    staged = next((p for p in candidates if p.state == KEY_STAGED), None)
    staged_cert = staged.cert_pem if staged is not None and promote is None else None
    decision = store.install_token(
        server,
        token,
        credentials.sealable(),
        replaces=installed.id if installed else None,
        promote_key=promote,
        now=now,
        decide=lambda facts: decide_install(facts, token, now),
        staged_certificate=staged_cert,
    )
    return InstallResult(
        server=store.get_server(server.id) or server,
        token=token,
        outcome=InstallOutcome.INSTALL,
        promoted_key=store.get_key(promote) if promote else None,
        superseded=installed,
        doomed_by=tuple(d.cause_type for d in decision.doomed),
    )


def _state_of(key_id: str, pairs: list[KeyPair]) -> str | None:
    return next((p.state for p in pairs if p.id == key_id), None)


def _refuse_retired_key(store: Store, server: Server, envelope, source: str) -> None:
    """A token made for a key this server no longer uses gets its own, plainer error."""
    for pair in store.keys_of(server.id):
        certificate = x509.load_pem_x509_certificate(pair.cert_pem.encode())
        if pair.state == KEY_RETIRED and envelope.is_for(certificate):
            retired = f" on {pair.retired_at:%Y-%m-%d}" if pair.retired_at else ""
            raise WrongRecipient(
                f"{source} is encrypted to a key of {server.name!r} that was replaced{retired}; "
                "it was downloaded before the new key: download a new token"
            )


def _file_name_warnings(source: str, server: Server) -> tuple[str, ...]:
    match = _DOWNLOAD_NAME.match(PurePath(source).name)
    if match and name_key(match["server"]) != name_key(server.name):
        return (
            f"the file name says it was downloaded for server {match['server']!r}, "
            f"but it was installed for {server.name!r}, whose key opened it",
        )
    return ()


def describe_token(token: Token, server: Server | None, now: datetime) -> dict[str, object]:
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
    }

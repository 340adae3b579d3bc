"""Installing a token: decrypt the file with the server's key, ask Apple about it (who
downloaded it, which server entry it is for, whether Apple refuses it), check it may replace
the installed one (worker/rules/install.py), and store it with what that decides, in one step.

Nothing here reads the clock or the environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import PurePath

from cryptography import x509

from worker.apple.on_install import AccountAsker, AskedApple, ask_apple, choose_downloader
from worker.apple.verdicts import AppleAccount
from worker.crypto.payload import TokenCredentials, parse_token_payload
from worker.crypto.smime import decrypt_envelope, describe_mismatch, read_envelope
from worker.errors import ConcurrentChange, InvalidInput, WrongRecipient
from worker.names import name_key, user_key
from worker.records import KEY_RETIRED, KEY_STAGED, KeyPair, Server, Token
from worker.registry import WRITE_ATTEMPTS, new_id, resolve_server
from worker.rules.decision import Decision, ServerSeenByApple
from worker.rules.facts import InstallFacts
from worker.rules.install import InstallOutcome, NewToken, check_install, decide_install
from worker.store.protocol import Store
from worker.timefmt import parse_rfc3339

# `<ServerName>_Token_<YYYY-MM-DDTHH-MM-SSZ>_smime.p7m`, as the portal names a download.
_DOWNLOAD_NAME = re.compile(
    r"^(?P<server>.+)_Token_(?P<date>\d{4}-\d{2}-\d{2})T(?P<h>\d{2})-(?P<m>\d{2})-(?P<s>\d{2})Z"
    r"_smime\.p7m$"
)


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
    #: The server's policy rotates keys and the token is for the old key (a key is staged).
    rotation_pending: bool = False


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
    downloaded_by: str | None,
    now: datetime,
    org: str | None = None,
    downloaded_at: datetime | None = None,
    allow_consumer_change: bool = False,
    apple: AccountAsker | None = None,
) -> InstallResult:
    """Decrypt and install a token file. With `apple`, Apple is asked first (once): it names
    the downloader and the server entry, and a token it refuses is not installed."""
    envelope = read_envelope(data, source=source)
    download = _download_time(source, downloaded_at, now)
    asked: AskedApple | None = None
    for _ in range(WRITE_ATTEMPTS):
        server = resolve_server(store, server_name, org)
        pair, credentials, candidates = _open_token_file(store, server, envelope, source)
        installed = store.get_token(server.token_id) if server.token_id else None
        if installed is not None and installed.fingerprint == credentials.fingerprint:
            return _already_installed(server, installed, downloaded_by)
        if asked is None:
            _refuse_locally(credentials, installed, download, now, source)
            asked = ask_apple(apple, credentials, source, now)
        token, warning = _checked_token(
            server,
            pair,
            credentials,
            installed,
            asked,
            downloaded_by=downloaded_by,
            downloaded_at=download,
            now=now,
            allow_consumer_change=allow_consumer_change,
            source=source,
        )
        try:
            result = _store_token(
                store, server, token, credentials, installed, candidates, now, asked.account
            )
        except ConcurrentChange:
            continue
        return replace(result, warnings=_warnings(source, result, asked.warning, warning))
    raise ConcurrentChange(
        f"server {server_name!r} kept changing while the token was being installed; try again"
    )


def _refuse_locally(
    credentials: TokenCredentials,
    installed: Token | None,
    downloaded_at: tuple[datetime, str],
    now: datetime,
    source: str,
) -> None:
    """What can be refused without Apple is refused before Apple is asked: an older download
    must say "install the newest", not "Apple rejected it" (Apple rejects it because a newer
    one exists), and an expired file needs no round trip. (Which server entry it belongs to
    waits for Apple's answer.)"""
    local = _new_token(credentials, downloaded_at)
    check_install(local, installed, now=now, allow_consumer_change=True, source=source)


def _new_token(
    credentials: TokenCredentials,
    downloaded_at: tuple[datetime, str],
    server_uuid: str | None = None,
) -> NewToken:
    """The facts check_install decides on, for a decrypted token file."""
    return NewToken(
        consumer_id=credentials.consumer_id,
        fingerprint=credentials.fingerprint,
        expires_at=credentials.expires_at,
        downloaded_at=downloaded_at[0],
        downloaded_at_source=downloaded_at[1],
        server_uuid=server_uuid,
    )


def _checked_token(
    server: Server,
    pair: KeyPair,
    credentials: TokenCredentials,
    installed: Token | None,
    asked: AskedApple,
    *,
    downloaded_by: str | None,
    downloaded_at: tuple[datetime, str],
    now: datetime,
    allow_consumer_change: bool,
    source: str,
) -> tuple[Token, str | None]:
    """The token to install, once check_install allows it, and a warning about who
    downloaded it (when Apple says otherwise than the person installing it)."""
    user, warning = choose_downloader(downloaded_by, asked)
    new = _new_token(credentials, downloaded_at, asked.state.server_uuid)
    check_install(
        new, installed, now=now, allow_consumer_change=allow_consumer_change, source=source
    )
    token = Token(
        id=new_id("tok"),
        server_id=server.id,
        consumer_id=credentials.consumer_id,
        fingerprint=credentials.fingerprint,
        downloaded_by=user,
        downloaded_at=downloaded_at[0],
        expires_at=credentials.expires_at,
        installed_at=now,
        key_id=pair.id,
        apple=asked.state,
    )
    return token, warning


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


def _already_installed(server: Server, installed: Token, user: str | None) -> InstallResult:
    warnings: tuple[str, ...] = ()
    if user is not None and user_key(user) != user_key(installed.downloaded_by):
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
    account: AppleAccount | None = None,
) -> InstallResult:
    """Install `token` with what installing it decides (decide_install), in one transaction;
    what Apple calls the server is kept with it."""
    promote = token.key_id if _state_of(token.key_id, candidates) == KEY_STAGED else None
    # A token for the current key while a new key waits: a recorded key change dooms it,
    # and the notice carries the certificate to upload.
    staged = next((p for p in candidates if p.state == KEY_STAGED), None)
    staged_cert = staged.cert_pem if staged is not None and promote is None else None
    pending = (
        staged_cert is not None and store.policies.effective_for([server])[server.id].rotates_key
    )
    decision = store.install_token(
        server,
        token,
        credentials.sealable(),
        replaces=installed.id if installed else None,
        promote_key=promote,
        now=now,
        decide=lambda facts: _with_account(
            decide_install(facts, token, now, rotation_pending=pending), facts, account
        ),
        staged_certificate=staged_cert,
    )
    return InstallResult(
        server=store.get_server(server.id) or server,
        token=token,
        outcome=InstallOutcome.INSTALL,
        promoted_key=store.get_key(promote) if promote else None,
        superseded=installed,
        doomed_by=tuple(d.cause_type for d in decision.doomed),
        rotation_pending=pending,
    )


def _with_account(decision: Decision, facts: InstallFacts, account: AppleAccount | None):
    if account is not None:
        server = facts.server
        decision.servers_seen.append(
            ServerSeenByApple(server.id, account.server_name, account.org_name, server.terms_since)
        )
    return decision


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


def _warnings(source: str, result: InstallResult, *more: str | None) -> tuple:
    found = (*_file_name_warnings(source, result.server), *more, _old_key(result))
    return tuple(w for w in found if w)


def _old_key(result: InstallResult) -> str | None:
    """A server whose policy rotates keys, renewed with a token for the old key (the staged
    certificate was not uploaded first): the token works, but the key was not rotated."""
    if not result.rotation_pending:
        return None
    server = result.server
    return (
        "its rotation policy rotates the key, but this token is encrypted to the old key, so "
        "its replacement is open: upload the staged certificate (`tokenwarden keys export "
        f"{server.name!r}`), download a new token and install it to finish the rotation"
    )


def _file_name_warnings(source: str, server: Server) -> tuple[str, ...]:
    match = _DOWNLOAD_NAME.match(PurePath(source).name)
    if match and name_key(match["server"]) != name_key(server.name):
        return (
            f"the file name says it was downloaded for server {match['server']!r}, "
            f"but it was installed for {server.name!r}, whose key opened it",
        )
    return ()

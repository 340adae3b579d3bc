"""Servers, key pairs and tokens stored in a real Redis."""

from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import FIXTURE_NOW
from tests.tokenfiles import credentials, encrypt_to, with_crlf, with_lf
from worker import installing, registry
from worker.errors import (
    Conflict,
    ConsumerKeyChanged,
    DuplicateServer,
    InvalidInput,
    InvalidKeyMaterial,
    NotFound,
    StaleToken,
    TokenExpired,
    WrongRecipient,
)
from worker.records import KEY_CURRENT, KEY_RETIRED, KEY_STAGED, TOKEN_SUPERSEDED
from worker.rules.install import InstallOutcome
from worker.store import keys as k

APPLE_EXPIRY = datetime(2026, 1, 17, 11, 2, 21, tzinfo=UTC)


def add_apple_server(app, fixture_files, name="Main Campus", org="Springfield"):
    return registry.add_server(
        app.store,
        name,
        org=org,
        now=app.now(),
        cert=((fixture_files / "server-cert.pem").read_bytes(), "server-cert.pem"),
        key=((fixture_files / "server-key.pem").read_bytes(), "server-key.pem"),
    )


def install_file(app, name, data, user="admin@school.edu", source="token.p7m", **options):
    return installing.install_token(
        app.store, name, data, source=source, downloaded_by=user, now=app.now(), **options
    )


def current_cert(app, server_name):
    server = registry.resolve_server(app.store, server_name)
    return app.store.get_key(server.current_key_id).cert_pem


@pytest.mark.parametrize("line_endings", [with_lf, with_crlf], ids=["LF", "CRLF"])
def test_apples_real_token_installs_with_an_injected_clock(app, fixture_files, line_endings):
    # Given the server Apple's fixture token was made for
    add_apple_server(app, fixture_files)
    data = line_endings((fixture_files / "server-token.p7m").read_bytes())
    # When it is installed before it expired
    result = install_file(app, "main campus", data, user="Admin@School.edu")
    # Then it is the server's current token, with Apple's expiry and the downloader as typed
    assert result.outcome is InstallOutcome.INSTALL
    token = app.store.get_token(result.server.token_id)
    assert token == result.token
    assert token.expires_at == APPLE_EXPIRY
    assert token.downloaded_by == "Admin@School.edu"
    assert token.downloaded_at == FIXTURE_NOW
    assert token.status_at(app.now()) == "current"
    assert [t.id for t in app.store.current_tokens_of_user("admin@SCHOOL.edu")] == [token.id]
    assert app.store.open_credentials(token)["consumer_key"].startswith("CK_75b2eb55")


def test_apples_real_token_is_refused_once_expired(app, fixture_files, clock):
    add_apple_server(app, fixture_files)
    clock.now = APPLE_EXPIRY + timedelta(seconds=1)
    with pytest.raises(TokenExpired, match="expired at 2026-01-17T11:02:21Z"):
        install_file(app, "Main Campus", (fixture_files / "server-token.p7m").read_bytes())
    assert registry.resolve_server(app.store, "Main Campus").token_id is None


def test_installing_the_same_file_twice_changes_nothing(app, fixture_files):
    add_apple_server(app, fixture_files)
    data = (fixture_files / "server-token.p7m").read_bytes()
    first = install_file(app, "Main Campus", data)
    again = install_file(app, "Main Campus", with_crlf(data))
    assert again.outcome is InstallOutcome.ALREADY_INSTALLED
    assert again.token.id == first.token.id
    assert len(app.store.tokens_of_server(first.server.id)) == 1


def test_a_token_for_another_certificate_says_so(app, fixture_files):
    registry.add_server(app.store, "Other", org=None, now=app.now())
    with pytest.raises(WrongRecipient, match="encrypted to a different certificate"):
        install_file(app, "Other", (fixture_files / "server-token.p7m").read_bytes())


def test_a_newer_token_supersedes_and_drops_the_old_credentials(app, clock):
    _server, _ = registry.add_server(app.store, "Lab", org=None, now=app.now())
    cert = current_cert(app, "Lab")
    consumer = "CK_" + "a" * 96
    first = install_file(
        app,
        "Lab",
        encrypt_to(cert, credentials(clock.now + timedelta(days=300), consumer)),
        user="old@x.org",
    )
    clock.now += timedelta(days=10)
    second = install_file(
        app,
        "Lab",
        encrypt_to(cert, credentials(clock.now + timedelta(days=365), consumer)),
        user="new@x.org",
    )
    assert second.superseded.id == first.token.id
    old = app.store.get_token(first.token.id)
    assert old.status == TOKEN_SUPERSEDED
    assert old.superseded_by == second.token.id
    with pytest.raises(NotFound):
        app.store.open_credentials(old)
    assert app.store.current_tokens_of_user("old@x.org") == []
    assert [t.id for t in app.store.current_tokens_of_user("NEW@x.org")] == [second.token.id]
    assert app.redis.zrange(k.TOKENS_NEXT_CHECK, 0, -1) == [second.token.id]
    assert app.redis.get(k.credentials(first.token.id)) is None
    assert registry.resolve_server(app.store, "lab").token_id == second.token.id


def test_an_older_token_than_the_installed_one_is_refused(app, clock):
    registry.add_server(app.store, "Lab", org=None, now=app.now())
    cert = current_cert(app, "Lab")
    consumer = "CK_" + "b" * 96
    older = encrypt_to(cert, credentials(clock.now + timedelta(days=200), consumer))
    newer = encrypt_to(cert, credentials(clock.now + timedelta(days=300), consumer))
    kept = install_file(app, "Lab", newer)
    with pytest.raises(StaleToken, match="older than the installed token"):
        install_file(app, "Lab", older)
    assert registry.resolve_server(app.store, "Lab").token_id == kept.token.id


def test_a_token_from_another_consumer_needs_confirmation(app, clock):
    registry.add_server(app.store, "Lab", org=None, now=app.now())
    cert = current_cert(app, "Lab")
    kept = install_file(app, "Lab", encrypt_to(cert, credentials(clock.now + timedelta(days=200))))
    other = encrypt_to(cert, credentials(clock.now + timedelta(days=300)))
    with pytest.raises(ConsumerKeyChanged, match="--allow-server-change"):
        install_file(app, "Lab", other)
    assert registry.resolve_server(app.store, "Lab").token_id == kept.token.id
    replaced = install_file(app, "Lab", other, allow_consumer_change=True)
    assert registry.resolve_server(app.store, "Lab").token_id == replaced.token.id


def test_a_staged_key_becomes_current_only_when_its_token_is_installed(app, clock):
    # Given a server with a token and a freshly staged key
    server, first_key = registry.add_server(app.store, "Lab", org=None, now=app.now())
    install_file(
        app,
        "Lab",
        encrypt_to(
            first_key.cert_pem, credentials(clock.now + timedelta(days=100), "CK_" + "c" * 96)
        ),
    )
    rotation = registry.rotate_key(
        app.store, registry.resolve_server(app.store, "Lab"), now=app.now()
    )
    staged = rotation.pair
    assert rotation.discarded is None
    server = registry.resolve_server(app.store, "Lab")
    assert (server.current_key_id, server.staged_key_id) == (first_key.id, staged.id)
    assert registry.certificate_to_upload(app.store, server).id == staged.id
    # When a token encrypted to the staged key is installed
    result = install_file(
        app,
        "Lab",
        encrypt_to(staged.cert_pem, credentials(clock.now + timedelta(days=365), "CK_" + "c" * 96)),
    )
    # Then the staged key is current and the old one retired, without its private key
    server = registry.resolve_server(app.store, "Lab")
    assert result.promoted_key.id == staged.id
    assert (server.current_key_id, server.staged_key_id) == (staged.id, None)
    assert app.store.get_key(staged.id).state == KEY_CURRENT
    assert app.store.get_key(first_key.id).state == KEY_RETIRED
    assert app.redis.hget(k.key_pair(first_key.id), "private_key") is None


def test_rotating_again_keeps_the_staged_key_unless_told_to_replace_it(app):
    server, _current = registry.add_server(app.store, "Lab", org=None, now=app.now())
    first = registry.rotate_key(app.store, server, now=app.now()).pair
    with pytest.raises(Conflict, match="--replace-staged"):
        registry.rotate_key(app.store, registry.resolve_server(app.store, "Lab"), now=app.now())
    assert registry.resolve_server(app.store, "Lab").staged_key_id == first.id
    discarded = registry.rotate_key(
        app.store, registry.resolve_server(app.store, "Lab"), now=app.now(), replace_staged=True
    ).discarded
    assert discarded.id == first.id
    assert app.store.get_key(first.id) is None
    assert sorted(k.state for k in app.store.keys_of(server.id)) == [KEY_CURRENT, KEY_STAGED]


def test_a_token_for_the_current_key_leaves_a_staged_key_staged(app, clock):
    server, current = registry.add_server(app.store, "Lab", org=None, now=app.now())
    staged = registry.rotate_key(app.store, server, now=app.now()).pair
    result = install_file(
        app, "Lab", encrypt_to(current.cert_pem, credentials(clock.now + timedelta(days=365)))
    )
    assert result.promoted_key is None
    assert registry.resolve_server(app.store, "Lab").staged_key_id == staged.id


def test_names_are_unique_per_organization_ignoring_case(app):
    registry.add_server(app.store, "Main", org="Springfield", now=app.now())
    with pytest.raises(DuplicateServer, match="already exists"):
        registry.add_server(app.store, " MAIN ", org="springfield", now=app.now())
    registry.add_server(app.store, "main", org="Shelbyville", now=app.now())
    with pytest.raises(InvalidInput, match="add --org"):
        registry.resolve_server(app.store, "Main")
    assert registry.resolve_server(app.store, "Main", "SHELBYVILLE").org == "Shelbyville"


def test_a_vendor_certificate_with_someone_elses_key_is_refused(app, fixture_files):
    other, _ = registry.add_server(app.store, "Other", org=None, now=app.now())
    foreign_key = app.store.open_key_material(app.store.keys_of(other.id)[0])
    from cryptography.hazmat.primitives import serialization

    with pytest.raises(InvalidKeyMaterial, match="does not belong to the certificate"):
        registry.add_server(
            app.store,
            "Vendor",
            org=None,
            now=app.now(),
            cert=((fixture_files / "server-cert.pem").read_bytes(), "cert.pem"),
            key=(
                foreign_key.private_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                ),
                "key.pem",
            ),
        )
    assert app.store.servers_named("Vendor") == []


def test_a_der_certificate_is_imported_like_a_pem_one(app, fixture_files):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate((fixture_files / "server-cert.pem").read_bytes())
    _server, pair = registry.add_server(
        app.store,
        "Vendor",
        org=None,
        now=app.now(),
        cert=(cert.public_bytes(serialization.Encoding.DER), "cert.der"),
        key=((fixture_files / "server-key.pem").read_bytes(), "key.pem"),
    )
    assert pair.serial_number == "70FEDDC7D5AFA393"


def test_removing_a_server_removes_its_keys_tokens_and_index_entries(app, fixture_files):
    _server, _ = add_apple_server(app, fixture_files)
    install_file(app, "Main Campus", (fixture_files / "server-token.p7m").read_bytes())
    app.store.remove_server(registry.resolve_server(app.store, "Main Campus"))
    # What stays is about people, history and keys, not the server: the user's record, the
    # audit trail, and which master key sealed secrets here.
    assert sorted(app.redis.keys("*")) == sorted(
        [k.AUDIT, k.MASTER_KEY_IDS, k.user("admin@school.edu")]
    )
    assert app.redis.hgetall(k.user("admin@school.edu")) == {"v": "2"}


def test_the_download_time_is_read_from_the_portals_file_name(app, clock):
    _, key = registry.add_server(app.store, "Room 1", org=None, now=app.now())
    data = encrypt_to(key.cert_pem, credentials(clock.now + timedelta(days=360)))
    result = install_file(
        app, "Room 1", data, source="/tmp/Room 1_Token_2025-02-24T08-30-00Z_smime.p7m"
    )
    assert result.token.downloaded_at == datetime(2025, 2, 24, 8, 30, tzinfo=UTC)
    assert result.warnings == ()


def test_a_file_named_for_another_server_installs_with_a_warning(app, clock):
    _, key = registry.add_server(app.store, "Room 1", org=None, now=app.now())
    data = encrypt_to(key.cert_pem, credentials(clock.now + timedelta(days=360)))
    result = install_file(app, "Room 1", data, source="Room 2_Token_2025-02-24T08-30-00Z_smime.p7m")
    assert "Room 2" in result.warnings[0]


def test_unknown_servers_are_named_in_the_error(app):
    with pytest.raises(NotFound, match="no server named 'Nowhere'"):
        registry.resolve_server(app.store, "Nowhere")


def test_an_install_that_lost_a_race_is_refused_by_the_store(app, clock):
    # Given two installers that both read the server before either wrote
    _, key = registry.add_server(app.store, "Lab", org=None, now=app.now())
    seen_by_both = registry.resolve_server(app.store, "Lab")
    winner = install_file(
        app,
        "Lab",
        encrypt_to(key.cert_pem, credentials(clock.now + timedelta(days=300), "CK_" + "e" * 96)),
    )
    # When the slower one writes against what it read
    from worker.errors import ConcurrentChange
    from worker.records import Token
    from worker.rules.decision import Decision

    late = Token(
        id="tok_late",
        server_id=seen_by_both.id,
        consumer_id="c",
        fingerprint="f",
        downloaded_by="late@x",
        downloaded_at=clock.now,
        expires_at=clock.now + timedelta(days=200),
        installed_at=clock.now,
        key_id=key.id,
    )
    with pytest.raises(ConcurrentChange):
        app.store.install_token(
            seen_by_both,
            late,
            b"{}",
            replaces=None,
            promote_key=None,
            now=clock.now,
            decide=lambda facts: Decision(now=clock.now),
        )
    # Then the winner's token stands and nothing of the loser was written
    assert registry.resolve_server(app.store, "Lab").token_id == winner.token.id
    assert app.store.get_token("tok_late") is None
    assert app.store.current_tokens_of_user("late@x") == []

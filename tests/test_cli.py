"""The command line, run in-process against a real Redis: the tour a new user takes, and every
bad input ending in one line on stderr, a non-zero exit, and nothing stored changed."""

import json
from datetime import timedelta

import pytest

from tests.helpers import assert_refused
from tests.tokenfiles import credentials, encrypt_to, encrypt_with_openssl

APPLE_TOKEN = "server-token.p7m"


def add_apple_server(cli, fixture_files, name="Main Campus"):
    result = cli(
        "servers",
        "add",
        name,
        "--org",
        "Springfield",
        "--cert",
        str(fixture_files / "server-cert.pem"),
        "--key",
        str(fixture_files / "server-key.pem"),
    )
    assert result.exit_code == 0, result.output
    return result


def test_a_new_users_tour(cli, fixture_files, tmp_path):
    # servers add with the vendor's key pair, and one generated here
    add_apple_server(cli, fixture_files)
    generated = cli("servers", "add", "Room 101")
    assert generated.exit_code == 0
    assert "key pair generated: SHA-256" in generated.stdout
    # keys export: the certificate to upload, PEM and DER
    exported = cli("keys", "export", "room 101")
    assert exported.stdout.startswith("-----BEGIN CERTIFICATE-----")
    der_file = tmp_path / "room.der"
    assert cli("keys", "export", "Room 101", "--format", "der", "-o", str(der_file)).exit_code == 0
    assert der_file.read_bytes()[:1] == b"\x30"
    # tokens install: Apple's real token
    installed = cli(
        "tokens",
        "install",
        "main campus",
        str(fixture_files / APPLE_TOKEN),
        "--offline",
        "--downloaded-by",
        "Admin@School.edu",
    )
    assert installed.exit_code == 0, installed.output
    assert "expires 2026-01-17T11:02:21Z" in installed.stdout
    # tokens list --json: one object per installed token
    listed = json.loads(cli("tokens", "list", "--json").stdout)
    assert [(t["server"], t["downloaded_by"], t["expires_at"], t["status"]) for t in listed] == [
        ("Main Campus", "Admin@School.edu", "2026-01-17T11:02:21Z", "current")
    ]
    assert listed[0]["downloaded_at"].endswith("Z")
    # servers list / show
    servers = json.loads(cli("servers", "list", "--json").stdout)
    assert sorted(s["name"] for s in servers) == ["Main Campus", "Room 101"]
    table = cli("servers", "list").stdout
    assert "Main Campus" in table and "2026-01-17T11:02:21Z" in table
    shown = json.loads(cli("servers", "show", "MAIN CAMPUS", "--json").stdout)
    assert shown["token"]["downloaded_by"] == "Admin@School.edu"
    assert shown["current_key"]["serial"] == "70FEDDC7D5AFA393"
    # servers remove
    assert cli("servers", "remove", "Room 101", "--yes").exit_code == 0
    assert [s["name"] for s in json.loads(cli("servers", "list", "--json").stdout)] == [
        "Main Campus"
    ]


def test_keys_rotate_with_an_unwritable_output_changes_nothing(cli, snapshot, tmp_path):
    cli("servers", "add", "Lab")
    assert_refused(
        cli,
        snapshot,
        ("keys", "rotate", "Lab", "-o", str(tmp_path / "no" / "x.pem")),
        "cannot write",
    )
    assert_refused(
        cli, snapshot, ("keys", "rotate", "Lab", "-o", str(tmp_path)), "is a directory", code=2
    )


def test_keys_rotate_stages_a_key_and_prints_its_certificate(cli, app):
    cli("servers", "add", "Lab")
    rotated = cli("keys", "rotate", "Lab")
    assert rotated.exit_code == 0
    assert rotated.stdout.startswith("-----BEGIN CERTIFICATE-----")
    assert "staged a new key pair" in rotated.stderr
    shown = json.loads(cli("servers", "show", "Lab", "--json").stdout)
    assert shown["staged_key"]["state"] == "staged"
    assert cli("keys", "export", "Lab").stdout == rotated.stdout


def test_installing_an_older_token_after_a_newer_one_is_refused_and_changes_nothing(
    cli, app, clock, snapshot, tmp_path
):
    cli("servers", "add", "Lab")
    cert = cli("keys", "export", "Lab").stdout
    consumer = "CK_" + "d" * 96
    older, newer = tmp_path / "older.p7m", tmp_path / "newer.p7m"
    older.write_bytes(encrypt_to(cert, credentials(clock.now + timedelta(days=100), consumer)))
    newer.write_bytes(encrypt_to(cert, credentials(clock.now + timedelta(days=300), consumer)))
    assert (
        cli("tokens", "install", "Lab", str(newer), "--offline", "--downloaded-by", "a@x").exit_code
        == 0
    )
    assert_refused(
        cli,
        snapshot,
        ("tokens", "install", "Lab", str(older), "--offline", "--downloaded-by", "a@x"),
        "older than the installed token",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("servers", "add", "Unassigned"), "reserved by Apple"),
        (("servers", "add", "REASSIGNED"), "reserved by Apple"),
        (("servers", "add", "   "), "server name is empty"),
        (("servers", "add", "x" * 500), "at most 128"),
        (("servers", "add", " main campus ", "--org", "SPRINGFIELD"), "already exists"),
        (("servers", "show", "Nowhere"), "no server named 'Nowhere'"),
        (("servers", "remove", "Nowhere", "--yes"), "no server named 'Nowhere'"),
        (("servers", "remove", "Main Campus"), "pass --yes"),
        (("keys", "export", "Nowhere"), "no server named"),
        (("keys", "rotate", "Nowhere"), "no server named"),
        (
            (
                "tokens",
                "install",
                "Nowhere",
                "{fixtures}/server-token.p7m",
                "--offline",
                "--downloaded-by",
                "a",
            ),
            "no server named",
        ),
        (
            (
                "tokens",
                "install",
                "Main Campus",
                "{fixtures}/missing.p7m",
                "--offline",
                "--downloaded-by",
                "a",
            ),
            "does not exist",
        ),
        (
            (
                "tokens",
                "install",
                "Main Campus",
                "{fixtures}/server-cert.pem",
                "--offline",
                "--downloaded-by",
                "a",
            ),
            "not an S/MIME server token",
        ),
        (
            (
                "tokens",
                "install",
                "Main Campus",
                "{fixtures}/server-token.p7m",
                "--offline",
                "--downloaded-by",
                "  ",
            ),
            "user is empty",
        ),
        (
            (
                "tokens",
                "install",
                "Main Campus",
                "{fixtures}/server-token.p7m",
                "--offline",
                "--downloaded-by",
                "a",
                "--downloaded-at",
                "yesterday",
            ),
            "not an RFC 3339 time",
        ),
        (
            (
                "tokens",
                "install",
                "Main Campus",
                "{fixtures}/server-token.p7m",
                "--offline",
                "--downloaded-by",
                "a",
                "--downloaded-at",
                "2031-01-01T00:00:00Z",
            ),
            "in the future",
        ),
    ],
)
def test_bad_input_ends_in_one_clear_line_and_changes_nothing(
    cli, snapshot, fixture_files, args, message
):
    add_apple_server(cli, fixture_files)
    args = tuple(a.replace("{fixtures}", str(fixture_files)) for a in args)
    code = 2 if "--downloaded-at" in args and "yesterday" in args else 1
    assert_refused(cli, snapshot, args, message, code=code)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: d[: len(d) // 2], "cut short"),
        (lambda d: d[:-300] + b"\n", "truncated or damaged"),
        (lambda d: b"Content-Type: text/plain\n\nhello\n", "not an S/MIME server token"),
        (lambda d: d.replace(b"MIA", b"M*A", 1), "not valid base64"),
    ],
    ids=["truncated", "cut-der", "not-smime", "not-base64"],
)
def test_damaged_token_files_are_refused_by_the_cli(
    cli, snapshot, fixture_files, tmp_path, mangle, message
):
    add_apple_server(cli, fixture_files)
    damaged = tmp_path / "Main Campus_Token_2025-02-01T10-00-00Z_smime.p7m"
    damaged.write_bytes(mangle((fixture_files / APPLE_TOKEN).read_bytes()))
    line = assert_refused(
        cli,
        snapshot,
        ("tokens", "install", "Main Campus", str(damaged), "--offline", "--downloaded-by", "a@x"),
        message,
    )
    assert str(damaged) in line


def test_a_token_for_another_key_says_different_certificate(cli, snapshot, fixture_files):
    cli("servers", "add", "Other")
    assert_refused(
        cli,
        snapshot,
        (
            "tokens",
            "install",
            "Other",
            str(fixture_files / APPLE_TOKEN),
            "--offline",
            "--downloaded-by",
            "a@x",
        ),
        "encrypted to a different certificate",
    )


def test_a_3des_token_names_the_cipher(cli, snapshot, tmp_path, clock):
    cli("servers", "add", "Lab")
    cert = cli("keys", "export", "Lab").stdout
    old = tmp_path / "old.p7m"
    old.write_bytes(
        encrypt_with_openssl(cert, credentials(clock.now + timedelta(days=300)), "des3", tmp_path)
    )
    assert_refused(
        cli,
        snapshot,
        ("tokens", "install", "Lab", str(old), "--offline", "--downloaded-by", "a"),
        "encrypted with 3DES",
    )


def test_a_token_missing_a_field_names_it(cli, snapshot, tmp_path, clock):
    cli("servers", "add", "Lab")
    cert = cli("keys", "export", "Lab").stdout
    document = credentials(clock.now + timedelta(days=300))
    del document["access_secret"]
    bad = tmp_path / "bad.p7m"
    bad.write_bytes(encrypt_to(cert, document))
    assert_refused(
        cli,
        snapshot,
        ("tokens", "install", "Lab", str(bad), "--offline", "--downloaded-by", "a"),
        "no 'access_secret' field",
    )


def test_an_expired_token_says_when_it_expired(cli, snapshot, fixture_files, clock):
    add_apple_server(cli, fixture_files)
    clock.now = clock.now + timedelta(days=400)
    assert_refused(
        cli,
        snapshot,
        (
            "tokens",
            "install",
            "Main Campus",
            str(fixture_files / APPLE_TOKEN),
            "--offline",
            "--downloaded-by",
            "a",
        ),
        "expired at 2026-01-17T11:02:21Z",
    )


def test_a_token_from_another_consumer_needs_the_flag(cli, snapshot, tmp_path, clock):
    cli("servers", "add", "Lab")
    cert = cli("keys", "export", "Lab").stdout
    first, second = tmp_path / "a.p7m", tmp_path / "b.p7m"
    first.write_bytes(encrypt_to(cert, credentials(clock.now + timedelta(days=100))))
    second.write_bytes(encrypt_to(cert, credentials(clock.now + timedelta(days=300))))
    assert (
        cli("tokens", "install", "Lab", str(first), "--offline", "--downloaded-by", "a").exit_code
        == 0
    )
    assert_refused(
        cli,
        snapshot,
        ("tokens", "install", "Lab", str(second), "--offline", "--downloaded-by", "a"),
        "--allow-server-change",
    )
    confirmed = cli(
        "tokens",
        "install",
        "Lab",
        str(second),
        "--offline",
        "--downloaded-by",
        "a",
        "--allow-consumer-change",
    )
    assert confirmed.exit_code == 0
    assert "supersedes" in confirmed.stdout


@pytest.mark.parametrize(
    ("cert_name", "key_name", "message"),
    [
        ("server-key.pem", "server-key.pem", "is not a certificate in PEM or DER form"),
        ("server-cert.pem", "server-cert.pem", "is not a private key"),
        ("server-token.p7m", "server-key.pem", "is not a certificate"),
    ],
)
def test_unusable_certificates_and_keys_are_refused(
    cli, snapshot, fixture_files, cert_name, key_name, message
):
    assert_refused(
        cli,
        snapshot,
        (
            "servers",
            "add",
            "Vendor",
            "--cert",
            str(fixture_files / cert_name),
            "--key",
            str(fixture_files / key_name),
        ),
        message,
    )


def test_a_key_that_does_not_match_the_certificate_is_refused(
    cli, snapshot, fixture_files, tmp_path
):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = tmp_path / "other.pem"
    other.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert_refused(
        cli,
        snapshot,
        (
            "servers",
            "add",
            "Vendor",
            "--cert",
            str(fixture_files / "server-cert.pem"),
            "--key",
            str(other),
        ),
        "does not belong to the certificate",
    )


def test_a_passphrase_protected_key_is_refused_with_advice(cli, snapshot, fixture_files, tmp_path):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key((fixture_files / "server-key.pem").read_bytes(), None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    assert_refused(
        cli,
        snapshot,
        (
            "servers",
            "add",
            "Vendor",
            "--cert",
            str(fixture_files / "server-cert.pem"),
            "--key",
            str(locked),
        ),
        "protected by a passphrase",
    )


def test_cert_without_key_is_refused(cli, snapshot, fixture_files):
    assert_refused(
        cli,
        snapshot,
        ("servers", "add", "Vendor", "--cert", str(fixture_files / "server-cert.pem")),
        "give both --cert and --key",
    )


def test_usage_errors_are_one_line_too(cli):
    result = cli("tokens", "install", "Lab")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "Missing argument 'FILE'" in result.stderr


def test_fifos_and_oversized_files_are_refused_without_reading_them(
    cli, snapshot, tmp_path, fixture_files
):
    import os

    add_apple_server(cli, fixture_files)
    fifo = tmp_path / "pipe.p7m"
    os.mkfifo(fifo)
    assert_refused(
        cli,
        snapshot,
        ("tokens", "install", "Main Campus", str(fifo), "--offline", "--downloaded-by", "a"),
        "is not a regular file",
    )
    huge = tmp_path / "huge.p7m"
    with open(huge, "wb") as handle:
        handle.truncate(3 * 1024**3)  # sparse: 3 GiB that costs no disk
    assert_refused(
        cli,
        snapshot,
        ("tokens", "install", "Main Campus", str(huge), "--offline", "--downloaded-by", "a"),
        "at most 262144 are read",
    )
    assert_refused(
        cli,
        snapshot,
        (
            "servers",
            "add",
            "Vendor",
            "--cert",
            str(huge),
            "--key",
            str(fixture_files / "server-key.pem"),
        ),
        "at most 65536",
    )


def test_reinstalling_with_another_downloader_says_it_was_not_recorded(cli, fixture_files):
    add_apple_server(cli, fixture_files)
    token = str(fixture_files / APPLE_TOKEN)
    assert (
        cli(
            "tokens", "install", "Main Campus", token, "--offline", "--downloaded-by", "a@x"
        ).exit_code
        == 0
    )
    again = cli("tokens", "install", "Main Campus", token, "--offline", "--downloaded-by", "b@x")
    assert again.exit_code == 0
    assert "already installed" in again.stdout
    assert "recorded as downloaded by a@x; b@x was not recorded" in again.stderr


def test_a_token_for_a_replaced_key_says_so(cli, snapshot, clock, tmp_path):
    cli("servers", "add", "Lab")
    old_cert = cli("keys", "export", "Lab").stdout
    old_token = tmp_path / "old.p7m"
    old_token.write_bytes(encrypt_to(old_cert, credentials(clock.now + timedelta(days=300))))
    new_cert = cli("keys", "rotate", "Lab").stdout
    new_token = tmp_path / "new.p7m"
    new_token.write_bytes(encrypt_to(new_cert, credentials(clock.now + timedelta(days=360))))
    assert (
        cli(
            "tokens", "install", "Lab", str(new_token), "--offline", "--downloaded-by", "a"
        ).exit_code
        == 0
    )
    assert_refused(
        cli,
        snapshot,
        ("tokens", "install", "Lab", str(old_token), "--offline", "--downloaded-by", "a"),
        "encrypted to a key of 'Lab' that was replaced",
    )


def test_a_wrong_download_time_in_the_file_name_is_named_as_such(cli, snapshot, clock, tmp_path):
    cli("servers", "add", "Lab")
    cert = cli("keys", "export", "Lab").stdout
    named = tmp_path / "Lab_Token_2031-01-01T00-00-00Z_smime.p7m"
    named.write_bytes(encrypt_to(cert, credentials(clock.now + timedelta(days=300))))
    assert_refused(
        cli,
        snapshot,
        ("tokens", "install", "Lab", str(named), "--offline", "--downloaded-by", "a"),
        "the download time in the file name 2031-01-01",
    )

"""No token credential and no private key is ever readable in Redis or in CLI output."""

import json
from datetime import timedelta

from cryptography.hazmat.primitives import serialization

from tests.helpers import every_redis_byte, private_key_forms
from tests.tokenfiles import credentials, encrypt_to


def test_a_dump_of_redis_after_installing_tokens_holds_no_secret(
    cli, app, redis_url, fixture_files, tmp_path, clock
):
    # Given a server with Apple's key and token, and one with a generated key and a token
    key_pem = (fixture_files / "server-key.pem").read_bytes()
    assert (
        cli(
            "servers",
            "add",
            "Main",
            "--cert",
            str(fixture_files / "server-cert.pem"),
            "--key",
            str(fixture_files / "server-key.pem"),
        ).exit_code
        == 0
    )
    assert (
        cli(
            "tokens",
            "install",
            "Main",
            str(fixture_files / "server-token.p7m"),
            "--offline",
            "--downloaded-by",
            "a@x",
        ).exit_code
        == 0
    )
    apple_secrets = app.store.open_credentials(
        app.store.get_token(
            json.loads(cli("servers", "show", "Main", "--json").stdout)["token"]["token_id"]
        )
    )
    assert cli("servers", "add", "Lab").exit_code == 0
    cert = cli("keys", "export", "Lab").stdout
    made = credentials(clock.now + timedelta(days=300))
    (tmp_path / "t.p7m").write_bytes(encrypt_to(cert, made))
    assert (
        cli(
            "tokens",
            "install",
            "Lab",
            str(tmp_path / "t.p7m"),
            "--offline",
            "--downloaded-by",
            "b@x",
        ).exit_code
        == 0
    )
    lab = app.store.servers_named("Lab")[0]
    lab_key_pem = app.store.open_key_material(
        app.store.get_key(lab.current_key_id)
    ).private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    # When every key, field and value in Redis is read
    dump = every_redis_byte(redis_url)
    results = [
        cli(*args)
        for args in [
            ("servers", "list", "--json"),
            ("servers", "show", "Main", "--json"),
            ("servers", "show", "Lab", "--json"),
            ("tokens", "list", "--json"),
            ("tokens", "list", "--all", "--json"),
            ("servers", "list"),
            ("tokens", "list"),
        ]
    ]
    assert all(r.exit_code == 0 for r in results), [r.output for r in results]
    outputs = "".join(r.output for r in results).encode()
    # Then no credential and no form of either private key is in it
    secrets = [v.encode() for v in apple_secrets.values()]
    secrets += [
        made[f].encode()
        for f in ("consumer_key", "consumer_secret", "access_token", "access_secret")
    ]
    secrets += private_key_forms(key_pem) + private_key_forms(lab_key_pem)
    # (the four Apple credentials were really read back, so the search covers them)
    fields = {"consumer_key", "consumer_secret", "access_token", "access_secret"}
    assert set(apple_secrets) == fields
    assert all(len(secret) >= 16 for secret in secrets)
    for secret in secrets:
        assert secret not in dump
        assert secret not in outputs
    # And the sealed values are there, to show the test looked at the right place
    assert dump.count(b"tw1:") == 4

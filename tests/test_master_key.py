"""The master key: made on first use when none is set, and rotated without losing a secret."""

import json
import stat
from datetime import timedelta

import pytest
from cryptography import x509
from structlog.testing import capture_logs

from tests.tokenfiles import credentials, encrypt_to
from worker.bootstrap import App
from worker.config import Settings
from worker.crypto.masterkey import load_keyring
from worker.crypto.sealing import generate_master_key
from worker.errors import ConfigError, SecretsError


def test_without_a_master_key_a_private_key_file_is_created_once(tmp_path):
    settings = Settings(data_dir=tmp_path / "var")
    with capture_logs() as logs:
        first = load_keyring(settings)
        again = load_keyring(settings)
    path = tmp_path / "var" / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [e["event"] for e in logs] == ["master_key_created"]
    assert "TOKENWARDEN_MASTER_KEY" in logs[0]["advice"]
    assert again.primary.key_id == first.primary.key_id


def test_the_environment_key_wins_over_the_file(tmp_path):
    key = generate_master_key()
    keyring = load_keyring(Settings(data_dir=tmp_path, master_key=key))
    assert (
        keyring.primary.key_id
        == load_keyring(Settings(data_dir=tmp_path / "other", master_key=key)).primary.key_id
    )
    assert not (tmp_path / "master.key").exists()


def test_a_data_dir_that_cannot_be_made_says_what_to_do(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="TOKENWARDEN_DATA_DIR writable or set"):
        load_keyring(Settings(data_dir=blocker / "var"))


SECRET_FIELDS = ("consumer_key", "consumer_secret", "access_token", "access_secret")


def install_a_token(cli, clock, tmp_path) -> dict[str, str]:
    """Server Lab with a token; returns the four credentials the token file carried."""
    assert cli("servers", "add", "Lab").exit_code == 0
    cert = cli("keys", "export", "Lab").stdout
    made = credentials(clock.now + timedelta(days=99))
    (tmp_path / "t.p7m").write_bytes(encrypt_to(cert, made))
    assert (
        cli(
            "tokens", "install", "Lab", str(tmp_path / "t.p7m"), "--offline", "--downloaded-by", "a"
        ).exit_code
        == 0
    )
    return {field: made[field] for field in SECRET_FIELDS}


def opened(app) -> tuple[dict[str, str], object]:
    """Lab's token credentials, and the public numbers of its private key, opened with `app`'s
    keyring."""
    server = app.store.servers_named("Lab")[0]
    credentials_opened = app.store.open_credentials(app.store.get_token(server.token_id))
    material = app.store.open_key_material(app.store.get_key(server.current_key_id))
    public = material.private_key.public_key().public_numbers()
    return {f: credentials_opened[f] for f in SECRET_FIELDS}, public


def test_rotating_the_key_file_reseals_everything_and_prunes_old_keys(
    redis_url, redis_client, tmp_path, clock
):
    from click.testing import CliRunner

    from worker.cli.main import cli as command

    app = App(Settings(redis_url=redis_url, data_dir=tmp_path / "var"), clock=clock)

    def cli(*args):
        return CliRunner().invoke(command, list(args), obj=app, catch_exceptions=False)

    made = install_a_token(cli, clock, tmp_path)
    certificate = x509.load_pem_x509_certificate(cli("keys", "export", "Lab").stdout.encode())
    old_id = app.keyring().primary.key_id
    # When the key is rotated
    rotated = cli("secrets", "rotate-key")
    assert rotated.exit_code == 0, rotated.output
    assert "re-sealed 2 of 2" in rotated.stdout
    new_id = app.keyring().primary.key_id
    assert new_id != old_id
    status = json.loads(cli("secrets", "status", "--json").stdout)
    assert status["key_ids"] == [new_id, old_id]
    assert status["sealed_values_by_key_id"] == {new_id: 2}
    # Then old keys can be pruned and every secret still opens with the new key alone
    assert cli("secrets", "prune-keys").exit_code == 0
    fresh = App(Settings(redis_url=redis_url, data_dir=tmp_path / "var"), clock=clock)
    assert fresh.keyring().key_ids == [new_id]
    assert opened(fresh) == (made, certificate.public_key().public_numbers())


def test_with_keys_in_the_environment_a_new_primary_plus_reencrypt_rotates(
    redis_url, redis_client, tmp_path, clock, cli, app
):
    made = install_a_token(cli, clock, tmp_path)
    old = app.settings.master_key
    new = generate_master_key()
    # Old records stay readable once NEW,OLD is configured
    rotated = App(
        Settings(redis_url=redis_url, data_dir=tmp_path, master_key=f"{new},{old}"), clock=clock
    )
    server = rotated.store.servers_named("Lab")[0]
    assert opened(rotated)[0] == made
    # reencrypt moves them all to NEW
    assert rotated.store.reseal_all().resealed == 2
    assert rotated.store.reseal_all().resealed == 0
    only_new = App(Settings(redis_url=redis_url, data_dir=tmp_path, master_key=new), clock=clock)
    assert opened(only_new)[0] == made
    # and the old key alone no longer opens them, naming the key it needs
    with pytest.raises(SecretsError, match="not configured"):
        app.store.open_credentials(app.store.get_token(server.token_id))
    # rotate-key refuses to edit keys it does not own
    result = cli("secrets", "rotate-key")
    assert result.exit_code == 2
    assert "TOKENWARDEN_MASTER_KEY=NEW,OLD" in result.stderr

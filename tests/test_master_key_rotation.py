"""Rotating the master key while tokenwarden runs: running processes read their keys again
when they meet a value sealed under a key they do not hold, so nothing needs a restart; a key
that is truly missing is one clear error naming it."""

import os
import signal
import subprocess
import threading

import pytest
from click.testing import CliRunner
from standardwebhooks import Webhook

from tests.bench.common import load_tokens, user_of
from tests.helpers import TOKENWARDEN
from worker.bootstrap import App
from worker.cli.main import cli as command
from worker.config import Settings
from worker.crypto.masterkey import LiveKeyring, load_keyring, write_key_file
from worker.crypto.sealing import Keyring, generate_master_key
from worker.errors import UnknownMasterKey
from worker.notify.subscriptions import generate_secret


@pytest.fixture
def file_app(redis_url, redis_client, tmp_path):
    """An App whose master keys come from the key file in its data folder, on the wall clock
    (a worker process runs beside it)."""
    application = App(Settings(redis_url=redis_url, data_dir=tmp_path / "var"))
    yield application
    application.close()


@pytest.fixture
def file_cli(file_app):
    def invoke(*args: str):
        return CliRunner().invoke(command, list(args), obj=file_app, catch_exceptions=False)

    return invoke


def key_file_env(settings):
    env = {k: v for k, v in os.environ.items() if k != "TOKENWARDEN_MASTER_KEY"}
    return {
        **env,
        "REDIS_URL": settings.redis_url,
        "TOKENWARDEN_DATA_DIR": str(settings.data_dir),
        "TOKENWARDEN_LOG_LEVEL": "warning",
    }


def stop(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def assert_signed(arrival, secret):
    Webhook(secret).verify(arrival.body, arrival.headers)  # raises if the signature is wrong


def test_a_running_worker_delivers_signed_webhooks_after_rotate_key_without_a_restart(
    file_app, file_cli, receiver
):
    # Given tokens and a webhook subscription, sealed under the key file's first key
    load_tokens(file_app, 2, now=file_app.now())
    secret = generate_secret()
    added = file_cli("subscriptions", "add", receiver.url, "--secret", secret)
    assert added.exit_code == 0, added.output
    # and a worker process that has used that key (its first webhook arrived, signed)
    worker = subprocess.Popen(
        [TOKENWARDEN, "worker", "--processes", "1", "--threads", "2"],
        env=key_file_env(file_app.settings),
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert file_cli("emit", "password-changed", "--user", user_of(0)).exit_code == 0
        assert_signed(receiver.wait_for(1, timeout=60)[0], secret)
        old_key = file_app.keyring().primary.key_id
        # When the master key is rotated: everything is re-sealed under a key the worker
        # has never seen
        rotated = file_cli("secrets", "rotate-key")
        assert rotated.exit_code == 0, rotated.output
        assert file_app.keyring().primary.key_id != old_key
        assert file_cli("emit", "password-changed", "--user", user_of(1)).exit_code == 0
        # Then the next webhook arrives, signed with the subscription's secret, from the same
        # worker process
        second = receiver.wait_for(2, timeout=60)[1]
        assert_signed(second, secret)
        assert second.headers["webhook-id"] != receiver.received[0].headers["webhook-id"]
        assert worker.poll() is None
    finally:
        stop(worker)


def sealed_under_a_key_the_file_lacks():
    stranger = Keyring.from_text(generate_master_key(), where="test")
    return stranger.primary.key_id, stranger.seal(b"a secret", "ctx")


def test_a_key_missing_even_after_reading_the_file_again_is_named_with_what_to_do(tmp_path):
    # Given a process whose key file does not hold the key a stored value was sealed with
    settings = Settings(data_dir=tmp_path / "var")
    keyring = LiveKeyring(settings, lambda: load_keyring(settings))
    missing, sealed = sealed_under_a_key_the_file_lacks()
    # When it opens that value, Then the error names the key, the file, and what to do
    with pytest.raises(UnknownMasterKey) as raised:
        keyring.open(sealed, "ctx")
    message = str(raised.value)
    assert raised.value.key_id == missing
    assert f"master key {missing}, which is not configured in {settings.master_key_file}" in (
        message
    )
    assert "put that key back into the file" in message
    assert "a secret" not in message


def test_a_key_missing_from_the_environment_says_to_restart_with_it(tmp_path):
    settings = Settings(data_dir=tmp_path / "var", master_key=generate_master_key())
    keyring = LiveKeyring(settings, lambda: load_keyring(settings))
    missing, sealed = sealed_under_a_key_the_file_lacks()
    with pytest.raises(UnknownMasterKey, match=f"{missing}.*TOKENWARDEN_MASTER_KEY.*restart"):
        keyring.open(sealed, "ctx")


def test_a_key_added_to_the_file_is_found_by_a_process_that_loaded_the_file_before(tmp_path):
    # Given a process that loaded the key file
    settings = Settings(data_dir=tmp_path / "var")
    keyring = LiveKeyring(settings, lambda: load_keyring(settings))
    old = keyring.key_ids
    # When another process puts a new primary key into the file and seals with it
    new = generate_master_key()
    write_key_file(settings.master_key_file, [new, *_keys_in(settings)])
    sealed = Keyring.from_text(new, where="test").seal(b"after rotation", "ctx")
    # Then this process opens the value, and seals new values under the new key too
    assert keyring.open(sealed, "ctx") == b"after rotation"
    assert keyring.key_ids[1:] == old
    assert keyring.seal(b"x", "ctx").split(":")[1] == keyring.primary.key_id != old[0]


def _keys_in(settings):
    text = settings.master_key_file.read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


class StoppedClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_threads_meeting_one_unknown_key_share_one_reload(tmp_path):
    # Given a process that loaded its keys, counting each load
    settings = Settings(data_dir=tmp_path / "var")
    loads = []

    def load():
        loads.append(1)
        return load_keyring(settings)

    clock = StoppedClock()
    keyring = LiveKeyring(settings, load, clock=clock, reload_interval_s=5)
    missing, sealed = sealed_under_a_key_the_file_lacks()
    # When 16 threads, 20 times each, meet a value under a key that is nowhere
    failures = []
    start = threading.Barrier(16)

    def meet():
        start.wait()
        for _ in range(20):
            try:
                keyring.open(sealed, "ctx")
            except UnknownMasterKey as exc:
                failures.append(exc.key_id)

    threads = [threading.Thread(target=meet) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then each open failed naming the key, and the keys were read again once, not 320 times
    assert failures == [missing] * 320
    assert len(loads) == 2
    # and once the interval has passed, the next such value makes one more reload
    clock.now = 5.0
    with pytest.raises(UnknownMasterKey):
        keyring.open(sealed, "ctx")
    assert len(loads) == 3

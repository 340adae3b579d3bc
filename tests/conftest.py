"""Test fixtures: a real Redis started for the run (on a free port) and flushed per test.

Set TOKENWARDEN_TEST_REDIS_URL to use a Redis you run yourself instead (it is flushed!).
"""

from __future__ import annotations

import os
from datetime import datetime

import pytest
import redis

from tests.helpers import FIXTURE_NOW, FIXTURES, quiet_logging, worker_threads
from tests.redis_server import RedisDidNotStart, start_redis_server
from worker.bootstrap import App
from worker.config import AppleSettings, Settings
from worker.crypto.sealing import Keyring, generate_master_key
from worker.store.memory import InMemoryStore
from worker.store.memory_notify import InMemoryNotificationStore

# Tests talk only to 127.0.0.1: every process a test starts (they inherit this environment)
# finds Apple's enrollment service on a closed loopback port, and asks it nothing on a
# schedule, unless a test points it at the fake (the `apple` fixture) and turns checks on.
os.environ["TOKENWARDEN_APPLE_URL"] = "http://127.0.0.1:9"
os.environ["TOKENWARDEN_APPLE_CHECK_INTERVAL"] = "0"
# ...and a `tokenwarden run` they start serves its HTTP intake on a free port.
os.environ["TOKENWARDEN_HTTP_LISTEN"] = "127.0.0.1:0"


@pytest.fixture(scope="session", autouse=True)
def _logging():
    quiet_logging()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    if url := os.environ.get("TOKENWARDEN_TEST_REDIS_URL"):
        yield url
        return
    try:
        url, process = start_redis_server(tmp_path_factory.mktemp("redis"))
    except RedisDidNotStart as exc:
        pytest.exit(str(exc), 3)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock(FIXTURE_NOW)


@pytest.fixture
def settings(redis_url, tmp_path):
    return Settings(
        redis_url=redis_url,
        data_dir=tmp_path / "var",
        master_key=generate_master_key(),
        # Apple's service on a closed loopback port: a test that means to ask it points it at
        # the fake (tests/apple_fake.py) by overriding this fixture.
        apple=AppleSettings(url="http://127.0.0.1:9", check_interval_s=0, timeout_s=2),
    )


@pytest.fixture
def app(settings, redis_client, clock):
    application = App(settings, clock=clock)
    yield application
    application.close()


@pytest.fixture(params=["redis", "memory"])
def store(request, settings):
    """Each implementation of worker.store.protocol.Store in turn: the RedisStore on the test
    Redis (flushed), and an InMemoryStore sealing with the same master key."""
    if request.param == "redis":
        return request.getfixturevalue("app").store
    keyring = Keyring.from_text(settings.master_key, where="the test settings")
    return InMemoryStore(lambda: keyring)


@pytest.fixture
def notifications(request, store, settings):
    """The notification store (worker.notify.store.NotificationStore) beside each `store`: the
    Redis DeliveryStore of the test App, or an InMemoryNotificationStore reading the outbox the
    InMemoryStore writes."""
    if not isinstance(store, InMemoryStore):
        return request.getfixturevalue("app").deliveries
    keyring = Keyring.from_text(settings.master_key, where="the test settings")
    return InMemoryNotificationStore(store, lambda: keyring)


@pytest.fixture
def listings(request, store):
    """The listing of every server that goes with `store`."""
    return store if isinstance(store, InMemoryStore) else request.getfixturevalue("app").listings


@pytest.fixture
def fixture_files():
    if not FIXTURES.is_dir():
        pytest.fail(f"the Apple fixture is missing at {FIXTURES}")
    return FIXTURES


@pytest.fixture
def snapshot(redis_url):
    """Every key and value in Redis, to prove a refused command changed nothing."""
    raw = redis.Redis.from_url(redis_url)
    readers = {
        b"string": raw.get,
        b"hash": raw.hgetall,
        b"set": raw.smembers,
        b"zset": lambda key: raw.zrange(key, 0, -1, withscores=True),
        b"list": lambda key: raw.lrange(key, 0, -1),
        b"stream": lambda key: raw.xrange(key),
    }

    def take() -> dict[bytes, object]:
        # Values, not DUMP: a hash's DUMP changes order as Redis rehashes it on reads.
        return {key: readers[raw.type(key)](key) for key in sorted(raw.scan_iter(count=1000))}

    yield take
    raw.close()


@pytest.fixture
def cli(app):
    """Run a tokenwarden command in-process against the test App; returns click's Result."""
    from click.testing import CliRunner

    from worker.cli.main import cli as command

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(command, list(args), obj=app, input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def worker(app):
    with worker_threads(app) as running:
        yield running


@pytest.fixture
def receiver():
    """A real HTTP server playing a webhook receiver (see tests/receiver.py)."""
    from tests.receiver import start_receiver

    playing, server = start_receiver()
    yield playing
    server.shutdown()
    server.server_close()


@pytest.fixture
def apple():
    """A real HTTP server playing Apple's device enrollment service (see tests/apple_fake.py)."""
    from tests.apple_fake import start_fake_apple

    fake = start_fake_apple()
    yield fake
    fake.close()


@pytest.fixture
def intake(app):
    """The HTTP intake (`tokenwarden serve`) on a free loopback port, served by uvicorn in a
    thread of the test process; yields its base URL."""
    from tests.helpers import serving
    from worker.intake.app import create_app

    with serving(create_app(app)) as url:
        yield url

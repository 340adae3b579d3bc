"""`status`, `tokens list` and `replacements list` read in batches: the round trips to Redis
do not grow with the number of servers, tokens and replacements listed."""

import json

import pytest
import redis

from events import catalog
from events.cloudevent import new_event
from tests.bench.common import load_tokens, user_of

SMALL, LARGE = 200, 3_000


class CountingConnection(redis.Connection):
    """A Redis connection that counts what it sends: one count per round trip (a pipeline
    sends all its commands at once)."""

    sent = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.sent += 1
        return super().send_packed_command(command, check_health)


@pytest.fixture
def counted(app, settings):
    """The app, its Redis client counting round trips."""
    app.__dict__["redis"] = redis.Redis.from_url(
        settings.redis_url, decode_responses=True, connection_class=CountingConnection
    )
    return app


def grow_estate(app, servers: int, already: int = 0) -> None:
    """`servers` servers with a token each; every other one's user left (an open
    replacement)."""
    load_tokens(app, servers, now=app.now())
    events = [
        new_event(catalog.USER_LEFT, {"user": user_of(i)}, source="test", time=app.now())
        for i in range(already, servers, 2)
    ]
    app.handler.handle_batch([e.to_wire() for e in events], received_at=app.now(), now=app.now())


def round_trips(cli, *command) -> int:
    before = CountingConnection.sent
    result = cli(*command, "--json")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert json.loads(result.stdout)
    return CountingConnection.sent - before


@pytest.mark.parametrize(
    "command", [("status",), ("replacements", "list"), ("tokens", "list")], ids=" ".join
)
def test_a_listing_takes_as_many_round_trips_for_thousands_of_rows_as_for_a_few(
    counted, cli, command
):
    # Given a few servers, tokens and open replacements
    grow_estate(counted, SMALL)
    few = round_trips(cli, *command)
    # When there are thousands
    grow_estate(counted, LARGE, already=SMALL)
    many = round_trips(cli, *command)
    # Then listing them takes no more round trips
    assert many == few

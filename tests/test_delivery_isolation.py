"""One receiver that never answers must not hold up deliveries to the others: attempts are
bounded per subscription, and what waits beyond the bound stays durably due."""

import json
import socket
from dataclasses import replace

import pytest

from tests.bench.common import load_tokens, user_of
from tests.helpers import emit, wait_until
from worker.config import NotifySettings

#: Events sent to both subscriptions: far more than the delivery threads of a worker.
EVENTS = 40


@pytest.fixture
def tokens(app):
    """EVENTS servers, each with a token downloaded by user_of(i): one departure each makes
    one outgoing event each (more causes for one token would be merged and told once)."""
    load_tokens(app, EVENTS, now=app.now())


@pytest.fixture
def patient(app):
    """Attempts wait a minute for an answer, so a hanging receiver stays hanging for the test;
    one quick retry afterwards."""
    app.settings = replace(
        app.settings,
        notify=NotifySettings(webhook_timeout_s=60, retry_schedule_s=(1,), retry_jitter=0),
    )
    return app


@pytest.fixture
def hanging_url():
    """A receiver that accepts connections (the kernel's backlog) and never answers. Closing
    it resets the connections waiting on it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    yield listener, f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    listener.close()


def subscribe(cli, url) -> str:
    result = cli("subscriptions", "add", url, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["id"]


def deliveries_of(cli, subscription_id):
    listed = json.loads(cli("deliveries", "list", "--json", "--limit", "1000").stdout)
    return [d for d in listed if d["subscription"] == subscription_id]


def test_a_hanging_receiver_does_not_hold_up_a_healthy_one(
    cli, app, tokens, patient, receiver, worker, hanging_url
):
    # Given one subscription to a receiver that never answers and one to a healthy receiver
    listener, url = hanging_url
    hanging = subscribe(cli, url)
    healthy = subscribe(cli, receiver.url)
    # When many events are sent to both
    for number in range(EVENTS):
        emit(cli, "user-left", "--user", user_of(number))
    # Then the healthy receiver gets every one while the hanging one's first attempts are
    # still waiting for an answer
    wait_until(lambda: [d["status"] for d in deliveries_of(cli, healthy)] == ["delivered"] * EVENTS)
    assert len({r.headers["webhook-id"] for r in receiver.received}) == EVENTS
    waiting = deliveries_of(cli, hanging)
    assert len(waiting) == EVENTS
    assert {(d["status"], d["attempts"]) for d in waiting} == {("pending", 0)}
    # And once the hanging receiver goes away, none of its deliveries is lost: each is tried
    # (refused), retried once and given up, however long it waited
    listener.close()
    wait_until(
        lambda: (
            [(d["status"], d["attempts"]) for d in deliveries_of(cli, hanging)]
            == [("failed", 2)] * EVENTS
        ),
        timeout=60,
    )

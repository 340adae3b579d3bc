"""An outgoing event's body is stored once, however many subscriptions it goes to, and kept as
long as a delivery may still need it (a retry hours later, or `deliveries retry`)."""

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.helpers import DOWNLOADED, emit, every_redis_byte, install
from worker.config import NotifySettings
from worker.notify.dispatcher import Dispatcher
from worker.store import keys as k
from worker.timefmt import utc_now

SUBSCRIPTIONS = 20


@pytest.fixture
def lab(cli, clock, tmp_path):
    assert cli("servers", "add", "Lab", "--org", "School").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "Teacher@School.edu", DOWNLOADED, days_left=345)
    return "Lab"


@pytest.fixture
def quick_retry(app):
    """One retry, a second after the first attempt."""
    app.settings = replace(
        app.settings, notify=NotifySettings(retry_schedule_s=(1,), retry_jitter=0)
    )
    app.__dict__.pop("deliverer", None)
    return app


def handle_queued_events(app):
    """Decide what `emit` queued, in-process (no worker runs in these tests), and empty the
    queue."""
    from worker.broker import EVENTS_QUEUE

    for message in app.redis.hvals(k.broker_messages(EVENTS_QUEUE)):
        app.handler.handle_batch(
            json.loads(message)["args"][0], received_at=app.now(), now=app.now()
        )
    app.redis.delete(k.broker_queue(EVENTS_QUEUE), k.broker_messages(EVENTS_QUEUE))


def subscribe(cli, url):
    result = cli("subscriptions", "add", url, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["id"]


def dispatch(app, at=None) -> list[tuple[str, str]]:
    """Dispatch new outgoing events and claim the due deliveries (at `at`, default now: the
    deliverer runs on the wall clock); returns (delivery, lease) of each to attempt."""
    sent: list[tuple[str, str]] = []
    clock = (lambda: at) if at else utc_now
    dispatcher = Dispatcher(app.deliveries, clock, lambda *a: sent.append(a[:2]))
    dispatcher.dispatch_new(block_ms=10)
    dispatcher.pump_due()
    return sent


def bodies(app) -> list[str]:
    return list(app.redis.scan_iter(match=f"{k.DELIVERY_BODY_PREFIX}*"))


def test_one_event_to_many_subscriptions_stores_its_body_once(cli, app, lab, receiver, redis_url):
    # Given twenty subscriptions that all want the same event
    for number in range(SUBSCRIPTIONS):
        subscribe(cli, f"{receiver.url}?n={number}")
    # When one outgoing event is dispatched to them
    emit(cli, "user-left", "--user", "Teacher@School.edu")
    handle_queued_events(app)
    sent = dispatch(app)
    assert len(sent) == SUBSCRIPTIONS
    # Then Redis holds the body twice: the outbox entry and one copy for all the deliveries
    [body] = app.redis.xrange(k.OUTBOX)[0][1:]
    event_id = json.loads(body["event"])["id"]
    assert every_redis_byte(redis_url).count(f'"id":"{event_id}"'.encode()) == 2
    delivery_bytes = sum(app.redis.memory_usage(k.delivery(ident)) for ident, _ in sent)
    assert delivery_bytes < SUBSCRIPTIONS * len(body["event"])
    # And once every delivery is made, the copy goes
    for handout in sent:
        assert app.deliverer.attempt(*handout) == "delivered"
    assert {json.loads(r.body)["id"] for r in receiver.received} == {event_id}
    assert len(receiver.received) == SUBSCRIPTIONS
    assert bodies(app) == []


def test_a_failed_delivery_keeps_the_body_for_a_retry_by_hand(cli, app, lab, quick_retry, receiver):
    # Given a delivery to a receiver that fails until it has used its schedule
    receiver.default = 503
    subscribe(cli, receiver.url)
    emit(cli, "user-left", "--user", "Teacher@School.edu")
    handle_queued_events(app)
    [first] = dispatch(app)
    assert app.deliverer.attempt(*first) == "retry"
    [second] = dispatch(app, at=utc_now() + timedelta(seconds=2))
    assert app.deliverer.attempt(*second) == "failed"
    # When it is retried by hand, long after the outbox entry was trimmed
    Dispatcher(app.deliveries, lambda: utc_now() + timedelta(days=3), lambda *a: None).tidy()
    assert app.redis.xlen(k.OUTBOX) == 0
    receiver.default = 204
    assert app.deliveries.retry(first[0], utc_now())
    [third] = dispatch(app)
    # Then the receiver gets the same body, and only then is the body let go
    assert app.deliverer.attempt(*third) == "delivered"
    assert len({r.body for r in receiver.received}) == 1
    assert len(receiver.received) == 3
    assert bodies(app) == []


def test_a_delivery_failed_long_ago_is_forgotten_with_its_body(
    cli, app, lab, quick_retry, receiver
):
    # Given a delivery that failed: its receiver is gone for good, yet still subscribed
    receiver.default = 503
    subscribe(cli, receiver.url)
    emit(cli, "user-left", "--user", "Teacher@School.edu")
    handle_queued_events(app)
    [first] = dispatch(app)
    assert app.deliverer.attempt(*first) == "retry"
    [second] = dispatch(app, at=utc_now() + timedelta(seconds=2))
    assert app.deliverer.attempt(*second) == "failed"
    assert len(bodies(app)) == 1
    # When tidying runs within the keeping time, the failure (and the body) stay for a retry
    Dispatcher(app.deliveries, lambda: utc_now() + timedelta(days=29), lambda *a: None).tidy()
    assert [d.status for d in app.deliveries.deliveries(failed_only=True)] == ["failed"]
    assert len(bodies(app)) == 1
    # When it runs after it
    Dispatcher(app.deliveries, lambda: utc_now() + timedelta(days=31), lambda *a: None).tidy()
    # Then the failed delivery and the body it alone still needed are gone
    assert app.deliveries.deliveries(failed_only=True) == []
    assert app.redis.exists(k.delivery(first[0])) == 0
    assert app.redis.zcard(k.DELIVERIES_FAILED) == 0
    assert bodies(app) == []

"""Signed CloudEvents webhooks, retries, 410s, bad receivers and the outbox sweeper, against a
real HTTP server in the test and a real dramatiq worker."""

import json
from dataclasses import replace

import pytest
from cloudevents.v1.http import from_http
from standardwebhooks.webhooks import Webhook

from events import catalog
from tests.helpers import (  # noqa: F401
    DOWNLOADED,
    emit,
    install,
    replacements,
    wait_until,
    wait_until_settled,
)
from worker.config import NotifySettings
from worker.store import keys as k


@pytest.fixture
def lab(cli, clock, tmp_path):
    assert cli("servers", "add", "Lab", "--org", "School").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "Teacher@School.edu", DOWNLOADED, days_left=345)
    return "Lab"


def subscribe(cli, url, *extra) -> tuple[str, str]:
    result = cli("subscriptions", "add", url, "--json", *extra)
    assert result.exit_code == 0, result.output
    added = json.loads(result.stdout)
    return added["id"], added.get("secret")


def deliveries(cli, *extra):
    return json.loads(cli("deliveries", "list", "--json", *extra).stdout)


def test_a_delivery_verifies_with_standard_webhooks_and_parses_as_a_cloudevent(
    cli, app, lab, receiver, worker
):
    # Given a webhook subscription with a generated secret
    _, secret = subscribe(cli, receiver.url)
    assert secret.startswith("whsec_")
    # When a password change dooms the token
    event_id = emit(cli, "password-changed", "--user", "teacher@school.edu")
    [request] = receiver.wait_for(1)
    # Then the receiver can verify it with the reference library...
    verified = Webhook(secret).verify(request.body, request.headers)
    assert verified["type"] == catalog.REPLACEMENT_REQUIRED
    assert request.headers["content-type"] == "application/cloudevents+json"
    # ...and parse it with the CloudEvents SDK
    event = from_http(request.headers, request.body)
    assert event["type"] == catalog.REPLACEMENT_REQUIRED
    assert event["id"] == request.headers["webhook-id"]
    assert event.data["server"] == "Lab"
    assert event.data["reasons"][0]["id"] == event_id
    wait_until(lambda: deliveries(cli)[0]["status"] == "delivered")
    assert deliveries(cli)[0]["attempts"] == 1


def test_a_receiver_failing_twice_then_succeeding_gets_it_three_times_with_one_id(
    cli, app, lab, receiver, worker
):
    receiver.then(500, "close", 200)
    subscribe(cli, receiver.url)
    emit(cli, "user-left", "--user", "Teacher@School.edu")
    requests = receiver.wait_for(3, timeout=20)
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1
    wait_until(lambda: deliveries(cli)[0]["status"] == "delivered")
    [delivered] = deliveries(cli)
    assert delivered["attempts"] == 3
    wait_until_settled(app.redis)
    assert len(receiver.received) == 3, "a delivered event was sent again"


def test_a_410_disables_the_subscription_and_says_so(cli, app, lab, receiver, worker):
    from structlog.testing import capture_logs

    receiver.then(410)
    subscription_id, _ = subscribe(cli, receiver.url)
    with capture_logs() as logs:
        emit(cli, "user-left", "--user", "Teacher@School.edu")
        receiver.wait_for(1)
        wait_until(lambda: deliveries(cli)[0]["status"] == "failed")
    [listed] = json.loads(cli("subscriptions", "list", "--json").stdout)
    assert (listed["id"], listed["status"]) == (subscription_id, "disabled")
    assert "410" in listed["disabled_reason"]
    assert any(e["event"] == "subscription_disabled" for e in logs)
    # and later events are not sent to it
    sent_before = len(app.store.events.outbox())
    emit(cli, "token-generated", "--server", "Lab")
    worker.drain()
    wait_until_settled(app.redis)
    assert len(app.store.events.outbox()) > sent_before, "the later event went out"
    assert len(receiver.received) == 1


def test_bad_receivers_are_failed_attempts_and_never_block_other_deliveries(
    cli, app, lab, receiver, worker
):
    from tests.receiver import start_receiver

    healthy, server = start_receiver()
    try:
        receiver.then("hang", "redirect", "garbage")
        subscribe(cli, receiver.url)
        subscribe(cli, healthy.url)
        emit(cli, "user-left", "--user", "Teacher@School.edu")
        healthy.wait_for(1, timeout=5)
        # the hung receiver times out, the redirect is not followed, garbage with 200 is fine
        receiver.wait_for(3, timeout=20)
        wait_until(lambda: all(d["status"] == "delivered" for d in deliveries(cli)))
        mine = [d for d in deliveries(cli) if d["attempts"] == 3]
        assert len(mine) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_a_delivery_that_exhausts_its_schedule_is_kept_failed_and_can_be_retried(
    cli, app, lab, receiver, worker
):
    receiver.default = 503
    subscribe(cli, receiver.url)
    emit(cli, "user-left", "--user", "Teacher@School.edu")
    wait_until(lambda: deliveries(cli) and deliveries(cli)[0]["status"] == "failed")
    [failed] = deliveries(cli, "--failed")
    assert failed["attempts"] == 4  # the first try and the three retries of the test schedule
    assert failed["last_status"] == "503"
    assert len(receiver.received) == 4
    # When the operator retries it once the receiver is back
    receiver.default = 200
    retried = cli("deliveries", "retry", failed["id"])
    assert retried.exit_code == 0, retried.output
    wait_until(lambda: deliveries(cli)[0]["status"] == "delivered")
    assert deliveries(cli, "--failed") == []
    again = cli("deliveries", "retry", failed["id"])
    assert again.exit_code == 1
    assert "is delivered, not failed" in again.stderr


def test_subscriptions_filter_by_type_org_and_server(cli, app, lab, receiver, worker):
    subscribe(cli, receiver.url, "--types", "tokenwarden.token.replaced")
    subscribe(cli, receiver.url + "?org", "--org", "other school")
    subscribe(cli, receiver.url + "?server", "--server", "LAB", "--types", "tokenwarden.token.")
    emit(cli, "user-left", "--user", "Teacher@School.edu")
    [request] = receiver.wait_for(1)
    assert request.path == "/hook?server"
    worker.drain()
    wait_until_settled(app.redis)
    assert len(receiver.received) == 1


def handle_queued_events(app):
    """Decide what `emit` queued, in-process (no worker running in these tests)."""
    from worker.broker import EVENTS_QUEUE

    for message in app.redis.hvals(k.broker_messages(EVENTS_QUEUE)):
        app.handler.handle_batch(
            json.loads(message)["args"][0], received_at=app.now(), now=app.now()
        )


def test_an_outbox_entry_left_by_a_dead_dispatcher_is_delivered_by_the_sweeper(
    cli, app, lab, receiver
):
    from worker.notify.dispatcher import STALE_ENTRY_MS, SWEEP_EVERY_S, Dispatcher

    assert STALE_ENTRY_MS + SWEEP_EVERY_S * 1000 <= 60_000, "a crash must cost under a minute"
    subscribe(cli, receiver.url)
    # Given an outgoing event a dispatcher read but died before handing to delivery
    emit(cli, "user-left", "--user", "Teacher@School.edu")
    handle_queued_events(app)
    sent: list[tuple[str, str]] = []
    dead = Dispatcher(app.deliveries, app.now, lambda *a: sent.append(a[:2]), consumer="dead-one")
    assert app.deliveries.read_outbox("dead-one", 10, 0)  # read, never acknowledged
    # When a live dispatcher sweeps
    alive = Dispatcher(app.deliveries, app.now, lambda *a: sent.append(a[:2]), consumer="alive")
    assert alive.dispatch_new(block_ms=10) == 0  # nothing new: it was read already
    assert alive.sweep_outbox(min_idle_ms=0) == 1
    # Then its delivery exists and was sent, once
    [(delivery, lease)] = sent
    assert app.deliverer.attempt(delivery, lease) == "delivered"
    assert len(receiver.received) == 1
    assert alive.sweep_outbox(min_idle_ms=0) == 0
    assert dead.sweep_outbox(min_idle_ms=0) == 0


def test_a_duplicate_or_late_message_neither_sends_again_nor_hurries_a_retry(
    cli, app, lab, receiver
):
    from worker.notify.dispatcher import Dispatcher

    receiver.default = 500
    subscribe(cli, receiver.url)
    emit(cli, "user-left", "--user", "Teacher@School.edu")
    handle_queued_events(app)
    sent: list[tuple[str, str]] = []
    Dispatcher(app.deliveries, app.now, lambda *a: sent.append(a[:2])).dispatch_new(block_ms=10)
    [(delivery, lease)] = sent
    # the first attempt fails and schedules a retry in 5 s
    assert app.deliverer.attempt(delivery, lease) == "retry"
    # the same message again (a redelivery), or one with a stale lease, does nothing
    assert app.deliverer.attempt(delivery, lease) is None
    assert app.deliverer.attempt(delivery, "someone-else") is None
    assert len(receiver.received) == 1
    assert deliveries(cli)[0]["attempts"] == 1


def test_a_receiver_trickling_bytes_is_cut_off_at_the_deadline(cli, app, lab, receiver):
    from worker.notify.dispatcher import Dispatcher

    receiver.then("trickle")
    subscribe(cli, receiver.url)
    emit(cli, "user-left", "--user", "Teacher@School.edu")
    handle_queued_events(app)
    sent: list[tuple[str, str]] = []
    Dispatcher(app.deliveries, app.now, lambda *a: sent.append(a[:2])).dispatch_new(block_ms=10)
    app.settings = replace(app.settings, notify=NotifySettings(webhook_timeout_s=1))
    app.__dict__.pop("deliverer", None)
    # (the receiver trickles a header a second for 10 s: only the whole-request deadline
    # ends the attempt with this message; a per-read timeout would never fire)
    assert app.deliverer.attempt(*sent[0]) == "retry"
    assert "no answer within 1 s" in deliveries(cli)[0]["last_error"]


def test_removing_a_subscription_cancels_its_pending_deliveries(cli, app, lab, receiver, worker):
    receiver.default = 500
    subscription_id, _ = subscribe(cli, receiver.url)
    emit(cli, "user-left", "--user", "Teacher@School.edu")
    receiver.wait_for(1)
    assert cli("subscriptions", "remove", subscription_id).exit_code == 0
    wait_until(lambda: deliveries(cli)[0]["status"] == "cancelled", timeout=10)
    assert deliveries(cli, "--failed") == []
    refused = cli("deliveries", "retry", deliveries(cli)[0]["id"])
    assert refused.exit_code == 1
    assert "was removed; it cannot be retried" in refused.stderr


def test_an_unreadable_outbox_entry_is_dead_lettered_and_the_rest_delivered(
    cli, app, lab, receiver
):
    from worker.notify.dispatcher import Dispatcher

    subscribe(cli, receiver.url)
    app.redis.xadd(k.OUTBOX, {"type": "x", "event": "{not json"})
    emit(cli, "user-left", "--user", "Teacher@School.edu")
    handle_queued_events(app)
    sent: list[tuple[str, str]] = []
    assert Dispatcher(app.deliveries, app.now, lambda *a: sent.append(a[:2])).dispatch_new(10) == 1
    assert app.deliverer.attempt(*sent[0]) == "delivered"
    [dead] = app.store.events.dead_letters()
    assert dead["reason"] == "an outbox entry is not a readable event"


def test_tidying_trims_the_dispatched_outbox_but_never_what_is_unread(cli, app, lab):
    from datetime import timedelta

    from worker.notify.dispatcher import Dispatcher
    from worker.timefmt import utc_now

    emit(cli, "user-left", "--user", "Teacher@School.edu")
    handle_queued_events(app)
    later = utc_now() + timedelta(days=2)
    dispatcher = Dispatcher(app.deliveries, lambda: later, lambda *a: None)
    dispatcher.tidy()
    assert app.redis.xlen(k.OUTBOX) == 1, "unread entries must stay"
    dispatcher.dispatch_new(block_ms=10)
    dispatcher.tidy()
    assert app.redis.xlen(k.OUTBOX) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ftp://example.org/hook",), "is not an http(s) URL"),
        (("not a url",), "is not an http(s) URL"),
        (("https://user:pw@example.org/",), "put no credentials in the URL"),
        (("https://example.org/", "--secret", "hunter2"), "does not start with whsec_"),
        (("https://example.org/", "--secret", "whsec_!!!"), "not valid base64"),
        (("https://example.org/", "--secret", "whsec_c2hvcnQ="), "holds 5 bytes"),
        (("https://example.org/", "--types", "tokenwarden.token.nope"), "is not an outgoing"),
        (("mailto:not-an-address",), "is not an e-mail address"),
        (("http://a..b/hook",), "is not a valid host name"),
        (("http://a..b/hooks/T0KEN-s3cret",), "is not a valid host name"),
        (("ftp://example.org/hooks/T0KEN-s3cret",), "is not an http(s) URL"),
        (("https://example.org:99999/hooks/T0KEN-s3cret",), "is not a valid URL"),
        (("https://example.org/", "--types", ","), "names no type"),
    ],
)
def test_bad_subscriptions_are_one_clear_line(cli, snapshot, args, message):
    from tests.helpers import assert_refused

    line = assert_refused(cli, snapshot, ("subscriptions", "add", *args), message)
    for secret in ("hunter2", "user:pw", "pw@", "T0KEN-s3cret"):  # the rows' secrets
        assert secret not in line


def test_a_secret_is_shown_once_and_never_stored_or_listed_in_clear(cli, app, redis_url):
    from tests.helpers import every_redis_byte

    given = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    subscribe(cli, "https://example.org/hook", "--secret", given)
    _, generated = subscribe(cli, "https://example.org/other")
    listed = cli("subscriptions", "list", "--json").stdout + cli("subscriptions", "list").stdout
    dump = every_redis_byte(redis_url)
    for secret in (given, generated):
        assert secret not in listed
        assert secret.encode() not in dump
        assert secret.removeprefix("whsec_").encode() not in dump


def test_subscriptions_test_sends_a_signed_event(cli, app, receiver):
    subscription_id, secret = subscribe(cli, receiver.url)
    result = cli("subscriptions", "test", subscription_id)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("delivered: 204")
    [request] = receiver.received
    assert (
        Webhook(secret).verify(request.body, request.headers)["type"]
        == "tokenwarden.subscription.test"
    )
    receiver.default = 500
    failed = cli("subscriptions", "test", subscription_id)
    assert failed.exit_code == 1
    assert "answered HTTP 500" in failed.stderr


def test_delivery_log_lines_name_the_attempt_and_never_the_secret(cli, app, lab, receiver, worker):
    from structlog.testing import capture_logs

    _, secret = subscribe(cli, receiver.url)
    with capture_logs() as logs:
        emit(cli, "user-left", "--user", "Teacher@School.edu")
        receiver.wait_for(1)
        wait_until(lambda: any(e["event"] == "delivery_attempt" for e in logs))
    [line] = [e for e in logs if e["event"] == "delivery_attempt"]
    assert line["attempt"] == 1
    assert line["status"] == "204"
    assert line["target"] == receiver.url.removesuffix("hook") + "…"
    assert {"subscription", "event_id", "latency_ms"} <= line.keys()
    assert secret not in json.dumps(logs, default=str)


def test_a_worker_killed_between_attempts_resumes_the_schedule(
    cli, app, settings, lab, receiver, tmp_path
):
    import os
    import signal

    from tests.helpers import start_worker

    receiver.then(500)
    subscribe(cli, receiver.url)
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "TOKENWARDEN_MASTER_KEY": settings.master_key,
        "TOKENWARDEN_DATA_DIR": str(tmp_path / "var"),
        "TOKENWARDEN_LOG_LEVEL": "warning",
        "TOKENWARDEN_POLL_INTERVAL_MS": "10",
        "TOKENWARDEN_HEARTBEAT_TIMEOUT": "2",
        "TOKENWARDEN_WEBHOOK_RETRY_SCHEDULE": "3",
        "TOKENWARDEN_WEBHOOK_RETRY_JITTER": "0",
    }
    first = start_worker(env)
    second = None
    try:
        # Given a first attempt that failed, with the retry scheduled
        emit(cli, "user-left", "--user", "Teacher@School.edu")
        receiver.wait_for(1)
        wait_until(lambda: deliveries(cli) and deliveries(cli)[0]["attempts"] == 1)
        assert deliveries(cli)[0]["next_attempt_at"] is not None
        # When the worker is killed before the retry
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        # Then another worker carries on with the schedule, and delivers once
        second = start_worker(env)
        receiver.wait_for(2, timeout=30)
        waited = receiver.received[1].at - receiver.received[0].at
        assert waited >= 2.9, f"the retry came {waited:.1f} s after the failure, not 3 s"
        wait_until(lambda: deliveries(cli)[0]["status"] == "delivered")
        assert deliveries(cli)[0]["attempts"] == 2
        wait_until_settled(app.redis)
        assert len(receiver.received) == 2
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)

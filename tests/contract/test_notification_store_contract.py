"""One contract for every NotificationStore (worker/notify/store.py): each test runs against the
Redis DeliveryStore on the test Redis and against the InMemoryNotificationStore (the
`notifications` fixture, beside the `store` whose applied decisions fill its outbox), so the
two cannot drift.
"""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import FIXTURE_NOW
from worker.errors import NotFound
from worker.notify.records import CANCELLED, DELIVERED, FAILED, PENDING
from worker.notify.store import NotificationStore
from worker.notify.subscriptions import DISABLED, EMAIL, WEBHOOK, Subscription
from worker.rules.decision import Decision
from worker.store.memory_notify import InMemoryNotificationStore

NOW = FIXTURE_NOW
LEASE_MS = 30_000
URL = "https://hooks.example.org/services/T000/very-secret-path"
SECRET = "whsec_" + "A" * 43


def webhook(ident="sub_a", **fields) -> Subscription:
    return Subscription(ident, WEBHOOK, URL, ("tokenwarden.",), NOW, **fields)


def event(ident="evt_1", event_type="tokenwarden.token.replacement_required") -> dict:
    return {"id": ident, "type": event_type, "data": {"server": "Lab"}}


def delivery_id(event_id: str, subscription_id: str) -> str:
    return f"{event_id}.{subscription_id}"


def create(notifications, subscriptions, ev=None, *, now=NOW, park=()):
    return notifications.create_deliveries(
        ev or event(), subscriptions, delivery_id, now, LEASE_MS, "w1", park=park
    )


def attempt(notifications, ident, lease, number, outcome, *, now=NOW, next_at=None):
    delivery = notifications.get_delivery(ident)
    return notifications.record_attempt(
        delivery,
        lease=lease,
        attempt=number,
        outcome=outcome,
        status="200",
        error="",
        now=now,
        next_at=next_at,
        latency_ms=1.0,
    )


# ---- subscriptions ---------------------------------------------------------------------------


def test_a_subscription_is_kept_with_its_url_and_secret_sealed_and_opened_back(notifications):
    notifications.add_subscription(webhook(), SECRET)
    notifications.add_subscription(Subscription("sub_b", EMAIL, "ops@x.org", (), NOW), None)
    [first, second] = notifications.subscriptions()
    assert first.id == "sub_a" and "very-secret-path" not in first.target
    assert notifications.get_subscription("sub_b").target == "ops@x.org"
    assert notifications.open_target(first) == URL
    assert notifications.open_secret(first) == SECRET
    assert notifications.open_target(second) == "ops@x.org"
    with pytest.raises(NotFound):
        notifications.open_secret(second)


def test_a_subscription_is_disabled_enabled_and_removed(notifications):
    notifications.add_subscription(webhook(), SECRET)
    notifications.disable_subscription("sub_a", "gone", NOW)
    disabled = notifications.get_subscription("sub_a")
    assert (disabled.status, disabled.disabled_reason, disabled.disabled_at) == (
        DISABLED,
        "gone",
        NOW,
    )
    notifications.enable_subscription("sub_a")
    assert notifications.get_subscription("sub_a").status == "active"
    assert notifications.remove_subscription("sub_a") is True
    assert notifications.remove_subscription("sub_a") is False
    notifications.disable_subscription("sub_a", "gone", NOW)  # nothing left half-written
    assert notifications.get_subscription("sub_a") is None
    assert notifications.subscriptions() == []


# ---- the outbox ------------------------------------------------------------------------------


def emit(store, *events):
    store.events.apply(Decision(now=NOW, outgoing=list(events)))


def test_the_outbox_is_read_once_pending_until_acked_and_taken_over_when_stale(
    store, notifications
):
    notifications.ensure_dispatch_group()
    notifications.ensure_dispatch_group()  # idempotent
    emit(store, event("evt_1"), event("evt_2"))
    entries = notifications.read_outbox("c1", 10, 1)
    assert [e.event["id"] for e in entries] == ["evt_1", "evt_2"]
    assert notifications.read_outbox("c2", 10, 1) == []
    notifications.ack_outbox([entries[0].entry_id])
    taken = notifications.claim_stale_outbox("c2", 0, 10)
    assert [e.event["id"] for e in taken] == ["evt_2"]
    assert notifications.claim_stale_outbox("c2", 3_600_000, 10) == []
    notifications.ack_outbox([e.entry_id for e in taken])
    assert notifications.claim_stale_outbox("c3", 0, 10) == []


def test_an_unreadable_outbox_entry_goes_to_the_dead_letters(store, notifications):
    notifications.ensure_dispatch_group()
    emit(store, {"id": 7, "type": "x"})
    [entry] = notifications.read_outbox("c1", 10, 1)
    assert entry.event is None
    notifications.dead_outbox_entry(entry, NOW)
    [letter] = store.events.dead_letters()
    assert letter["reason"] == "an outbox entry is not a readable event"
    assert (letter["message_id"], letter["payload"]) == (entry.entry_id, entry.raw)
    notifications.ack_outbox([entry.entry_id])
    assert notifications.claim_stale_outbox("c1", 0, 10) == []


# ---- creating and claiming deliveries ----------------------------------------------------------


def test_deliveries_are_created_once_per_event_and_subscription(notifications):
    subs = [webhook("sub_a"), webhook("sub_b")]
    assert create(notifications, subs) == ["evt_1.sub_a", "evt_1.sub_b"]
    assert create(notifications, subs) == []
    made = notifications.get_delivery("evt_1.sub_a")
    assert (made.status, made.attempts, made.event_id) == (PENDING, 0, "evt_1")
    assert '"evt_1"' in made.event
    assert [d.id for d in notifications.deliveries()] == ["evt_1.sub_b", "evt_1.sub_a"]


def test_a_delivery_sent_now_is_leased_to_its_sender_and_a_parked_one_waits(notifications):
    create(notifications, [webhook("sub_a"), webhook("sub_b")], park={"sub_b"})
    assert notifications.begin_attempt("evt_1.sub_a", "w1:evt_1.sub_a", NOW, LEASE_MS) == 0
    assert notifications.begin_attempt("evt_1.sub_b", "w1:evt_1.sub_b", NOW, LEASE_MS) is None
    assert notifications.claim_parked("sub_b", NOW, LEASE_MS, "w2") == "evt_1.sub_b"
    assert notifications.claim_parked("sub_b", NOW, LEASE_MS, "w2") is None
    assert notifications.begin_attempt("evt_1.sub_b", "w2:evt_1.sub_b", NOW, LEASE_MS) == 0


def test_claim_due_takes_an_expired_lease_once_and_not_before_it_expires(notifications):
    create(notifications, [webhook("sub_a")])
    assert notifications.claim_due(NOW, LEASE_MS, 10, "w2") == []
    later = NOW + timedelta(milliseconds=LEASE_MS)
    assert notifications.claim_due(later, LEASE_MS, 10, "w2") == [("evt_1.sub_a", "sub_a")]
    assert notifications.claim_due(later, LEASE_MS, 10, "w3") == []
    # the old holder's lease is gone: its attempt does nothing
    assert notifications.begin_attempt("evt_1.sub_a", "w1:evt_1.sub_a", later, LEASE_MS) is None
    assert notifications.begin_attempt("evt_1.sub_a", "w2:evt_1.sub_a", later, LEASE_MS) == 0


def test_claim_due_parks_what_a_subscription_at_its_bound_cannot_take(notifications):
    for n in (1, 2):
        create(notifications, [webhook("sub_a")], event(f"evt_{n}"), park={"sub_a"})
    claimed = notifications.claim_due(NOW, LEASE_MS, 10, "w2", per_subscription=1)
    assert claimed == [("evt_1.sub_a", "sub_a")]
    held = {"sub_a": 1}
    assert notifications.claim_due(NOW, LEASE_MS, 10, "w2", per_subscription=1, in_hand=held) == []
    assert notifications.claim_parked("sub_a", NOW, LEASE_MS, "w2") == "evt_2.sub_a"


# ---- attempts --------------------------------------------------------------------------------


def test_an_attempt_is_recorded_only_for_the_lease_holder_and_the_next_number(notifications):
    create(notifications, [webhook()])
    lease = "w1:evt_1.sub_a"
    assert attempt(notifications, "evt_1.sub_a", "w9:evt_1.sub_a", 1, DELIVERED) is False
    assert attempt(notifications, "evt_1.sub_a", lease, 2, DELIVERED) is False
    assert notifications.get_delivery("evt_1.sub_a").status == PENDING
    assert attempt(notifications, "evt_1.sub_a", lease, 1, DELIVERED) is True
    assert attempt(notifications, "evt_1.sub_a", lease, 1, DELIVERED) is False  # late duplicate
    done = notifications.get_delivery("evt_1.sub_a")
    assert (done.status, done.attempts, done.last_status, done.next_at) == (
        DELIVERED,
        1,
        "200",
        None,
    )


def test_a_retry_is_due_at_the_time_given_and_a_failure_is_listed_and_retried(notifications):
    create(notifications, [webhook()])
    later = NOW + timedelta(minutes=5)
    assert attempt(notifications, "evt_1.sub_a", "w1:evt_1.sub_a", 1, "retry", next_at=later)
    assert notifications.claim_due(later - timedelta(seconds=1), LEASE_MS, 10, "w2") == []
    assert notifications.claim_due(later, LEASE_MS, 10, "w2") == [("evt_1.sub_a", "sub_a")]
    assert attempt(notifications, "evt_1.sub_a", "w2:evt_1.sub_a", 2, FAILED, now=later)
    [failed] = notifications.deliveries(failed_only=True)
    assert (failed.id, failed.status, failed.attempts) == ("evt_1.sub_a", FAILED, 2)
    assert notifications.claim_due(later + timedelta(days=1), LEASE_MS, 10, "w3") == []
    assert notifications.retry("evt_1.sub_a", later) is True
    assert notifications.retry("evt_1.sub_a", later) is False
    assert notifications.deliveries(failed_only=True) == []
    assert notifications.claim_due(later, LEASE_MS, 10, "w3") == [("evt_1.sub_a", "sub_a")]
    assert notifications.begin_attempt("evt_1.sub_a", "w3:evt_1.sub_a", later, LEASE_MS) == 0
    assert '"evt_1"' in notifications.get_delivery("evt_1.sub_a").event  # body kept for it


def test_the_event_body_goes_with_the_last_delivery_that_needs_it(notifications):
    create(notifications, [webhook("sub_a"), webhook("sub_b")])
    assert attempt(notifications, "evt_1.sub_a", "w1:evt_1.sub_a", 1, CANCELLED)
    assert '"evt_1"' in notifications.get_delivery("evt_1.sub_b").event
    assert attempt(notifications, "evt_1.sub_b", "w1:evt_1.sub_b", 1, DELIVERED)
    assert notifications.get_delivery("evt_1.sub_b").event == ""


# ---- tidying ---------------------------------------------------------------------------------


def test_tidy_forgets_failed_deliveries_after_30_days_and_keeps_younger_ones(notifications):
    create(notifications, [webhook("sub_a"), webhook("sub_b")])
    assert attempt(notifications, "evt_1.sub_a", "w1:evt_1.sub_a", 1, FAILED)
    assert attempt(
        notifications, "evt_1.sub_b", "w1:evt_1.sub_b", 1, FAILED, now=NOW + timedelta(days=10)
    )
    notifications.ensure_dispatch_group()
    notifications.tidy(NOW + timedelta(days=31))
    assert notifications.get_delivery("evt_1.sub_a") is None
    assert [d.id for d in notifications.deliveries(failed_only=True)] == ["evt_1.sub_b"]
    assert '"evt_1"' in notifications.get_delivery("evt_1.sub_b").event


def test_tidy_trims_the_outbox_up_to_the_first_entry_not_yet_dispatched(store, notifications):
    notifications.ensure_dispatch_group()
    emit(store, event("evt_1"), event("evt_2"), event("evt_3"))
    first, second = notifications.read_outbox("c1", 2, 1)
    notifications.ack_outbox([first.entry_id])
    # entry ids carry the wall clock (a Redis stream's do): two days on, all are old enough
    two_days_on = datetime.now(UTC) + timedelta(days=2)
    notifications.tidy(two_days_on)
    assert [e["id"] for e in store.events.outbox()] == ["evt_2", "evt_3"]
    notifications.ack_outbox([second.entry_id])
    notifications.ack_outbox([e.entry_id for e in notifications.read_outbox("c1", 10, 1)])
    notifications.tidy(NOW)  # too early for anything
    assert len(store.events.outbox()) == 2
    notifications.tidy(two_days_on)
    assert store.events.outbox() == []


def test_the_in_memory_store_has_each_operation_of_the_protocol_with_its_parameters():
    operations = [
        name
        for name, _ in inspect.getmembers(NotificationStore, inspect.isfunction)
        if not name.startswith("_")
    ]
    for name in operations:
        wanted = inspect.signature(getattr(NotificationStore, name)).parameters
        offered = inspect.signature(getattr(InMemoryNotificationStore, name)).parameters
        assert list(offered) == list(wanted), name

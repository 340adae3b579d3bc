"""The real dispatcher and deliverer over the in-memory stores: an applied decision's outgoing
event becomes a delivery and reaches a real webhook receiver, retried after a failure, as it
does over Redis (test_notifications.py)."""

from __future__ import annotations

import json
from datetime import timedelta

from tests.helpers import FIXTURE_NOW
from worker.config import NotifySettings
from worker.crypto.sealing import Keyring
from worker.notify.deliver import Deliverer
from worker.notify.dispatcher import Dispatcher, delivery_id
from worker.notify.records import DELIVERED, PENDING
from worker.notify.subscriptions import WEBHOOK, Subscription, generate_secret
from worker.rules.decision import Decision
from worker.store.memory import InMemoryStore
from worker.store.memory_notify import InMemoryNotificationStore

EVENT = {
    "specversion": "1.0",
    "id": "evt_memory_1",
    "source": "tokenwarden",
    "type": "tokenwarden.token.replacement_required",
    "data": {"server": "Lab"},
}


def test_an_outgoing_event_reaches_a_webhook_through_the_in_memory_stores(settings, receiver):
    keyring = Keyring.from_text(settings.master_key, where="the test settings")
    store = InMemoryStore(lambda: keyring)
    notifications = InMemoryNotificationStore(store, lambda: keyring)
    now = [FIXTURE_NOW]
    deliverer = Deliverer(notifications, NotifySettings(), lambda: now[0])
    outcomes: list[str | None] = []
    dispatcher = Dispatcher(
        notifications,
        lambda: now[0],
        lambda d, lease, _: outcomes.append(deliverer.attempt(d, lease)),
    )
    subscription = Subscription("sub_1", WEBHOOK, receiver.url, ("tokenwarden.",), now[0])
    notifications.add_subscription(subscription, generate_secret())
    receiver.then(503)
    # Given a decision that sends one event, applied by the in-memory event store
    store.events.apply(Decision(now=now[0], outgoing=[EVENT]))
    # When the dispatcher reads the outbox: the first attempt fails and is retried later
    assert dispatcher.dispatch_new(block_ms=1) == 1
    assert outcomes == ["retry"]
    ident = delivery_id(EVENT["id"], "sub_1")
    assert notifications.get_delivery(ident).status == PENDING
    assert dispatcher.pump_due() == 0  # not due yet
    now[0] += timedelta(days=1)
    assert dispatcher.pump_due() == 1
    # Then the second attempt delivers the same body
    assert outcomes == ["retry", "delivered"]
    assert notifications.get_delivery(ident).status == DELIVERED
    received = receiver.wait_for(2)
    assert [json.loads(r.body)["id"] for r in received] == [EVENT["id"], EVENT["id"]]
    # signed with the secret the store sealed and opened back
    assert {r.headers.get("webhook-id") for r in received} == {EVENT["id"]}
    assert all(r.headers.get("webhook-signature", "").startswith("v1,") for r in received)

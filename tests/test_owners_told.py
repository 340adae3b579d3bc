"""The owners a server's rotation policy names are told about its events: named in every
outgoing event's data (`owners`, stamped at delivery), and sent each event by e-mail when SMTP
is set. Through the real event pipeline, the real dispatcher and deliverer, on each store (the
Redis one on the test Redis, and the in-memory one), with a real webhook receiver and a real
SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from events import catalog
from events.cloudevent import new_event
from scheduler.scan import Scanner
from tests.helpers import FIXTURE_NOW, install_on
from tests.smtp_inbox import running_inbox
from worker import registry
from worker.config import NotifySettings
from worker.handling import EventHandler
from worker.notify.deliver import Deliverer
from worker.notify.dispatcher import Dispatcher, SubscriptionSlots
from worker.notify.email import OWNER_NOTE
from worker.notify.owners import owner_subscription_id
from worker.notify.subscriptions import EMAIL, WEBHOOK, Subscription, generate_secret
from worker.policies import org_target, server_target, set_policy
from worker.rules.decision import Decision
from worker.rules.policy import PolicyLayer
from worker.services import notifications as notification_service

NOW = FIXTURE_NOW
LATER = NOW + timedelta(hours=1)
USER = "teacher@school.example"
ALICE, BOB, CAROL = "Alice@School.example", "bob@school.example", "carol@school.example"


@pytest.fixture
def inbox():
    with running_inbox("tw@school.example") as box:
        yield box


class Delivering:
    """The delivery loop's dispatcher and deliverer, with each delivery attempted as it is
    handed out (as the loop's threads do), on a clock the test moves."""

    def __init__(
        self, notifications, smtp, *, consumer=None, slots=None, attempt=True, crash=False
    ):
        self.now = LATER
        settings = NotifySettings(
            webhook_timeout_s=5, retry_schedule_s=(60,), retry_jitter=0, smtp=smtp
        )
        self.deliverer = Deliverer(notifications, settings, lambda: self.now)
        self.handed: list[tuple[str, str, str]] = []
        self.outcomes: list[str | None] = []
        self._attempt_now = attempt
        self._crash = crash
        self.dispatcher = Dispatcher(
            notifications,
            lambda: self.now,
            self._send,
            consumer=consumer,
            slots=slots,
            mail_owners=self.deliverer.mails_owners,
        )

    def _send(self, delivery: str, lease: str, subscription_id: str) -> None:
        if self._crash:  # the process dies as it hands out the first delivery
            raise SystemExit("the worker died")
        self.handed.append((delivery, lease, subscription_id))
        if self._attempt_now:
            self.outcomes.append(self.deliverer.attempt(delivery, lease))


def password_changed(store, event_id="hr-1"):
    event = new_event(
        catalog.PASSWORD_CHANGED, {"user": USER}, source="urn:test", time=LATER, event_id=event_id
    ).to_wire()
    [outcome] = EventHandler(store).handle_batch([event], received_at=LATER, now=LATER)
    assert outcome.outcome == "applied"


@pytest.fixture
def estate(store, notifications, receiver):
    """Lab (owners Alice and Bob, its own) and Gym (Carol, its organization's), both in
    Springfield, each with a token downloaded by USER; a webhook subscription for everything.
    The policy changes' own events are delivered and forgotten before the test begins."""
    lab, _ = registry.add_server(store, "Lab", org="Springfield", now=NOW)
    registry.add_server(store, "Gym", org="Springfield", now=NOW)
    for name in ("Lab", "Gym"):
        install_on(store, name, USER, now=NOW, downloaded_at=NOW - timedelta(days=1))
    set_policy(store, server_target(lab), PolicyLayer(owners=(ALICE, BOB)), clear=False, now=NOW)
    org = org_target([lab], "springfield")
    set_policy(store, org, PolicyLayer(owners=(CAROL,)), clear=False, now=NOW)
    hook = Subscription("sub_hook", WEBHOOK, receiver.url, ("tokenwarden.",), NOW)
    notifications.add_subscription(hook, generate_secret())
    Delivering(notifications, None).dispatcher.dispatch_new(block_ms=1)
    receiver.received.clear()
    return store


def replacement_deliveries(notifications):
    found = notifications.deliveries(limit=100)
    return [d for d in found if d.event_type == catalog.REPLACEMENT_REQUIRED]


def bodies(receiver, event_type=catalog.REPLACEMENT_REQUIRED) -> dict[str, dict]:
    """The webhook bodies received of a type, by server."""
    received = [json.loads(r.body) for r in receiver.received]
    return {b["data"]["server"]: b for b in received if b["type"] == event_type}


def test_every_event_about_a_server_names_its_owners_and_each_owner_is_mailed_once(
    estate, notifications, receiver, inbox
):
    # When the downloader's password changes and the delivery loop runs, with SMTP set
    password_changed(estate)
    delivering = Delivering(notifications, inbox.smtp)
    assert delivering.dispatcher.dispatch_new(block_ms=1) == 2 + 3
    assert set(delivering.outcomes) == {"delivered"}
    # Then the webhook body names each server's owners in force: its own, or its organization's
    found = bodies(receiver)
    assert found["Lab"]["data"]["owners"] == [ALICE, BOB]
    assert found["Gym"]["data"]["owners"] == [CAROL]
    # And each owner got exactly one e-mail, about their own server, saying why they get it
    [alice], [bob], [carol] = inbox.to(ALICE), inbox.to(BOB), inbox.to(CAROL)
    assert "Lab" in alice["Subject"] and "Lab" in bob["Subject"] and "Gym" in carol["Subject"]
    text = alice.get_body(preferencelist=("plain",)).get_content()
    assert 'The server token of the MDM server "Lab" (Springfield) must be replaced.' in text
    assert OWNER_NOTE in " ".join(text.split())
    assert len(inbox.messages) == 3
    # And `deliveries list` shows each owner's delivery with its address
    listed = notification_service.deliveries(notifications, failed_only=False, limit=50)
    owners = {d["target"]: d for d in listed if d["owner"]}
    assert set(owners) == {ALICE, BOB, CAROL}
    assert owners[ALICE]["subscription"] == owner_subscription_id("alice@school.example")
    assert {d["status"] for d in listed} == {"delivered"}


def test_a_redispatch_after_a_crash_mails_no_owner_twice(estate, notifications, receiver, inbox):
    # Given a dispatcher that made the first event's deliveries (the webhook's and the
    # owners'), then died before sending them or acknowledging its outbox entries
    password_changed(estate)
    crashing = Delivering(notifications, inbox.smtp, consumer="dead", crash=True)
    with pytest.raises(SystemExit):
        crashing.dispatcher.dispatch_new(block_ms=1)
    made = len(replacement_deliveries(notifications))
    assert made in (2, 3) and inbox.messages == []
    # When another dispatcher takes the entries over: it makes and sends only what is missing
    alive = Delivering(notifications, inbox.smtp, consumer="alive")
    assert alive.dispatcher.sweep_outbox(min_idle_ms=0) == 5 - made
    assert len(inbox.messages) == 5 - made - 1
    # and, when their leases run out, the deliveries the dead one held
    alive.now = LATER + timedelta(minutes=1)
    assert alive.dispatcher.pump_due() == made
    # Then each owner got the event once, and the receiver once per server
    assert sorted(m["To"] for m in inbox.messages) == sorted([ALICE, BOB, CAROL])
    assert sorted(bodies(receiver)) == ["Gym", "Lab"] and len(receiver.received) == 2
    # and nothing is left to send again
    assert alive.dispatcher.sweep_outbox(min_idle_ms=0) == 0
    alive.now += timedelta(hours=1)
    assert alive.dispatcher.pump_due() == 0
    assert len(inbox.messages) == 3


def test_without_smtp_the_owners_are_named_but_not_mailed(estate, notifications, receiver, inbox):
    password_changed(estate)
    delivering = Delivering(notifications, None)
    assert delivering.dispatcher.dispatch_new(block_ms=1) == 2
    assert bodies(receiver)["Lab"]["data"]["owners"] == [ALICE, BOB]
    assert inbox.messages == []
    listed = notifications.deliveries(limit=50)
    assert [d for d in listed if d.owner or d.subscription_id.startswith("own_")] == []


def test_an_owner_subscribed_by_email_is_sent_the_event_once(estate, notifications, inbox):
    # Given Alice also subscribed by e-mail for her server (her address written otherwise)
    mine = Subscription(
        "sub_alice", EMAIL, "alice@SCHOOL.example", ("tokenwarden.token.",), NOW, server="lab"
    )
    notifications.add_subscription(mine, None)
    password_changed(estate)
    Delivering(notifications, inbox.smtp).dispatcher.dispatch_new(block_ms=1)
    # Then she gets it once, through her subscription; Bob, only an owner, once as an owner
    [hers] = [m for m in inbox.messages if m["To"].casefold() == ALICE.casefold()]
    assert hers["To"] == "alice@SCHOOL.example"
    assert OWNER_NOTE not in " ".join(hers.get_body().get_content().split())
    [bob] = inbox.to(BOB)
    assert OWNER_NOTE in " ".join(bob.get_body().get_content().split())


def test_an_event_whose_server_is_gone_names_nobody_whatever_it_held(
    store, notifications, receiver, inbox
):
    hook = Subscription("sub_hook", WEBHOOK, receiver.url, ("tokenwarden.",), NOW)
    notifications.add_subscription(hook, generate_secret())
    event = {
        "specversion": "1.0",
        "id": "evt_gone",
        "source": "urn:tokenwarden:worker",
        "type": catalog.REPLACED,
        "data": {"server": "Old", "server_id": "srv_gone", "owners": ["mallory@evil.example"]},
    }
    store.events.apply(Decision(now=NOW, outgoing=[event]))
    Delivering(notifications, inbox.smtp).dispatcher.dispatch_new(block_ms=1)
    [body] = [json.loads(r.body) for r in receiver.received]
    assert body["data"]["owners"] == []
    assert inbox.messages == []


def test_an_owner_handed_over_before_the_retry_is_still_told(estate, notifications, inbox):
    """What happened while they owned the server is theirs to hear: a handover between the
    dispatch and the retry must not lose the notice (nobody else was told it)."""
    # Given the SMTP server refuses the first message, to whichever owner it comes first
    inbox.refuse = 1
    password_changed(estate)
    delivering = Delivering(notifications, inbox.smtp)
    delivering.dispatcher.dispatch_new(block_ms=1)
    assert sorted(delivering.outcomes) == ["delivered"] * 4 + ["retry"]
    [waiting] = [d for d in notifications.deliveries(limit=50) if d.status == "pending"]
    [kept] = {ALICE, BOB, CAROL} - {m["To"] for m in inbox.messages}
    assert waiting.owner == kept
    # When that owner is taken off every policy before the retry
    lab = registry.resolve_server(estate, "Lab")
    set_policy(estate, server_target(lab), PolicyLayer(owners=()), clear=False, now=LATER)
    org = org_target([lab], "springfield")
    set_policy(estate, org, PolicyLayer(owners=()), clear=False, now=LATER)
    delivering.now = LATER + timedelta(minutes=5)
    assert delivering.dispatcher.pump_due() == 1
    # Then the retry still goes to them, once
    assert delivering.outcomes[-1] == "delivered"
    assert len(inbox.to(kept)) == 1


def test_a_policy_change_tells_the_owners_before_and_after_it(estate, notifications, inbox):
    lab = registry.resolve_server(estate, "Lab")
    org = org_target([lab], "springfield")
    # An organization's change names no server: its owners before and after are told
    set_policy(estate, org, PolicyLayer(owners=("dave@school.example",)), clear=False, now=LATER)
    delivering = Delivering(notifications, inbox.smtp)
    delivering.dispatcher.dispatch_new(block_ms=1)
    told = sorted(m["To"] for m in inbox.messages)
    assert told == [CAROL, "dave@school.example"]


def test_a_failed_owner_delivery_is_retried_by_hand(estate, notifications, inbox):
    # Given an owner delivery that failed for good (its one retry refused too)
    inbox.refuse = 1
    password_changed(estate)
    delivering = Delivering(notifications, inbox.smtp)
    delivering.dispatcher.dispatch_new(block_ms=1)
    inbox.refuse = 1
    delivering.now += timedelta(minutes=5)
    assert delivering.dispatcher.pump_due() == 1
    [failed] = notifications.deliveries(failed_only=True)
    assert failed.owner
    # When it is retried (`deliveries retry`) and the pump runs
    notification_service.retry_delivery(notifications, failed.id, delivering.now)
    assert delivering.dispatcher.pump_due() == 1
    # Then it reaches the owner once
    assert delivering.outcomes[-1] == "delivered"
    assert len(inbox.to(failed.owner)) == 1


def test_an_owners_deliveries_beyond_their_attempts_wait_parked(estate, notifications, inbox):
    # Given Carol owns both servers (the organization's layer; Lab's own names nobody)
    lab = registry.resolve_server(estate, "Lab")
    set_policy(estate, server_target(lab), PolicyLayer(), clear=True, now=NOW)
    Delivering(notifications, None).dispatcher.dispatch_new(block_ms=1)
    # When both tokens' replacements go out, with one attempt per subscription at a time
    password_changed(estate)
    delivering = Delivering(notifications, inbox.smtp, slots=SubscriptionSlots(1), attempt=False)
    assert delivering.dispatcher.dispatch_new(block_ms=1) == 4
    carol = owner_subscription_id(CAROL)
    # Then one of Carol's was handed out and the other parked
    [(first, lease, _)] = [h for h in delivering.handed if h[2] == carol]
    assert delivering.deliverer.attempt(first, lease) == "delivered"
    parked = delivering.dispatcher.claim_next_parked(carol)
    assert parked is not None and parked[0] != first
    assert delivering.deliverer.attempt(*parked) == "delivered"
    assert delivering.dispatcher.claim_next_parked(carol) is None
    assert sorted(m["Subject"] for m in inbox.to(CAROL)) == [
        "Replace the server token of Gym (immediate)",
        "Replace the server token of Lab (immediate)",
    ]


def test_a_scheduled_renewal_tells_the_owners_why_and_what_to_upload_first(
    estate, notifications, inbox
):
    # Given Lab's policy rotates the key at each renewal
    lab = registry.resolve_server(estate, "Lab")
    set_policy(estate, server_target(lab), PolicyLayer(rotate_key="always"), clear=False, now=NOW)
    # When the scan reaches Lab's renewal (30 days before its expiry)
    token = registry.resolve_server(estate, "Lab").token_id
    expires = estate.get_token(token).expires_at
    Scanner(estate, (1,)).scan(expires - timedelta(days=29))
    delivering = Delivering(notifications, inbox.smtp)
    delivering.dispatcher.dispatch_new(block_ms=1)
    # Then each of its owners is told the policy renews it, and to upload the new key first
    [message] = [m for m in inbox.to(BOB) if "Lab" in m["Subject"] and "Replace" in m["Subject"]]
    text = " ".join(message.get_body(preferencelist=("plain",)).get_content().split())
    assert (
        f"its rotation policy renews it 30 days before it expires (on {expires:%Y-%m-%d})" in text
    )
    assert "Before downloading anything, choose Edit and upload the attached" in text
    assert "By when: before" in text
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == "Lab.pem"
    assert OWNER_NOTE in text

"""What owners are told, as values: the synthetic owner subscriptions and the `owners` stamped
into outgoing events (worker/notify/owners.py), and the e-mail texts of a scheduled renewal, a
policy change and an owner's copy (worker/notify/email.py, worker/notify/policy_email.py)."""

from __future__ import annotations

import pytest

from events import catalog
from tests.helpers import FIXTURE_NOW
from worker.notify.email import OWNER_NOTE, compose
from worker.notify.owners import (
    owner_named,
    owner_subscription_id,
    owner_subscriptions,
    with_owners,
)
from worker.notify.subscriptions import DISABLED, EMAIL, Subscription

NOW = FIXTURE_NOW


def event(event_type: str, **data) -> dict:
    return {"id": "evt_1", "type": event_type, "data": data}


def text_of(message) -> str:
    return " ".join(message.get_body(preferencelist=("plain",)).get_content().split())


def test_an_owners_subscription_id_is_the_same_however_the_address_is_written():
    assert owner_subscription_id("Alice@School.example") == owner_subscription_id(
        "alice@school.EXAMPLE"
    )
    assert owner_subscription_id("alice@school.example") != owner_subscription_id(
        "bob@school.example"
    )
    assert (
        owner_subscription_id("a@b.c").startswith("own_") and len(owner_subscription_id("")) == 20
    )
    alice = owner_subscription_id("alice@school.example")
    assert owner_named(["x@y.z", "Alice@School.example"], alice) == "Alice@School.example"
    assert owner_named(["x@y.z"], alice) is None


@pytest.mark.parametrize(
    ("data", "owners"),
    [
        ({"server": "Lab", "server_id": "srv_1"}, ["a@x.org"]),
        ({"server": "Lab", "server_id": "srv_gone"}, []),
        ({"server_id": "srv_1", "owners": ["mallory@evil.example"]}, ["a@x.org"]),
        ({"scope": "org", "server_id": None, "org": "Springfield"}, []),
    ],
)
def test_an_event_about_a_server_is_stamped_with_the_owners_read(data, owners):
    stamped = with_owners(event(catalog.REPLACED, **data), {"srv_1": ("a@x.org",)})
    assert stamped["data"]["owners"] == owners


def test_an_event_about_no_server_is_left_as_it_is():
    source = event(catalog.SOURCE_FAILING, source="okta")
    assert with_owners(source, {"srv_1": ("a@x.org",)}) is source


def test_an_owner_with_an_active_email_subscription_wanting_the_event_gets_no_second_one():
    ev = event(catalog.REPLACED, server="Lab", server_id="srv_1")
    owners = ("Alice@x.org", "bob@x.org", "carol@x.org", "dan@x.org")
    subscriptions = [
        Subscription("s1", EMAIL, "alice@X.org", ("tokenwarden.",), NOW),
        Subscription("s2", EMAIL, "bob@x.org", ("tokenwarden.",), NOW, server="Gym"),
        Subscription("s3", EMAIL, "carol@x.org", ("tokenwarden.",), NOW, status=DISABLED),
        Subscription("s4", EMAIL, "dan@x.org", (catalog.REPLACEMENT_REQUIRED,), NOW),
    ]
    made = owner_subscriptions(ev, owners, subscriptions, NOW)
    assert [s.target for s in made] == ["bob@x.org", "carol@x.org", "dan@x.org"]
    assert all(s.kind == EMAIL and s.id == owner_subscription_id(s.target) for s in made)
    assert all(s.wants(ev) for s in made)


RENEWAL = dict(
    server="Lab",
    org="Springfield",
    server_id="srv_1",
    downloaded_by="admin@x.org",
    downloaded_at="2026-03-02T09:30:00Z",
    expires_at="2027-03-02T09:30:00Z",
    urgency="planned",
    reasons=[
        {
            "type": catalog.SCHEDULED_RENEWAL,
            "time": "2027-01-31T09:30:00Z",
            "count": 1,
            "last": {"time": "2027-01-31T09:30:00Z"},
        }
    ],
)


@pytest.mark.parametrize(
    "renewal",
    [
        {"due_at": "x", "renew_before_days": 30, "rotate_key": "never", "new_key_staged": False},
        None,  # a later event of the same replacement: the days are read from its due time
    ],
)
def test_a_scheduled_renewal_says_its_policy_renews_it_before_it_expires(renewal):
    data = {**RENEWAL, "certificate": None, "renewal": renewal}
    text = text_of(compose(event(catalog.REPLACEMENT_REQUIRED, **data), "tw@x", "a@x.org"))
    assert "Why: its rotation policy renews it 30 days before it expires (on 2027-03-02)." in text
    assert "By when: before 2027-03-02T09:30:00Z." in text
    assert "upload the attached" not in text


def test_a_renewal_with_a_staged_key_says_to_upload_the_certificate_before_downloading():
    renewal = {"renew_before_days": 30, "rotate_key": "always", "new_key_staged": True}
    data = {**RENEWAL, "certificate": "-----BEGIN CERTIFICATE-----\n", "renewal": renewal}
    message = compose(event(catalog.REPLACEMENT_REQUIRED, **data), "tw@x", "a@x.org")
    text = text_of(message)
    upload = text.index("3. Before downloading anything, choose Edit and upload the attached")
    assert upload < text.index("4. Choose Download Token")
    assert "a new key pair at each renewal" in text
    assert [a.get_filename() for a in message.iter_attachments()] == ["Lab.pem"]


def test_an_owners_copy_says_why_they_get_it_and_nobody_elses_does():
    ev = event(catalog.REPLACED, server="Lab", server_id="srv_1", new_expires_at="2028-01-01")
    to_owner = compose(ev, "tw@x", "a@x.org", owner=True)
    to_subscriber = compose(ev, "tw@x", "a@x.org")
    assert OWNER_NOTE in text_of(to_owner)
    assert text_of(to_owner).endswith(f"{OWNER_NOTE} -- tokenwarden")
    assert OWNER_NOTE not in text_of(to_subscriber)
    assert to_owner["Subject"] == to_subscriber["Subject"] == "Server token of Lab replaced"


def policy_changed(**data) -> dict:
    base = {
        "scope": "server",
        "server": "Lab",
        "server_id": "srv_1",
        "org": "Springfield",
        "policy": {"renew_before_days": 45, "rotate_key": None, "owners": ["a@x.org"]},
        "previous": {"renew_before_days": None, "rotate_key": None, "owners": ["a@x.org"]},
        "cleared": False,
        "changed_by": "urn:tokenwarden:cli",
    }
    return event(catalog.POLICY_CHANGED, **{**base, **data})


def test_a_policy_change_is_summed_up_in_plain_words():
    message = compose(policy_changed(), "tw@x", "a@x.org", owner=True)
    assert message["Subject"] == "Rotation policy of Lab changed"
    body = message.get_body(preferencelist=("plain",)).get_content()
    assert body.startswith(
        'The rotation policy of the MDM server "Lab" (Springfield) was changed by '
        "urn:tokenwarden:cli.\n\n"
        "- renewal: 45 days before expiry (was: inherited)\n"
        "- key pair: inherited (unchanged)\n"
        "- owners: a@x.org (unchanged)\n\n"
        "A value shown as inherited comes from its organization's policy, then the global one."
    )
    assert OWNER_NOTE in " ".join(body.split())


@pytest.mark.parametrize(
    ("data", "subject", "opening"),
    [
        (
            {"scope": "org", "server": None, "server_id": None, "cleared": True},
            "Rotation policy of organization Springfield cleared",
            'The rotation policy of the organization "Springfield" (the default of its '
            "servers) was cleared",
        ),
        (
            {"scope": "global", "server": None, "server_id": None, "org": None},
            "Global rotation policy changed",
            "The rotation policy of tokenwarden (the default of every server) was changed",
        ),
    ],
)
def test_an_organizations_or_the_global_policy_change_says_whose(data, subject, opening):
    now = {"renew_before_days": None, "rotate_key": "always", "owners": []}
    message = compose(policy_changed(policy=now, **data), "tw@x", "a@x.org")
    assert message["Subject"] == subject
    text = text_of(message)
    assert text.startswith(opening)
    assert "- key pair: a new one at each renewal (was: inherited)" in text
    assert "- owners: nobody (was: a@x.org)" in text

"""Rotation as a policy (issue 16), on both stores, with an injected clock: a server renewed
`--renew-before 45 --rotate-key always` gets its replacement 45 days before expiry with the
reason scheduled_renewal and a new key staged in the same step; the notice carries the new
certificate; installing a token for the new key closes the replacement and deletes the old
private key. Policies are layered (server, organization, global) and apply at the next scan."""

from __future__ import annotations

from datetime import timedelta

import pytest

from events import catalog
from events.cloudevent import new_event
from scheduler.expiry import decide_scan
from scheduler.scan import Scanner
from tests.helpers import FIXTURE_NOW, install_on
from tests.tokenfiles import credentials, encrypt_to
from worker import installing, policies, registry
from worker.config import DEFAULT_THRESHOLDS
from worker.errors import InvalidInput, NotFound
from worker.handling import EventHandler
from worker.records import KEY_CURRENT, KEY_RETIRED, KEY_STAGED
from worker.rules.decision import Decision
from worker.rules.policy import PolicyLayer
from worker.rules.renewal import KEY_WAIT
from worker.rules.replacement import Cause, ReplacementNeeded
from worker.rules.replacing import replace_token

NOW = FIXTURE_NOW
OWNER = "lab-owner@school.example"


def _server_with_token(store, name="Lab", org=None, days=300, user="admin@school.example"):
    registry.add_server(store, name, org=org, now=NOW - timedelta(days=70))
    install_on(store, name, user, now=NOW - timedelta(days=1), days=days + 1)
    server = registry.resolve_server(store, name, org)
    return server, store.get_token(server.token_id)


def _set(store, server, **layer):
    return policies.set_policy(
        store, policies.server_target(server), PolicyLayer(**layer), clear=False, now=NOW
    )


def _sent(store, event_type):
    return [e for e in store.events.outbox() if e["type"] == event_type]


def test_renew_before_45_with_key_rotation_from_opening_to_install(store):
    server, token = _server_with_token(store)
    _set(store, server, renew_before_days=45, rotate_key="always", owners=(OWNER,))
    scanner = Scanner(store, DEFAULT_THRESHOLDS)
    due_at = token.expires_at - timedelta(days=45)

    scanner.scan(due_at - timedelta(seconds=1))
    assert store.events.replacement(token.id) is None  # the 60-day warning only informs
    assert _sent(store, catalog.EXPIRY_APPROACHING)
    assert registry.resolve_server(store, "Lab").staged_key_id is None

    scanner.scan(due_at)
    server = registry.resolve_server(store, "Lab")
    replacement = store.events.replacement(token.id)
    assert replacement is not None and replacement.status == "open"
    assert [r["type"] for r in replacement.reasons] == [catalog.SCHEDULED_RENEWAL]
    staged = store.get_key(server.staged_key_id)
    assert staged.state == KEY_STAGED
    [notice] = _sent(store, catalog.REPLACEMENT_REQUIRED)
    assert notice["data"]["certificate"] == staged.cert_pem
    assert notice["data"]["renewal"]["renew_before_days"] == 45
    assert notice["data"]["renewal"]["new_key_staged"] is True

    scanner.scan(due_at + timedelta(hours=1))  # a second scan: nothing new, no second key
    assert registry.resolve_server(store, "Lab").staged_key_id == staged.id
    assert len(_sent(store, catalog.REPLACEMENT_REQUIRED)) == 1
    assert len(store.keys_of(server.id)) == 2

    old_key = store.get_key(server.current_key_id)
    result = install_on(store, "Lab", "admin@school.example", now=due_at + timedelta(days=2))
    assert result.promoted_key.id == staged.id
    assert store.events.replacement(token.id).status == "resolved"
    assert store.get_key(old_key.id).state == KEY_RETIRED
    with pytest.raises(NotFound):
        store.open_key_material(store.get_key(old_key.id))
    assert store.get_key(staged.id).state == KEY_CURRENT


def test_without_rotation_the_renewal_opens_with_the_key_kept(store):
    server, token = _server_with_token(store)
    _set(store, server, renew_before_days=45)
    Scanner(store, DEFAULT_THRESHOLDS).scan(token.expires_at - timedelta(days=44))
    replacement = store.events.replacement(token.id)
    assert [r["type"] for r in replacement.reasons] == [catalog.SCHEDULED_RENEWAL]
    assert registry.resolve_server(store, "Lab").staged_key_id is None
    [notice] = _sent(store, catalog.REPLACEMENT_REQUIRED)
    assert notice["data"]["certificate"] is None


def test_the_default_renews_30_days_before_expiry(store):
    _, token = _server_with_token(store)
    scanner = Scanner(store, DEFAULT_THRESHOLDS)
    scanner.scan(token.expires_at - timedelta(days=31))
    assert store.events.replacement(token.id) is None
    scanner.scan(token.expires_at - timedelta(days=30))
    assert store.events.replacement(token.id).status == "open"


def test_an_organization_default_reaches_its_servers_at_the_next_scan(store):
    server, token = _server_with_token(store, org="North")
    scanner = Scanner(store, DEFAULT_THRESHOLDS)
    scanner.scan(token.expires_at - timedelta(days=100))  # next check: the 60-day threshold
    target = policies.org_target([server], "north")
    policies.set_policy(store, target, PolicyLayer(renew_before_days=90), clear=False, now=NOW)
    scanner.scan(token.expires_at - timedelta(days=89))
    assert [r["type"] for r in store.events.replacement(token.id).reasons] == [
        catalog.SCHEDULED_RENEWAL
    ]


def test_a_server_override_wins_over_its_organization_and_the_global_default(store):
    server, _ = _server_with_token(store, org="North")
    layer = PolicyLayer(renew_before_days=60, rotate_key="always", owners=("org@x.example",))
    policies.set_policy(store, policies.GLOBAL_TARGET, layer, clear=False, now=NOW)
    org_layer = PolicyLayer(renew_before_days=50)
    target = policies.org_target([server], "North")
    policies.set_policy(store, target, org_layer, clear=False, now=NOW)
    _set(store, server, owners=(OWNER,))
    in_force = policies.in_force(store, registry.resolve_server(store, "Lab", "North"))
    assert (in_force.renew_before_days, in_force.rotate_key, in_force.owners) == (
        50,
        "always",
        (OWNER,),
    )
    assert in_force.sources == {
        "renew_before_days": "org",
        "rotate_key": "global",
        "owners": "server",
    }
    policies.set_policy(store, policies.server_target(server), PolicyLayer(), clear=True, now=NOW)
    cleared = policies.in_force(store, registry.resolve_server(store, "Lab", "North"))
    assert cleared.owners == ("org@x.example",)


def test_a_policy_change_is_audited_and_announced(store):
    server, _ = _server_with_token(store)
    _set(store, server, renew_before_days=45)
    [event] = _sent(store, catalog.POLICY_CHANGED)
    assert event["data"]["server"] == "Lab"
    assert event["data"]["policy"]["renew_before_days"] == 45
    assert event["data"]["previous"]["renew_before_days"] is None
    assert any(entry.get("kind") == "policy" for entry in store.events.audit())
    again = _set(store, server, renew_before_days=45)
    assert not again.changed
    assert len(_sent(store, catalog.POLICY_CHANGED)) == 1  # the same values: nothing written


def test_a_password_change_on_a_rotating_server_stages_its_key(store):
    server, token = _server_with_token(store, user="leaver@school.example")
    _set(store, server, rotate_key="always")
    event = new_event(
        catalog.PASSWORD_CHANGED,
        {"user": "leaver@school.example"},
        source="urn:test:hr",
        time=NOW,
        event_id="pw-1",
    )
    [outcome] = EventHandler(store).handle_batch([event.to_wire()], received_at=NOW, now=NOW)
    assert outcome.outcome == "applied"
    server = registry.resolve_server(store, "Lab")
    staged = store.get_key(server.staged_key_id)
    [notice] = _sent(store, catalog.REPLACEMENT_REQUIRED)
    assert notice["data"]["certificate"] == staged.cert_pem
    assert [r["type"] for r in store.events.replacement(token.id).reasons] == [
        catalog.PASSWORD_CHANGED
    ]


def test_a_scan_makes_a_bounded_number_of_keys_the_rest_wait(store):
    tokens = [_server_with_token(store, name=f"S{i}")[1] for i in range(3)]
    global_layer = PolicyLayer(rotate_key="always")
    policies.set_policy(store, policies.GLOBAL_TARGET, global_layer, clear=False, now=NOW)
    when = max(t.expires_at for t in tokens) - timedelta(days=29)
    Scanner(store, DEFAULT_THRESHOLDS, max_keys=1).scan(when)
    staged = [registry.resolve_server(store, f"S{i}").staged_key_id for i in range(3)]
    assert sum(1 for s in staged if s) == 1
    Scanner(store, DEFAULT_THRESHOLDS, max_keys=5).scan(when + KEY_WAIT)
    assert all(registry.resolve_server(store, f"S{i}").staged_key_id for i in range(3))
    assert len(_sent(store, catalog.REPLACEMENT_REQUIRED)) == 3


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (lambda: policies.check_renew_before(0), "out of range"),
        (lambda: policies.check_renew_before(400), "out of range"),
        (lambda: policies.check_owners(("not-an-address",)), "not a plain e-mail address"),
        (lambda: policies.check_owners(tuple(f"o{i}@x.example" for i in range(11))), "at most"),
    ],
)
def test_bad_policy_values_are_refused(layer, message):
    with pytest.raises(InvalidInput, match=message):
        layer()


def test_an_unknown_organization_is_refused(store):
    server, _ = _server_with_token(store, org="North")
    with pytest.raises(NotFound, match="no server is registered in organization"):
        policies.org_target([server], "Nroth")


def test_a_token_for_the_old_key_is_installed_with_a_warning(store):
    server, token = _server_with_token(store)
    _set(store, server, rotate_key="always")
    Scanner(store, DEFAULT_THRESHOLDS).scan(token.expires_at - timedelta(days=29))
    server = registry.resolve_server(store, "Lab")
    assert server.staged_key_id
    old = store.get_key(server.current_key_id)
    later = token.expires_at - timedelta(days=20)
    data = encrypt_to(old.cert_pem, credentials(later + timedelta(days=365), "CK_" + "c" * 96))
    result = installing.install_token(
        store, "Lab", data, source="t.p7m", downloaded_by="a@school.example", now=later
    )
    assert result.promoted_key is None
    assert any("rotation" in w and "keys export" in w for w in result.warnings)
    assert store.events.replacement(token.id).status == "resolved"  # the token was renewed
    assert registry.resolve_server(store, "Lab").staged_key_id == server.staged_key_id
    # but the key was not rotated: the new token's replacement is open, with the certificate
    pending = store.events.replacement(result.token.id)
    assert [r["type"] for r in pending.reasons] == [catalog.KEY_REGENERATED]
    notices = _sent(store, catalog.REPLACEMENT_REQUIRED)
    staged = store.get_key(server.staged_key_id)
    assert notices[-1]["data"]["token_id"] == result.token.id
    assert notices[-1]["data"]["certificate"] == staged.cert_pem
    done = install_on(store, "Lab", "a@school.example", now=later + timedelta(days=1), days=366)
    assert done.promoted_key.id == staged.id
    assert store.events.replacement(result.token.id).status == "resolved"


def test_an_expired_token_of_a_rotating_server_gets_its_new_key(store):
    server, token = _server_with_token(store)
    _set(store, server, rotate_key="always")
    Scanner(store, DEFAULT_THRESHOLDS, max_keys=0).scan(token.expires_at + timedelta(hours=1))
    server = registry.resolve_server(store, "Lab")
    assert server.staged_key_id  # the budget holds renewals back, never an expiry
    [notice] = _sent(store, catalog.REPLACEMENT_REQUIRED)
    assert notice["data"]["certificate"] == store.get_key(server.staged_key_id).cert_pem
    assert [r["type"] for r in store.events.replacement(token.id).reasons] == [catalog.EXPIRED]


def test_a_replacement_opened_by_the_first_warning_is_not_announced_again(store):
    """Before rotation policies the first warning opened the replacement; after an upgrade
    the renewal finds it open and tells nobody again."""
    _, token = _server_with_token(store)
    old = Decision(now=NOW)
    cause = Cause(catalog.EXPIRY_APPROACHING, "w-120", catalog.SOURCE_SCHEDULER, NOW)
    [facts] = store.scan_facts([token])
    replace_token(old, facts.replacement, ReplacementNeeded(token, cause), facts.server, NOW)
    assert store.events.apply(old).outcome == "applied"
    before = len(_sent(store, catalog.REPLACEMENT_REQUIRED))
    [facts] = store.scan_facts([token])
    decision, _ = decide_scan(facts, token.expires_at - timedelta(days=29), DEFAULT_THRESHOLDS)
    assert store.events.apply(decision).outcome == "applied"
    assert len(_sent(store, catalog.REPLACEMENT_REQUIRED)) == before
    assert store.get_token(token.id).renewal_opened is not None


def test_an_organization_layer_outlives_its_last_server_and_can_be_cleared(store):
    server, _ = _server_with_token(store, org="North")
    target = policies.org_target([server], "North")
    policies.set_policy(store, target, PolicyLayer(renew_before_days=90), clear=False, now=NOW)
    estate_servers: list = []  # the last server of North is gone
    layers = policies.stored_layers(store)
    again = policies.org_target(estate_servers, "north", layers)
    assert policies.layer_of(store, again).renew_before_days == 90
    policies.set_policy(store, again, PolicyLayer(), clear=True, now=NOW)
    with pytest.raises(NotFound):
        policies.org_target(estate_servers, "north", policies.stored_layers(store))


def test_a_policy_for_a_server_removed_meanwhile_is_not_found(store):
    server, _ = _server_with_token(store)
    store.remove_server(server)
    with pytest.raises(NotFound, match="removed"):
        _set(store, server, renew_before_days=40)


@pytest.mark.parametrize("stored", ["0", "301", "\u00b2", "-5", "x"])
def test_a_hand_edited_renew_before_out_of_range_is_ignored(stored):
    layer = PolicyLayer.from_fields({"p_renew": stored, "p_rotate": "sometimes"})
    assert layer == PolicyLayer()


def test_rotation_turned_on_after_the_renewal_opened_still_stages_the_key(store):
    _, token = _server_with_token(store)
    scanner = Scanner(store, DEFAULT_THRESHOLDS)
    scanner.scan(token.expires_at - timedelta(days=29))  # the renewal opens, the key kept
    assert store.events.replacement(token.id).status == "open"
    _set(store, registry.resolve_server(store, "Lab"), rotate_key="always")
    scanner.scan(token.expires_at - timedelta(days=28))  # the change brought its check forward
    staged = registry.resolve_server(store, "Lab").staged_key_id
    assert staged
    reasons = [r["type"] for r in store.events.replacement(token.id).reasons]
    assert reasons == [catalog.SCHEDULED_RENEWAL, catalog.KEY_REGENERATED]
    notices = _sent(store, catalog.REPLACEMENT_REQUIRED)
    assert notices[-1]["data"]["certificate"] == store.get_key(staged).cert_pem

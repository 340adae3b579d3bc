"""One contract for every Store (worker/store/protocol.py): each test runs against the
RedisStore on the test Redis and against the InMemoryStore (the `store` fixture), so the two
cannot drift. Facts are set up through the services that use the store (registry, handling,
the scan), and checked through the protocol's operations. The scan's operations are in
test_store_contract_scan.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from events import catalog
from events.cloudevent import new_event
from tests.helpers import FIXTURE_NOW, install_on
from worker import registry
from worker.errors import ConcurrentChange, Conflict, DuplicateServer, NotFound
from worker.handling import EventHandler
from worker.records import KEY_CURRENT, KEY_RETIRED, KEY_STAGED, TOKEN_SUPERSEDED, Token
from worker.rules.decision import AuditEntry, Decision
from worker.rules.events import decide_event

NOW = FIXTURE_NOW
#: When events happen, by default: after the tokens installed at NOW were downloaded.
LATER = NOW + timedelta(hours=1)
CONSUMER = "CK_" + "c" * 96


def add(store, name="Lab", org=None):
    server, _ = registry.add_server(store, name, org=org, now=NOW)
    return server


def install(store, name="Lab", user="admin@x.org", *, now=NOW, days=300, downloaded_at=None):
    return install_on(
        store, name, user, now=now, days=days, downloaded_at=downloaded_at, consumer=CONSUMER
    )


def bare_token(server, token_id, user):
    """A token record for `server`, as an install would write it (no file behind it)."""
    return Token(
        id=token_id,
        server_id=server.id,
        consumer_id="c",
        fingerprint="f",
        downloaded_by=user,
        downloaded_at=NOW,
        expires_at=NOW + timedelta(days=200),
        installed_at=NOW,
        key_id=server.current_key_id,
    )


def install_undecided(store, server, token):
    """Install `token` on the server as `server` was read, with a decision that does nothing."""
    return store.install_token(
        server,
        token,
        b"{}",
        replaces=None,
        promote_key=None,
        now=NOW,
        decide=lambda facts: Decision(now=NOW),
    )


def user_event(kind, user, *, at=LATER, event_id=None):
    return new_event(kind, {"user": user}, source="urn:test", time=at, event_id=event_id)


def handle(store, event, now=LATER):
    return EventHandler(store).handle(event, received_at=now, now=now)


def sent(store, event_type=None):
    return [e for e in store.events.outbox(limit=10_000) if event_type in (None, e["type"])]


# ---- servers ---------------------------------------------------------------------------------


def test_servers_are_found_by_id_and_by_name_ignoring_case(store, listings):
    first = add(store, "Lab", org="North")
    second = add(store, "LAB", org="South")
    other = add(store, "Office")
    assert store.get_server(first.id) == first
    assert store.get_server("srv_unknown") is None
    assert store.servers_named("lab") == sorted([first, second], key=lambda s: s.id)
    assert store.servers_named("Nowhere") == []
    assert store.servers_by_id({first.id, "srv_unknown"}) == {first.id: first}
    assert listings.servers() == sorted([first, second, other], key=lambda s: s.id)


def test_a_name_is_unique_per_organization(store):
    add(store, "Lab", org="North")
    with pytest.raises(DuplicateServer):
        add(store, "lab", org="north")
    assert len(store.servers_named("Lab")) == 1


def test_removing_a_server_forgets_its_keys_tokens_and_replacements(store, listings):
    server = add(store)
    token = install(store).token
    handle(store, user_event(catalog.USER_LEFT, "admin@x.org"))
    assert store.events.replacements()
    store.remove_server(store.get_server(server.id))
    assert store.get_server(server.id) is None
    assert store.servers_named("Lab") == []
    assert listings.servers() == []
    assert store.keys_of(server.id) == []
    assert store.get_token(token.id) is None
    assert store.tokens_of_server(server.id) == []
    assert store.events.replacements(include_resolved=True) == []
    assert store.current_tokens_of_user("admin@x.org") == []
    assert store.tokens_due_for_check(NOW + timedelta(days=400), 10) == (0, [])
    add(store)  # the name is free again


# ---- keys ------------------------------------------------------------------------------------


def test_a_key_pair_keeps_its_private_key_sealed_and_opens_it(store):
    server = add(store)
    [pair] = store.keys_of(server.id)
    assert pair.state == KEY_CURRENT and store.get_key(pair.id) == pair
    assert store.get_key("key_unknown") is None
    assert store.open_key_material(pair).fingerprint == pair.fingerprint
    where = [(w, f) for w, f, _ in store.sealed_values()]
    assert any(pair.id in w for w, _ in where)
    assert all(s.startswith("tw1:") or ":" in s for _, _, s in store.sealed_values())


def test_staging_a_key_dooms_the_installed_token_in_the_same_step(store):
    add(store)
    token = install(store).token
    rotation = registry.rotate_key(store, registry.resolve_server(store, "Lab"), now=LATER)
    server = registry.resolve_server(store, "Lab")
    assert server.staged_key_id == rotation.pair.id
    assert rotation.doomed_token_id == token.id and rotation.discarded is None
    assert [p.state for p in store.keys_of(server.id)] == [KEY_CURRENT, KEY_STAGED]
    [required] = sent(store, catalog.REPLACEMENT_REQUIRED)
    assert required["data"]["certificate"] == rotation.pair.cert_pem
    assert [r.token_id for r in store.events.replacements()] == [token.id]


def test_a_staged_key_is_replaced_only_when_asked(store):
    add(store)
    first = registry.rotate_key(store, registry.resolve_server(store, "Lab"), now=NOW)
    with pytest.raises(Conflict):
        registry.rotate_key(store, registry.resolve_server(store, "Lab"), now=NOW)
    assert registry.resolve_server(store, "Lab").staged_key_id == first.pair.id
    later = NOW + timedelta(minutes=1)
    second = registry.rotate_key(
        store, registry.resolve_server(store, "Lab"), now=later, replace_staged=True
    )
    assert second.discarded == first.pair
    assert store.get_key(first.pair.id) is None
    assert registry.resolve_server(store, "Lab").staged_key_id == second.pair.id


def test_a_token_for_the_staged_key_promotes_it_and_retires_the_old_one(store):
    server = add(store)
    old_key = server.current_key_id
    rotation = registry.rotate_key(store, server, now=NOW)
    result = install(store)
    server = store.get_server(server.id)
    assert server.current_key_id == rotation.pair.id and server.staged_key_id is None
    assert result.promoted_key.state == KEY_CURRENT
    retired = store.get_key(old_key)
    assert retired.state == KEY_RETIRED and retired.retired_at == NOW
    with pytest.raises(NotFound):
        store.open_key_material(retired)


# ---- tokens ----------------------------------------------------------------------------------


def test_installing_a_newer_token_supersedes_the_old_one(store):
    server = add(store)
    first = install(store, user="old@x.org").token
    later = NOW + timedelta(days=10)
    second = install(store, user="new@x.org", now=later, days=360).token
    old = store.get_token(first.id)
    assert old.status == TOKEN_SUPERSEDED and old.superseded_by == second.id
    with pytest.raises(NotFound):
        store.open_credentials(old)
    assert store.open_credentials(second)["consumer_key"] == CONSUMER
    assert store.current_tokens_of_user("old@x.org") == []
    assert store.current_tokens_of_user("NEW@x.org") == [second]
    assert [t.id for t in store.tokens_of_server(server.id)] == [first.id, second.id]
    assert store.tokens_by_id({first.id, second.id, "tok_unknown"}).keys() == {first.id, second.id}
    assert store.tokens_due_for_check(later, 10) == (1, [second])
    assert [e["data"]["token_id"] for e in sent(store, catalog.REPLACED)] == [first.id]


def test_an_install_on_a_server_that_moved_is_refused_and_writes_nothing(store):
    server = add(store)
    seen = store.get_server(server.id)
    installed = install(store).token
    late = bare_token(server, "tok_late", "late@x.org")
    with pytest.raises(ConcurrentChange):
        install_undecided(store, seen, late)
    assert store.get_token("tok_late") is None
    assert store.get_server(server.id).token_id == installed.id
    assert store.current_tokens_of_user("late@x.org") == []


def test_an_event_before_its_token_is_installed_dooms_the_token_on_install(store):
    add(store)
    handle(store, user_event(catalog.PASSWORD_CHANGED, "admin@x.org", at=NOW))
    assert sent(store) == []
    result = install(store, now=NOW + timedelta(hours=1), downloaded_at=NOW - timedelta(hours=1))
    assert result.doomed_by == (catalog.PASSWORD_CHANGED,)
    [replacement] = store.events.replacements()
    assert replacement.token_id == result.token.id
    assert replacement.most_urgent["type"] == catalog.PASSWORD_CHANGED


# ---- decisions -------------------------------------------------------------------------------


def test_a_repeated_event_is_a_duplicate_and_changes_nothing(store):
    add(store)
    install(store)
    event = user_event(catalog.USER_LEFT, "admin@x.org", event_id="ev-1")
    assert handle(store, event).outcome == "applied"
    again = handle(store, event)
    assert again.outcome == "duplicate" and again.decisions == []
    assert len(sent(store, catalog.REPLACEMENT_REQUIRED)) == 1
    assert [e["kind"] for e in store.events.audit()] == ["event", "install"]


def test_a_decision_whose_facts_moved_is_refused_with_retry(store):
    add(store)
    install(store)
    event = user_event(catalog.USER_LEFT, "admin@x.org")
    facts = store.event_facts({"admin@x.org"}, set(), set())
    stale = decide_event(facts, event, NOW, received_at=NOW)
    handle(store, user_event(catalog.PASSWORD_CHANGED, "admin@x.org"))  # moves the version
    before = (sent(store), store.events.audit(), store.events.replacements())
    assert store.events.apply(stale).outcome == "retry"
    assert store.events.apply(stale).results == []
    assert (sent(store), store.events.audit(), store.events.replacements()) == before


def test_merged_reasons_extend_the_open_replacement(store):
    add(store)
    token = install(store).token
    for minute in range(3):
        at = LATER + timedelta(minutes=minute)
        handle(store, user_event(catalog.PASSWORD_CHANGED, "admin@x.org", at=at), now=at)
    handle(store, user_event(catalog.USER_LEFT, "admin@x.org", at=at), now=at)
    [replacement] = store.events.replacements()
    assert replacement.token_id == token.id
    assert replacement.event_count == 4
    assert {r["type"]: r["count"] for r in replacement.reasons} == {
        catalog.PASSWORD_CHANGED: 3,
        catalog.USER_LEFT: 1,
    }
    assert store.events.replacements_by_token({token.id, "tok_unknown"}) == {token.id: replacement}


def test_replacements_are_listed_oldest_first_and_resolved_ones_on_request(store):
    for name, user in (("Lab", "a@x.org"), ("Office", "b@x.org")):
        add(store, name)
        install(store, name, user)
    handle(store, user_event(catalog.USER_LEFT, "b@x.org"))
    later = LATER + timedelta(hours=1)
    handle(store, user_event(catalog.USER_LEFT, "a@x.org", at=later), now=later)
    opened = store.events.replacements()
    assert [r.server_id for r in opened] == [
        registry.resolve_server(store, n).id for n in ("Office", "Lab")
    ]
    install(store, "Office", "c@x.org", now=later, days=350)
    assert [r.status for r in store.events.replacements(include_resolved=True)] == [
        "resolved",
        "open",
    ]
    assert [r.server_id for r in store.events.replacements()] == [opened[1].server_id]


def test_the_audit_trail_and_dead_letters_are_newest_first(store):
    store.events.record_dead({"bad": 1}, "first", NOW)
    store.events.record_dead("x" * 10_000, "second", NOW, message_id="m-2")
    newest, oldest = store.events.dead_letters()
    assert (newest["reason"], newest["message_id"], newest["truncated"]) == ("second", "m-2", "1")
    assert (oldest["reason"], oldest["message_id"], oldest["truncated"]) == ("first", "", "0")
    assert store.events.dead_letters(limit=1) == [newest]
    decision = Decision(now=NOW, audit=AuditEntry("scan", {"n": 1}), results=[{"a": 1}])
    store.events.apply(decision)
    [entry] = store.events.audit()
    assert {k: entry[k] for k in ("kind", "outcome", "note", "event", "decisions")} == {
        "kind": "scan",
        "outcome": "applied",
        "note": None,
        "event": {"n": 1},
        "decisions": [{"a": 1}],
    }


def test_writes_for_a_removed_server_are_refused(store):
    server = add(store)
    store.remove_server(server)
    with pytest.raises(NotFound):
        registry.rotate_key(store, server, now=NOW)
    token = bare_token(server, "tok_orphan", "a@x.org")
    with pytest.raises(NotFound):
        install_undecided(store, server, token)
    assert store.get_token("tok_orphan") is None and store.get_key(server.current_key_id) is None


def test_a_key_change_brings_its_certificate_to_the_open_replacement(store):
    add(store)
    token = install(store).token
    handle(store, user_event(catalog.USER_LEFT, "admin@x.org"))
    later = LATER + timedelta(minutes=5)
    rotation = registry.rotate_key(store, registry.resolve_server(store, "Lab"), now=later)
    [replacement] = store.events.replacements()
    assert replacement.token_id == token.id and replacement.event_count == 2
    [_, with_certificate] = sent(store, catalog.REPLACEMENT_REQUIRED)
    assert with_certificate["data"]["certificate"] == rotation.pair.cert_pem
    facts = store.event_facts(set(), {"lab"}, {"lab"})
    assert facts.staged_certificates == {rotation.pair.server_id: rotation.pair.cert_pem}
    assert facts.replacement(token.id).certificate == rotation.pair.cert_pem
    assert store.event_facts(set(), {"lab"}, set()).staged_certificates == {}


def test_a_decision_made_before_a_removal_is_refused(store):
    server = add(store)
    install(store)
    facts = store.event_facts({"admin@x.org"}, set(), set())
    stale = decide_event(
        facts, user_event(catalog.USER_LEFT, "admin@x.org"), LATER, received_at=LATER
    )
    store.remove_server(server)
    assert store.events.apply(stale).outcome == "retry"
    assert sent(store) == [] and store.events.replacements(include_resolved=True) == []

"""The decision services (handling, registry, the scan, the estate listings) on each Store:
the RedisStore and the InMemoryStore (the `store` fixture). The same behaviour on both is what
lets the in-memory store stand in for Redis in fast tests of the services."""

from __future__ import annotations

from datetime import timedelta

import pytest

from events import catalog
from events.cloudevent import new_event
from scheduler.scan import Scanner
from tests.helpers import FIXTURE_NOW, install_on
from worker import registry
from worker.errors import ConsumerKeyChanged, StaleToken
from worker.handling import EventHandler
from worker.services import estate

NOW = FIXTURE_NOW
LATER = NOW + timedelta(hours=1)
THRESHOLDS = (60, 30, 14, 7, 1)


def payload(kind, user, event_id, at=LATER):
    return new_event(kind, {"user": user}, source="urn:test", time=at, event_id=event_id).to_wire()


def serve(store, name, user, **options):
    registry.add_server(store, name, org=None, now=NOW)
    return install_on(store, name, user, now=NOW, **options)


def test_a_batch_dead_letters_its_malformed_event_and_handles_the_rest(store):
    token = serve(store, "Lab", "a@x.org").token
    batch = [
        payload(catalog.PASSWORD_CHANGED, "a@x.org", "e-1"),
        {"not": "an event"},
        payload(catalog.USER_LEFT, "a@x.org", "e-2"),
        payload(catalog.PASSWORD_CHANGED, "a@x.org", "e-1"),  # the same event again
    ]
    outcomes = EventHandler(store).handle_batch(batch, received_at=LATER, now=LATER)
    assert [o.outcome for o in outcomes] == ["applied", "dead", "applied", "duplicate"]
    [letter] = store.events.dead_letters()
    assert "not" in letter["payload"]
    [replacement] = store.events.replacements()
    assert replacement.token_id == token.id and replacement.event_count == 2


def test_an_older_token_or_another_consumers_is_refused_and_changes_nothing(store):
    first = serve(store, "Lab", "a@x.org", days=300)
    with pytest.raises(StaleToken):
        install_on(store, "Lab", "a@x.org", now=NOW, days=200)
    with pytest.raises(ConsumerKeyChanged):
        install_on(store, "Lab", "a@x.org", now=NOW, days=310, consumer="CK_" + "d" * 96)
    assert registry.resolve_server(store, "Lab").token_id == first.token.id
    assert [t.id for t in store.current_tokens_of_user("a@x.org")] == [first.token.id]
    assert [e["kind"] for e in store.events.audit()] == ["install"]


def test_a_dry_run_scan_previews_and_changes_nothing(store):
    token = serve(store, "Lab", "a@x.org", days=100).token
    preview = Scanner(store, THRESHOLDS).scan(NOW + timedelta(days=95), dry_run=True)
    assert [(w.level, w.token_id) for w in preview.warnings] == [(7, token.id)]
    assert store.events.outbox() == [] and store.get_token(token.id).warned is None
    assert store.scheduler_thresholds() is None


def test_an_expired_token_is_warned_once_and_its_replacement_opened(store):
    token = serve(store, "Lab", "a@x.org", days=10).token
    scanner = Scanner(store, THRESHOLDS)
    report = scanner.scan(NOW + timedelta(days=11))
    assert [w.level for w in report.warnings] == [0]
    assert scanner.scan(NOW + timedelta(days=12)).warnings == []
    assert [e["type"] for e in store.events.outbox()] == [
        catalog.EXPIRED,
        catalog.REPLACEMENT_REQUIRED,
    ]
    assert [r.token_id for r in store.events.replacements()] == [token.id]


def test_the_estate_lists_servers_tokens_and_open_replacements(store, listings):
    lab = serve(store, "Lab", "a@x.org").token
    serve(store, "Office", "b@x.org")
    EventHandler(store).handle(
        new_event(catalog.USER_LEFT, {"user": "a@x.org"}, source="urn:test", time=LATER),
        received_at=LATER,
        now=LATER,
    )
    rows = estate.current_state(store, listings)
    assert {s.name: (t.downloaded_by, r is not None) for s, t, r in rows} == {
        "Lab": ("a@x.org", True),
        "Office": ("b@x.org", False),
    }
    tokens, by_id = estate.tokens(store, listings, include_superseded=True)
    assert sorted(by_id[t.server_id].name for t in tokens) == ["Lab", "Office"]
    [(replacement, server, token)] = estate.replacements(store, include_resolved=False)
    assert (server.name, token.id, replacement.token_id) == ("Lab", lab.id, lab.id)
    assert [e["kind"] for e in estate.audit(store, 10)] == ["event", "install", "install"]

"""The Store contract (see test_store_contract.py), for what the expiry scan uses: the due
tokens, their facts, the thresholds, and the sealed secrets. Runs against both stores."""

from __future__ import annotations

from datetime import timedelta

from scheduler.scan import CHECKS_MARK, Scanner
from tests.helpers import FIXTURE_NOW, install_on
from worker import registry
from worker.rules.decision import Decision, NextCheck

NOW = FIXTURE_NOW
THRESHOLDS = (60, 30, 14, 7, 1)


def add(store, name="Lab"):
    server, _ = registry.add_server(store, name, org=None, now=NOW)
    return server


def install(store, name="Lab", *, now=NOW, days=300):
    return install_on(store, name, "admin@x.org", now=now, days=days)


def test_due_tokens_come_soonest_first_in_pages(store):
    tokens = []
    for index, name in enumerate(("A", "B", "C")):
        add(store, name)
        tokens.append(install(store, name, now=NOW + timedelta(minutes=index)).token)
    assert store.tokens_due_for_check(NOW - timedelta(minutes=1), 10) == (0, [])
    assert store.tokens_due_for_check(NOW + timedelta(hours=1), 10) == (3, tokens)
    assert store.tokens_due_for_check(NOW + timedelta(hours=1), 2, 1) == (2, tokens[1:])


def test_a_vanished_token_in_the_index_is_tidied_away(store):
    store.events.apply(Decision(now=NOW, next_checks=[NextCheck("tok_gone", NOW)]))
    assert store.tokens_due_for_check(NOW, 10, tidy=False) == (1, [])
    assert store.tokens_due_for_check(NOW, 10) == (1, [])
    assert store.tokens_due_for_check(NOW, 10) == (0, [])


def test_the_scan_warns_once_per_threshold_and_then_never_for_a_superseded_token(store):
    server = add(store)
    token = install(store, days=20).token
    scanner = Scanner(store, THRESHOLDS)
    first = scanner.scan(NOW)
    assert [w.level for w in first.warnings] == [30]
    assert scanner.scan(NOW).warnings == []
    assert store.get_token(token.id).warned == 30
    [facts] = store.scan_facts([token])
    assert facts.server == store.get_server(server.id) and facts.replacement.is_open
    assert [w.level for w in scanner.scan(NOW + timedelta(days=7)).warnings] == [14]
    install(store, now=NOW + timedelta(days=8), days=360)
    assert scanner.scan(NOW + timedelta(days=40)).warnings == []


def test_thresholds_are_kept_and_checks_brought_forward(store):
    add(store)
    token = install(store, days=200).token
    Scanner(store, THRESHOLDS).scan(NOW)
    assert store.scheduler_thresholds() == ",".join(map(str, THRESHOLDS)) + f";{CHECKS_MARK}"
    assert store.tokens_due_for_check(NOW + timedelta(days=100), 10) == (0, [])
    moved = store.bring_checks_forward(lambda t: t.expires_at - timedelta(days=120))
    assert moved == 1
    assert store.tokens_due_for_check(NOW + timedelta(days=100), 10)[1] == [
        store.get_token(token.id)
    ]
    assert store.bring_checks_forward(lambda t: t.expires_at) == 0
    store.set_scheduler_thresholds("90,30")
    assert store.scheduler_thresholds() == "90,30"


def test_the_facts_of_unknown_users_and_names_are_empty(store):
    facts = store.event_facts({"nobody@x.org"}, {"nowhere"}, {"nowhere"})
    assert facts.users["nobody@x.org"].version == ""
    assert facts.user_tokens == {"nobody@x.org": []}
    assert facts.servers_named == {"nowhere": []}
    assert facts.tokens == {} and facts.staged_certificates == {}
    store.ping()


def test_secrets_sealed_under_the_primary_key_need_no_resealing(store):
    add(store)
    install(store)
    report = store.reseal_all()
    assert (report.examined, report.resealed) == (2, 0)
    assert len(list(store.sealed_values())) == 2

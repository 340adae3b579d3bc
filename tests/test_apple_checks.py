"""Checks with Apple: `tokens check` now, and the scheduler's leader every interval. Each verdict
against the signature-checking fake (tests/apple_fake.py), through the real CLI, Redis, a real
dramatiq worker and a real webhook receiver."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from events import catalog
from scheduler.service import SchedulerService
from tests.helpers import FIXTURE_NOW, emit, replacements, wait_until, wait_until_settled
from tests.tokenfiles import credentials, encrypt_to
from worker.apple.verdicts import Verdict
from worker.bootstrap import App
from worker.config import DEFAULT_APPLE_CHECK_INTERVAL_S
from worker.store import keys as k

INTERVAL_S = 40  # the scheduler looks every 2 s (a twentieth)


@pytest.fixture
def settings(settings, apple):
    return replace(settings, apple=replace(settings.apple, url=apple.url))


def add_with_token(cli, apple, tmp_path, server, admin="admin@school.example", **account):
    """A server with a token Apple knows (installed by asking Apple); its credentials."""
    assert cli("servers", "add", server).exit_code == 0
    creds = credentials(FIXTURE_NOW + timedelta(days=300))
    path = tmp_path / f"{server}.p7m"
    path.write_bytes(encrypt_to(cli("keys", "export", server).stdout, creds))
    apple.enroll(creds, admin_id=admin, **account)
    result = cli("tokens", "install", server, str(path))
    assert result.exit_code == 0, result.output
    return creds


def check(cli, *servers):
    result = cli("tokens", "check", "--json", *servers)
    return result.exit_code, json.loads(result.stdout)


def received_types(receiver) -> list[str]:
    return [json.loads(r.body)["type"] for r in receiver.received]


@pytest.fixture
def subscribed(cli, receiver):
    assert cli("subscriptions", "add", receiver.url).exit_code == 0
    return receiver


def test_check_now_reports_every_token_accepted(cli, apple, tmp_path):
    add_with_token(cli, apple, tmp_path, "Lab")
    add_with_token(cli, apple, tmp_path, "Office")
    code, rows = check(cli)
    assert code == 0
    assert [(r["server"], r["check"]["verdict"]) for r in rows] == [
        ("Lab", "accepted"),
        ("Office", "accepted"),
    ]
    table = cli("tokens", "check", "Lab")
    assert table.exit_code == 0
    assert "Lab" in table.stdout and "Office" not in table.stdout


def test_a_rejected_token_opens_its_replacement_and_is_announced_once(
    cli, app, apple, tmp_path, subscribed, worker, redis_client
):
    creds = add_with_token(cli, apple, tmp_path, "Lab")
    apple.revoke(creds["consumer_key"], "token_rejected")

    code, [row] = check(cli)
    assert code == 1
    assert row["check"] == {
        "verdict": "rejected",
        "code": "token_rejected",
        "detail": row["check"]["detail"],
        "admin_id": None,
    }
    assert row["apple"]["verdict"] == "rejected"
    [opened] = replacements(cli)
    assert [r["type"] for r in opened["reasons"]] == [catalog.REJECTED_BY_APPLE]
    assert opened["reasons"][0]["urgency"] == "immediate"
    # Checked again and again: still rejected, but no second alarm and no second reason count
    assert check(cli)[0] == 1
    assert check(cli)[0] == 1
    wait_until_settled(redis_client)
    types = received_types(subscribed)
    assert types.count(catalog.TOKEN_REJECTED) == 1
    assert types.count(catalog.REPLACEMENT_REQUIRED) == 1
    [still] = replacements(cli)
    assert still["reasons"][0]["count"] == 1
    [rejected] = [json.loads(r.body) for r in subscribed.received if b"token.rejected" in r.body]
    assert rejected["data"]["apple_code"] == "token_rejected"
    assert rejected["data"]["server"] == "Lab"
    assert rejected["data"]["first_seen_at"] == "2025-03-01T09:00:00Z"
    # and the status says it no longer works
    status = cli("status", "--json")
    assert status.exit_code == 2
    assert json.loads(status.stdout)[0]["apple"]["verdict"] == "rejected"


def test_terms_waiting_are_told_once_until_accepted_and_open_no_replacement(
    cli, apple, tmp_path, subscribed, worker, redis_client
):
    creds = add_with_token(cli, apple, tmp_path, "Lab")
    apple.terms(creds["consumer_key"], signed=False)
    assert check(cli)[0] == 1
    assert check(cli)[0] == 1
    status = cli("status", "--json")
    assert status.exit_code == 1  # something to do, but the token still works
    assert json.loads(status.stdout)[0]["apple"]["verdict"] == "terms_not_accepted"
    apple.terms(creds["consumer_key"], signed=True)
    assert check(cli)[0] == 0
    assert check(cli)[0] == 0
    wait_until_settled(redis_client)
    # (deliveries run in parallel: their order of arrival is not promised)
    events = {e["type"]: e for e in (json.loads(r.body) for r in subscribed.received)}
    assert len(subscribed.received) == 2
    pending, accepted = events[catalog.TERMS_NOT_ACCEPTED], events[catalog.TERMS_ACCEPTED]
    assert pending["data"]["since"] == accepted["data"]["since"] == "2025-03-01T09:00:00Z"
    assert replacements(cli) == []
    assert cli("status").exit_code == 0


def test_apple_unreachable_is_no_alarm_and_goes_unknown_after_three_intervals(
    cli, app, clock, apple, tmp_path, subscribed, worker, redis_client
):
    add_with_token(cli, apple, tmp_path, "Lab")
    apple.then(*[503] * 3)
    code, [row] = check(cli)
    assert code == 3
    assert row["check"]["verdict"] == "unreachable"
    assert row["apple"]["verdict"] == "accepted"  # confirmed at install, a moment ago
    wait_until_settled(redis_client)
    assert subscribed.received == []
    assert replacements(cli) == []
    assert app.settings.apple.check_interval_s == 0  # checks off: the default interval counts
    clock.now += timedelta(seconds=3 * DEFAULT_APPLE_CHECK_INTERVAL_S - 60)
    [shown] = json.loads(cli("status", "--json").stdout)
    assert shown["apple"]["verdict"] == "accepted"
    clock.now += timedelta(seconds=61)
    [shown] = json.loads(cli("status", "--json").stdout)
    assert shown["apple"] == {"verdict": "unknown", "last_confirmed_at": "2025-03-01T09:00:00Z"}


def test_apple_naming_another_downloader_moves_the_token_to_them(
    cli, app, clock, apple, tmp_path, worker
):
    creds = add_with_token(cli, apple, tmp_path, "Lab", admin="first@school.example")
    apple.account(creds["consumer_key"], admin_id="second@school.example")

    assert check(cli)[0] == 0

    [token] = json.loads(cli("tokens", "list", "--json").stdout)
    assert token["downloaded_by"] == "second@school.example"
    audit = json.loads(cli("events", "list", "--json").stdout)
    [entry] = [e for e in audit if e["kind"] == "apple"]
    assert "first@school.example" in json.dumps(entry)
    assert "second@school.example" in json.dumps(entry)
    assert "apple: downloader corrected" in cli("events", "list").stdout
    # The user rules now apply to the right person: the old downloader's password is nothing
    clock.now += timedelta(minutes=5)
    emit(cli, "password-changed", "--user", "first@school.example")
    worker.drain()
    assert replacements(cli) == []
    emit(cli, "password-changed", "--user", "second@school.example")
    worker.drain()
    [opened] = replacements(cli)
    assert opened["reasons"][0]["type"] == catalog.PASSWORD_CHANGED


def test_a_password_change_recorded_before_apple_named_the_downloader_dooms_the_token(
    cli, app, clock, apple, tmp_path, worker
):
    creds = add_with_token(cli, apple, tmp_path, "Lab", admin="first@school.example")
    clock.now += timedelta(minutes=5)  # the password changes after the download
    emit(cli, "password-changed", "--user", "second@school.example")
    worker.drain()
    assert replacements(cli) == []
    apple.account(creds["consumer_key"], admin_id="second@school.example")
    assert check(cli)[0] == 0
    [opened] = replacements(cli)
    assert opened["reasons"][0]["type"] == catalog.PASSWORD_CHANGED


def test_the_scheduler_leader_checks_each_token_once_an_interval(
    cli, app, clock, apple, tmp_path, settings, subscribed, worker, redis_client
):
    first = add_with_token(cli, apple, tmp_path, "Lab")
    add_with_token(cli, apple, tmp_path, "Office")
    install_requests = len(apple.requests)
    quick = replace(settings, apple=replace(settings.apple, check_interval_s=INTERVAL_S))
    services = [SchedulerService(App(quick, clock=clock)) for _ in range(2)]
    for service in services:
        service.start()
    try:
        # Both were confirmed at install: the first round puts them an interval ahead, unasked.
        wait_until(
            lambda: redis_client.zcount(k.APPLE_NEXT_CHECK, "-inf", _ms(clock.now)) == 0,
            what="the first round",
        )
        assert len(apple.requests) == install_requests
        # An interval later, Apple has revoked one of them: both are asked about, once.
        apple.revoke(first["consumer_key"])
        clock.now += timedelta(seconds=INTERVAL_S + 1)
        wait_until(lambda: len(replacements(cli)) == 1, what="the rejection")
        wait_until(
            lambda: redis_client.zcount(k.APPLE_NEXT_CHECK, "-inf", _ms(clock.now)) == 0,
            what="the second round",
        )
    finally:
        for service in services:
            service.stop()
    asked = [p for p in apple.paths()[install_requests:] if p == "/account"]
    assert len(asked) == 1  # the revoked one failed at /session: Office alone reached /account
    assert sum(1 for p in apple.paths()[install_requests:] if p == "/session") == 2
    wait_until_settled(redis_client)
    assert received_types(subscribed).count(catalog.TOKEN_REJECTED) == 1


def _ms(moment) -> int:
    return round(moment.timestamp() * 1000)


def test_tokens_installed_before_the_schedule_are_checked_too(
    cli, app, clock, apple, tmp_path, redis_client
):
    add_with_token(cli, apple, tmp_path, "Lab")
    redis_client.delete(k.APPLE_NEXT_CHECK)  # as a store from before the schedule existed
    added = app.store.apple.backfill(clock.now, INTERVAL_S)
    assert added == 1
    [(_, due)] = redis_client.zrange(k.APPLE_NEXT_CHECK, 0, -1, withscores=True)
    assert _ms(clock.now) <= due < _ms(clock.now + timedelta(seconds=INTERVAL_S))
    assert app.store.apple.backfill(clock.now, INTERVAL_S) == 0


def test_an_unknown_server_in_tokens_check_is_one_line(cli, apple, tmp_path):
    add_with_token(cli, apple, tmp_path, "Lab")
    result = cli("tokens", "check", "Nowhere")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no server named 'Nowhere'")
    assert result.stderr.count("\n") == 1


def test_a_token_installed_while_apple_was_unreachable_is_asked_about_at_the_next_round(
    cli, app, apple, tmp_path
):
    assert cli("servers", "add", "Lab").exit_code == 0
    creds = credentials(FIXTURE_NOW + timedelta(days=300))
    path = tmp_path / "lab.p7m"
    path.write_bytes(encrypt_to(cli("keys", "export", "Lab").stdout, creds))
    apple.enroll(creds, admin_id="admin@school.example")
    apple.then(503, 503, 503)
    installed = cli("tokens", "install", "Lab", str(path), "--downloaded-by", "a@school.example")
    assert installed.exit_code == 0, installed.output

    report = app.apple_checker.run_due(app.now)

    assert report.checked == 1 and report.skipped == 0
    [token] = json.loads(cli("tokens", "list", "--json").stdout)
    assert token["apple"]["verdict"] == "accepted"
    assert token["downloaded_by"] == "admin@school.example"  # Apple named the downloader


def test_a_token_confirmed_at_install_is_not_asked_about_again_at_once(cli, app, apple, tmp_path):
    add_with_token(cli, apple, tmp_path, "Lab")
    asked = len(apple.requests)
    report = app.apple_checker.run_due(app.now)
    assert (report.checked, report.skipped) == (0, 1)
    assert len(apple.requests) == asked


def test_tokens_check_does_not_ask_apple_about_an_expired_token(
    cli, clock, apple, tmp_path, subscribed, worker, redis_client
):
    add_with_token(cli, apple, tmp_path, "Lab")
    clock.now += timedelta(days=301)
    asked = len(apple.requests)
    code, [row] = check(cli)
    assert code == 1
    assert row["check"]["verdict"] == "rejected" and row["check"]["code"] == "expired"
    assert len(apple.requests) == asked
    wait_until_settled(redis_client)
    assert catalog.TOKEN_REJECTED not in received_types(subscribed)


def test_a_round_stops_when_a_whole_batch_finds_apple_unreachable(
    cli, app, clock, apple, tmp_path, settings
):
    from worker.apple.client import AppleClient
    from worker.services.apple_checks import AppleChecker

    for n in range(10):
        add_with_token(cli, apple, tmp_path, f"Server {n}")
    clock.now += timedelta(hours=7)  # confirmed at install, an interval ago: all due
    due = app.redis.zrange(k.APPLE_NEXT_CHECK, 0, -1)
    app.redis.zadd(k.APPLE_NEXT_CHECK, dict.fromkeys(due, 0))
    one_at_a_time = replace(settings.apple, concurrency=1)  # a batch of 8
    checker = AppleChecker(
        app.store, AppleClient(one_at_a_time, sleep=lambda s: None), one_at_a_time
    )
    apple.then(*[503] * 24)  # 8 checks, 3 attempts each

    report = checker.run_due(app.now)

    assert report.stopped_unreachable
    assert report.count(Verdict.UNREACHABLE) == report.checked == 8
    assert app.store.apple.due_count(app.now()) == 2  # the rest wait for the next round


def test_terms_met_at_install_are_recorded_and_told_at_the_next_round(cli, app, apple, tmp_path):
    assert cli("servers", "add", "Lab").exit_code == 0
    creds = credentials(FIXTURE_NOW + timedelta(days=300))
    path = tmp_path / "lab.p7m"
    path.write_bytes(encrypt_to(cli("keys", "export", "Lab").stdout, creds))
    apple.enroll(creds)
    apple.terms(creds["consumer_key"], signed=False)
    result = cli("tokens", "install", "Lab", str(path), "--downloaded-by", "a@school.example")
    assert result.exit_code == 0, result.output

    report = app.apple_checker.run_due(app.now)

    assert report.count(Verdict.TERMS_NOT_ACCEPTED) == 1
    [shown] = json.loads(cli("status", "--json").stdout)
    assert shown["apple"]["verdict"] == "terms_not_accepted"
    outbox = app.redis.xrange(k.OUTBOX)
    assert [f["type"] for _, f in outbox] == [catalog.TERMS_NOT_ACCEPTED]

"""A round of a directory source (worker/services/directory_checks.py) on a real Redis with a
real dramatiq worker: what it sends for each answer, once; what it holds back; how a failing
directory is reported, once, and its recovery. The directory is scripted
(tests/directory_script.py); its clients are tested against fakes in test_directory_<kind>.py."""

from __future__ import annotations

from datetime import timedelta

import pytest

from events import catalog
from tests.directory_script import ScriptedDirectory
from tests.helpers import DOWNLOADED, FIXTURE_NOW, install, replacements, worker_threads
from worker.directories.base import Observation, Unobserved
from worker.errors import DirectoryCredentialsRejected, DirectoryUnreachable
from worker.publish import Publisher
from worker.rules import directory as rules
from worker.services import sources as service
from worker.services.directory_checks import DirectoryChecker
from worker.store import keys as k


@pytest.fixture
def directory():
    return ScriptedDirectory()


@pytest.fixture
def checker(app, directory):
    publisher = Publisher(app.broker, app.now)
    return DirectoryChecker(
        app.store, app.sources, publisher.enqueue, app.settings.directories, app.now,
        directory.factory,
    )  # fmt: skip


def add_source(app, name="staff", maps=(), domains=("school.example",)):
    return service.add_directory(
        app.sources,
        name,
        "okta-api",
        now=app.now(),
        options={"org_url": "https://school.okta.com"},
        credentials={"api_token": "00" + "a" * 40},
        map_domain=maps,
        domains=() if maps else domains,
    )


def server_with_token(cli, clock, tmp_path, server, user, downloaded_at=DOWNLOADED):
    assert cli("servers", "add", server).exit_code == 0
    install(cli, clock, tmp_path, server, user, downloaded_at)


def outbox_types(app) -> list[str]:
    return [fields["type"] for _, fields in app.redis.xrange(k.OUTBOX)]


def open_for(cli) -> dict[str, list[str]]:
    return {r["server"]: sorted(x["type"] for x in r["reasons"]) for r in replacements(cli)}


def test_a_round_sends_a_password_change_and_a_departure_once(
    app, cli, clock, tmp_path, worker, directory, checker
):
    server_with_token(cli, clock, tmp_path, "Lab", "ann@school.example")
    server_with_token(cli, clock, tmp_path, "Office", "bob@school.example")
    server_with_token(cli, clock, tmp_path, "Library", "cat@school.example")
    source = add_source(app)
    directory.answers = {
        "ann@school.example": Observation(
            "ann@school.example", True, password_changed_at=DOWNLOADED + timedelta(days=1)
        ),
        "bob@school.example": Observation("bob@school.example", True, False, "SUSPENDED"),
        # Cat changed her password before she downloaded: nothing to do.
        "cat@school.example": Observation(
            "cat@school.example", True, password_changed_at=DOWNLOADED - timedelta(days=1)
        ),
    }
    report = checker.run_round(source, keep_findings=True)
    assert report.error is None and report.events == 2
    outcomes = {f.user: f.outcome for f in report.findings}
    assert outcomes == {
        "ann@school.example": rules.PASSWORD_CHANGED,
        "bob@school.example": rules.LEFT,
        "cat@school.example": rules.UNCHANGED,
    }
    worker.drain()
    assert open_for(cli) == {
        "Lab": [catalog.PASSWORD_CHANGED],
        "Office": [catalog.USER_LEFT],
    }
    # The next round sees the same, and sends nothing: the causes are recorded.
    again = checker.run_round(source, keep_findings=True)
    assert again.events == 0
    assert again.counts[rules.ALREADY_KNOWN] == 2
    worker.drain()
    assert outbox_types(app).count(catalog.REPLACEMENT_REQUIRED) == 2


def test_two_overlapping_rounds_send_the_same_event_which_is_taken_once(
    app, cli, clock, tmp_path, directory, checker
):
    server_with_token(cli, clock, tmp_path, "Lab", "ann@school.example")
    source = add_source(app)
    directory.answers["ann@school.example"] = Observation("ann@school.example", True, False)
    first = checker.run_round(source, keep_findings=True)  # before any worker records it
    second = checker.run_round(source, keep_findings=True)
    assert first.findings[0].event.id == second.findings[0].event.id
    with worker_threads(app) as worker:  # only now: both rounds sent before either was taken
        worker.drain()
    assert outbox_types(app).count(catalog.REPLACEMENT_REQUIRED) == 1


def test_a_mapped_source_asks_only_about_its_domain_by_directory_login(
    app, cli, clock, tmp_path, directory, checker
):
    server_with_token(cli, clock, tmp_path, "Lab", "ann@appleid.school.example")
    server_with_token(cli, clock, tmp_path, "Other", "zed@other.example")
    source = add_source(app, maps=("school.example=appleid.school.example",))
    checker.run_round(source)
    assert [w.login for w in directory.asked] == ["ann@school.example"]
    assert directory.asked[0].since == DOWNLOADED


def test_a_user_is_asked_about_once_for_several_tokens_since_the_oldest(
    app, cli, clock, tmp_path, directory, checker
):
    server_with_token(cli, clock, tmp_path, "Lab", "ann@school.example")
    server_with_token(
        cli, clock, tmp_path, "Office", "Ann@School.example", DOWNLOADED - timedelta(days=3)
    )
    checker.run_round(add_source(app))
    assert len(directory.asked) == 1
    assert directory.asked[0].since == DOWNLOADED - timedelta(days=3)


def test_someone_whose_last_token_was_replaced_is_asked_about_no_more(
    app, cli, clock, tmp_path, directory, checker
):
    server_with_token(cli, clock, tmp_path, "Lab", "ann@school.example")
    install(cli, clock, tmp_path, "Lab", "bob@school.example", DOWNLOADED + timedelta(days=1), 301)
    checker.run_round(add_source(app))
    assert [w.login for w in directory.asked] == ["bob@school.example"]
    assert app.redis.smembers(k.watched("school.example")) == {"bob@school.example"}


def test_tokens_installed_before_the_index_are_watched_after_a_backfill(
    app, cli, clock, tmp_path, directory, checker
):
    server_with_token(cli, clock, tmp_path, "Lab", "ann@school.example")
    app.redis.delete(k.watched("school.example"), k.WATCHED_DOMAINS, k.WATCHED_BACKFILLED)
    checker.run_round(add_source(app))
    assert [w.login for w in directory.asked] == ["ann@school.example"]


def test_many_users_not_found_at_once_send_no_departure(
    app, cli, clock, tmp_path, worker, directory, checker
):
    users = [f"u{i}@school.example" for i in range(6)]
    for i, user in enumerate(users):
        server_with_token(cli, clock, tmp_path, f"S{i}", user)
    for user in users[1:]:
        directory.answers[user] = Observation(user, False, False, "not found")
    report = checker.run_round(add_source(app))
    assert report.held_back == 5 and report.events == 0
    assert "not found" in str(report.error) and "--map-domain" in str(report.error)
    worker.drain()
    assert replacements(cli) == []
    assert outbox_types(app) == [catalog.SOURCE_FAILING]


def test_the_only_watched_user_not_found_is_held_until_a_person_confirms(
    app, cli, clock, tmp_path, worker, directory, checker
):
    server_with_token(cli, clock, tmp_path, "Lab", "ann@school.example")
    directory.answers["ann@school.example"] = Observation("ann@school.example", False, False)
    source = add_source(app)
    report = checker.run_round(source)
    assert report.held_back == 1 and report.events == 0
    assert "--confirm-departures" in str(report.error)
    confirmed = checker.run_round(source, confirm_departures=True)
    assert confirmed.error is None and confirmed.events == 1
    worker.drain()
    assert open_for(cli) == {"Lab": [catalog.USER_LEFT]}
    # The confirmed round worked: the misconfiguration report is closed by a recovery.
    assert outbox_types(app)[:1] == [catalog.SOURCE_FAILING]
    assert catalog.SOURCE_RECOVERED in outbox_types(app)


def test_a_source_asks_only_about_the_domains_it_names(
    app, cli, clock, tmp_path, directory, checker
):
    server_with_token(cli, clock, tmp_path, "Lab", "ann@school.example")
    server_with_token(cli, clock, tmp_path, "Partner", "pat@partner.example")
    checker.run_round(add_source(app))
    assert [w.login for w in directory.asked] == ["ann@school.example"]


def test_a_round_with_nobody_to_ask_about_says_nothing_of_the_directory(
    app, cli, clock, tmp_path, directory, checker
):
    source = add_source(app)
    app.sources.mark_failing("staff", clock.now, "okta refused the API token")
    report = checker.run_round(source)
    assert report.watched == 0 and report.error is None and directory.asked == []
    state = app.sources.poll_states(["staff"])["staff"]
    assert state.failing_since is not None and state.last_success is None
    assert state.last_round == clock.now
    assert outbox_types(app) == []  # no "recovered" without asking


def test_a_client_that_breaks_is_a_failed_round_reported_not_a_crash(
    app, cli, clock, tmp_path, directory, checker
):
    server_with_token(cli, clock, tmp_path, "Lab", "ann@school.example")

    def broken(logins):
        raise UnicodeEncodeError("ascii", "é", 0, 1, "ordinal not in range")

    directory.observe = broken
    report = checker.run_round(add_source(app))
    assert "failed unexpectedly (UnicodeEncodeError)" in str(report.error)
    assert outbox_types(app) == [catalog.SOURCE_FAILING]
    assert directory.closed == 1


def test_one_user_not_found_among_several_has_left(
    app, cli, clock, tmp_path, worker, directory, checker
):
    for i in range(6):
        server_with_token(cli, clock, tmp_path, f"S{i}", f"u{i}@school.example")
    directory.answers["u0@school.example"] = Observation("u0@school.example", False, False)
    report = checker.run_round(add_source(app))
    assert report.error is None and report.events == 1
    worker.drain()
    assert open_for(cli) == {"S0": [catalog.USER_LEFT]}


def test_a_directory_answering_about_no_one_is_unreachable_and_sends_nothing(
    app, cli, clock, tmp_path, worker, directory, checker
):
    server_with_token(cli, clock, tmp_path, "Lab", "ann@school.example")
    directory.answers["ann@school.example"] = Unobserved("ann@school.example", "HTTP 500")
    report = checker.run_round(add_source(app))
    assert isinstance(report.error, DirectoryUnreachable) and "HTTP 500" in str(report.error)
    assert report.events == 0


def test_an_unreachable_directory_is_reported_failing_after_three_rounds_once_then_recovered(
    app, cli, clock, tmp_path, directory, checker
):
    server_with_token(cli, clock, tmp_path, "Lab", "ann@school.example")
    source = add_source(app)
    directory.error = DirectoryUnreachable("okta: connection refused")
    for _ in range(2):
        checker.run_round(source)
    assert outbox_types(app) == []  # two blips are not worth a page
    for _ in range(3):
        clock.now += timedelta(minutes=5)
        checker.run_round(source)
    assert outbox_types(app) == [catalog.SOURCE_FAILING]
    state = app.sources.poll_states(["staff"])["staff"]
    assert state.failing_since == FIXTURE_NOW + timedelta(minutes=5)
    assert state.failures == 5 and "connection refused" in state.error
    directory.error = None
    clock.now += timedelta(minutes=5)
    checker.run_round(source)
    checker.run_round(source)
    assert outbox_types(app) == [catalog.SOURCE_FAILING, catalog.SOURCE_RECOVERED]
    state = app.sources.poll_states(["staff"])["staff"]
    assert state.failing_since is None and state.failures == 0
    assert state.last_success == clock.now


def test_a_refused_credential_is_reported_at_once_and_only_once(
    app, cli, clock, tmp_path, directory, checker
):
    server_with_token(cli, clock, tmp_path, "Lab", "ann@school.example")
    source = add_source(app)
    directory.error = DirectoryCredentialsRejected("okta refused the API token: E0000011")
    checker.run_round(source)
    clock.now += timedelta(minutes=5)
    checker.run_round(source)
    assert outbox_types(app) == [catalog.SOURCE_FAILING]
    [(_, fields)] = app.redis.xrange(k.OUTBOX)
    assert "E0000011" in fields["event"] and "00aaaa" not in fields["event"]
    assert directory.closed == 2


def test_a_failing_report_lost_in_a_crash_is_made_by_the_next_round(
    app, cli, clock, tmp_path, directory, checker
):
    server_with_token(cli, clock, tmp_path, "Lab", "ann@school.example")
    source = add_source(app)
    # A round recorded the failure and died before reporting it.
    app.sources.mark_failing("staff", clock.now, "okta refused the API token")
    directory.error = DirectoryCredentialsRejected("okta refused the API token")
    checker.run_round(source)
    checker.run_round(source)
    assert outbox_types(app) == [catalog.SOURCE_FAILING]


def test_a_batch_spans_domains_so_a_directory_is_asked_in_full_batches(
    app, cli, clock, tmp_path, directory, checker, monkeypatch
):
    from worker.services import directory_checks

    monkeypatch.setattr(directory_checks, "ROUND_BATCH", 4)
    for i in range(6):  # two people in each of three domains
        server_with_token(cli, clock, tmp_path, f"S{i}", f"u{i}@d{i // 2}.example")
    report = checker.run_round(add_source(app, domains=("d0.example", "d1.example", "d2.example")))
    assert report.watched == 6
    assert directory.calls == [4, 2]
    assert sorted(w.login for w in directory.asked) == [f"u{i}@d{i // 2}.example" for i in range(6)]

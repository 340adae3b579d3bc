"""`/metrics` of a real `serve` over a real estate: tokens installed through the CLI, Apple's
verdicts from the fake, a replacement opened by an event through a real worker, a dead letter,
deliveries that fail, directory sources, a scan. Each value is read back from the exposition
as Prometheus parses it; no secret is in it; Redis down is a 503 of one line."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.service import SchedulerService
from tests.helpers import (
    DOWNLOADED,
    FIXTURE_NOW,
    emit,
    install,
    serving,
    wait_until,
    worker_threads,
)
from tests.tokenfiles import credentials, encrypt_to
from worker.bootstrap import App
from worker.intake.app import create_app
from worker.store import keys as k

OKTA_TOKEN = "00Okta" + "m" * 36
OKTA = ("--kind", "okta-api", "--org-url", "https://school.okta.com", "--api-token", "-",
        "--domain", "school.example")  # fmt: skip


@pytest.fixture
def settings(settings, apple):
    return replace(settings, apple=replace(settings.apple, url=apple.url))


def scrape(url: str) -> dict[tuple, float]:
    """Every sample: (name, (label, value), ...) sorted by label -> value."""
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    return {
        (s.name, *sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def named(found: dict[tuple, float], name: str) -> dict[tuple, float]:
    return {key[1:]: value for key, value in found.items() if key[0] == name}


def with_apple(cli, apple, tmp_path, server, letter, *extra) -> dict[str, str]:
    """A server whose token Apple knows (installed by asking Apple); its credentials."""
    assert cli("servers", "add", server, *extra).exit_code == 0
    creds = credentials(FIXTURE_NOW + timedelta(days=300), "CK_" + letter * 96)
    path = tmp_path / f"{server}.p7m"
    path.write_bytes(encrypt_to(cli("keys", "export", server).stdout, creds))
    apple.enroll(creds, admin_id=f"admin-{letter}@school.example")
    result = cli("tokens", "install", server, str(path))
    assert result.exit_code == 0, result.output
    return creds


def add_source(cli, name: str) -> None:
    result = cli("sources", "add", name, *OKTA, input=OKTA_TOKEN + "\n")
    assert result.exit_code == 0, result.output


def test_a_scrape_reports_apple_verdicts_sources_the_scan_and_the_outbox(
    cli, app, apple, tmp_path, intake
):
    # Given: Lab rejected by Apple, Office accepted, Annex waiting for new terms
    lab = with_apple(cli, apple, tmp_path, "Lab", "a", "--org", "School")
    office = with_apple(cli, apple, tmp_path, "Office", "b")
    annex = with_apple(cli, apple, tmp_path, "Annex", "c", "--org", "School")
    apple.revoke(lab["consumer_key"], "token_rejected")
    apple.terms(annex["consumer_key"], signed=False)
    assert cli("tokens", "check", "Lab", "Office", "Annex").exit_code == 1
    # ...a directory failing, another that succeeded, a push source (not asked on a schedule)
    add_source(cli, "staff")
    add_source(cli, "hr")
    assert cli("sources", "add", "push", "--kind", "okta").exit_code == 0
    app.sources.mark_failing("staff", FIXTURE_NOW, "okta refused the API token")
    app.sources.record_round("hr", FIXTURE_NOW - timedelta(hours=1), {"unchanged": 1})
    # ...a dead letter, and a scan
    app.store.events.record_dead("not an event", "the event is not JSON", FIXTURE_NOW)
    assert cli("scan").exit_code == 0

    # When
    found = scrape(intake)

    # Then
    now = FIXTURE_NOW.timestamp()
    school, none = ("org", "School"), ("org", "")
    expires = (FIXTURE_NOW + timedelta(days=300)).timestamp()
    assert named(found, "tokenwarden_token_expiry_timestamp_seconds") == {
        (school, ("server", "Lab")): expires,
        (none, ("server", "Office")): expires,
        (school, ("server", "Annex")): expires,
    }
    assert named(found, "tokenwarden_token_valid") == {
        (school, ("server", "Lab")): 0,
        (none, ("server", "Office")): 1,
        (school, ("server", "Annex")): 1,
    }
    assert named(found, "tokenwarden_token_apple_rejected")[(school, ("server", "Lab"))] == 1
    assert named(found, "tokenwarden_token_apple_rejected")[(none, ("server", "Office"))] == 0
    confirmed = named(found, "tokenwarden_token_apple_confirmed_timestamp_seconds")
    assert confirmed[(none, ("server", "Office"))] == now
    assert found[("tokenwarden_tokens_apple_rejected",)] == 1
    assert named(found, "tokenwarden_server_terms_pending_timestamp_seconds") == {
        (school, ("server", "Annex")): now
    }
    assert found[("tokenwarden_servers_terms_pending",)] == 1
    assert named(found, "tokenwarden_tokens") == {
        (("days_left", b),): 3 if b == "121+" else 0
        for b in ("expired", "0-7", "8-30", "31-60", "61-120", "121+")
    }
    assert found[("tokenwarden_token_series_limited",)] == 0
    assert named(found, "tokenwarden_replacements_open") == {
        (("reason", "rejected_by_apple"), ("urgency", "immediate")): 1
    }
    assert named(found, "tokenwarden_token_replacement_open_timestamp_seconds") == {
        (school, ("server", "Lab"), ("urgency", "immediate")): now
    }
    assert found[("tokenwarden_replacement_oldest_open_timestamp_seconds",)] == now
    assert found[("tokenwarden_events_dead_total",)] == 1
    assert found[("tokenwarden_scheduler_last_scan_timestamp_seconds",)] == now
    assert found[("tokenwarden_scheduler_scan_interval_seconds",)] == 3600
    assert named(found, "tokenwarden_source_failing") == {
        (("source", "hr"),): 0,
        (("source", "staff"),): 1,
    }
    assert named(found, "tokenwarden_source_last_success_timestamp_seconds") == {
        (("source", "hr"),): now - 3600,
        (("source", "staff"),): 0,
    }
    # the rejection and the terms were told: nothing has turned them into deliveries yet
    assert found[("tokenwarden_outbox_pending",)] == app.redis.xlen(k.OUTBOX) > 0
    # the intake's own counters are there too (this scrape counted once it answered)
    again = scrape(intake)
    assert again[("tokenwarden_intake_requests_total", ("outcome", "2xx"), ("source", "-"))] == 1

    # and no secret is: the tokens' credentials, the source's API token, anything sealed
    text = httpx.get(f"{intake}/metrics").text
    for creds in (lab, office, annex):
        assert not [v for v in creds.values() if v in text]
    assert OKTA_TOKEN not in text
    assert not [sealed for _, _, sealed in app.store.sealed_values() if sealed in text]


def test_a_replacement_by_an_event_dead_letters_and_failing_deliveries_are_counted(
    cli, app, tmp_path, clock, receiver, intake
):
    import dramatiq

    from worker.actors import HANDLE_EVENTS
    from worker.broker import EVENTS_QUEUE

    # Given: a token expiring in 5 days, whose downloader's password changes; a receiver that
    # refuses every delivery; a message that is not a list of events
    assert cli("servers", "add", "Gym").exit_code == 0
    install(cli, clock, tmp_path, "Gym", "coach@school.example", DOWNLOADED, days_left=5)
    added = json.loads(cli("subscriptions", "add", receiver.url, "--json").stdout)
    receiver.default = 503
    with worker_threads(app) as worker:
        emit(cli, "password-changed", "--user", "coach@school.example")
        app.broker.enqueue(
            dramatiq.Message(
                queue_name=EVENTS_QUEUE,
                actor_name=HANDLE_EVENTS,
                args=("a string, not a list",),
                kwargs={},
                options={},
            )
        )
        worker.drain()
        failed = lambda: app.deliveries.deliveries(failed_only=True)  # noqa: E731
        wait_until(lambda: len(failed()) == 1, what="the delivery to fail")
        found = scrape(intake)

    # Then
    token = (("org", ""), ("server", "Gym"))
    assert named(found, "tokenwarden_tokens")[(("days_left", "0-7"),)] == 1
    assert named(found, "tokenwarden_token_valid") == {token: 0}
    assert named(found, "tokenwarden_token_downloaded_timestamp_seconds") == {
        token: DOWNLOADED.timestamp()
    }
    assert named(found, "tokenwarden_replacements_open") == {
        (("reason", "password_changed"), ("urgency", "immediate")): 1
    }
    opened = named(found, "tokenwarden_token_replacement_open_timestamp_seconds")
    assert opened == {(*token, ("urgency", "immediate")): FIXTURE_NOW.timestamp()}
    assert found[("tokenwarden_events_dead_total",)] == 1
    assert named(found, "tokenwarden_deliveries") == {
        (("status", "pending"),): 0,
        (("status", "parked"),): 0,
        (("status", "failed"),): 1,
    }
    assert found[("tokenwarden_outbox_pending",)] == 0  # the worker dispatched all of it
    assert found[("tokenwarden_scheduler_last_scan_timestamp_seconds",)] == 0  # never scanned
    text = httpx.get(f"{intake}/metrics").text
    assert added["secret"] not in text and receiver.url not in text


def test_above_the_series_limit_a_scrape_has_counts_by_days_left_only(cli, app, clock, tmp_path):
    assert cli("servers", "add", "Lab").exit_code == 0
    assert cli("servers", "add", "Office").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "a@school.example", DOWNLOADED, days_left=20)
    install(cli, clock, tmp_path, "Office", "b@school.example", DOWNLOADED, days_left=200)
    for limit, limited in ((2, 0), (1, 1), (0, 1)):
        app.settings = replace(app.settings, metrics_token_series=limit)
        with serving(create_app(app)) as url:
            found = scrape(url)
        assert found[("tokenwarden_token_series_limited",)] == limited
        expiries = named(found, "tokenwarden_token_expiry_timestamp_seconds")
        assert len(expiries) == (0 if limited else 2)
        assert named(found, "tokenwarden_tokens")[(("days_left", "8-30"),)] == 1
        assert named(found, "tokenwarden_tokens")[(("days_left", "121+"),)] == 1


def test_the_scheduler_records_each_scan_and_a_dry_run_records_none(cli, app, clock):
    assert cli("scan", "--dry-run").exit_code == 0
    assert app.estate_metrics.read().last_scan_ms is None
    service = SchedulerService(app)
    service.leader = True
    service.scan_if_leader()
    assert app.estate_metrics.read().last_scan_ms == round(FIXTURE_NOW.timestamp() * 1000)
    clock.now += timedelta(hours=1)
    assert cli("scan").exit_code == 0
    assert app.estate_metrics.read().last_scan_ms == round(clock.now.timestamp() * 1000)


def test_redis_down_answers_503_with_one_line(settings):
    down = App(replace(settings, redis_url="redis://127.0.0.1:9/0"))
    with serving(create_app(down)) as url:
        response = httpx.get(f"{url}/metrics")
    down.close()
    assert response.status_code == 503
    assert response.text == "redis unreachable\n"


@pytest.mark.parametrize("value", ["-1", "ten", "10000001"])
def test_a_bad_series_limit_is_refused_naming_the_setting(value):
    from worker.config import Settings
    from worker.errors import ConfigError

    with pytest.raises(ConfigError, match="TOKENWARDEN_METRICS_TOKEN_SERIES"):
        Settings.from_env({"TOKENWARDEN_METRICS_TOKEN_SERIES": value})
    assert Settings.from_env({}).metrics_token_series == 10_000
    assert Settings.from_env({"TOKENWARDEN_METRICS_TOKEN_SERIES": "0"}).metrics_token_series == 0

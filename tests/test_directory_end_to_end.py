"""Directory checks end to end, for each kind against its fake (which checks credentials as the
provider does): tokens installed, people changed in the directory, `sources check` and the
scheduler's rounds, and exactly the replacements and outgoing events expected, once; a
directory that fails (500, timeout, an error page, a revoked credential) never makes a
departure."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from events import catalog
from scheduler.directories import DirectoryRounds
from tests.conftest import Clock
from tests.entra_fake import entra_fake  # noqa: F401
from tests.google_fake import google_fake  # noqa: F401
from tests.helpers import every_redis_byte, install, replacements, wait_until
from tests.okta_api_fake import okta_api_fake  # noqa: F401

#: The wall clock here, not the tests' usual fixed one: Google keeps 180 days of reports back
#: from today, whatever clock tokenwarden is given.
NOW = datetime.now(UTC).replace(microsecond=0)
DOWNLOADED = NOW - timedelta(days=20)

KINDS = {"okta_api_fake": "okta-api", "entra_fake": "entra", "google_fake": "google"}

#: The people, and what happens to each in the directory after they downloaded their token.
PEOPLE = {
    "Lab": "ann@school.example",  # changes her password
    "Office": "bob@school.example",  # is disabled
    "Library": "cat@school.example",  # is deleted
    "Gym": "dan@school.example",  # changed his password before he downloaded: nothing
    "Hall": "eve@school.example",  # nothing happens to her
}


@pytest.fixture
def clock():
    return Clock(NOW)


@pytest.fixture(params=list(KINDS))
def kind(request):
    return KINDS[request.param]


@pytest.fixture
def fake(request, kind):
    return request.getfixturevalue(next(f for f, k in KINDS.items() if k == kind))


@pytest.fixture
def settings(settings, fake):
    # Short timeouts: a hanging directory is given up on quickly.
    return replace(settings, directories=fake.directory_settings(timeout_s=1.0))


def add_source_args(fake, tmp_path) -> tuple[list[str], str | None]:
    options, credentials = fake.source_options(), fake.credentials()
    args = []
    for name, value in options.items():
        args += [f"--{name.replace('_', '-')}", value]
    if "service_account" in credentials:
        key = tmp_path / "service-account.json"
        key.write_text(json.dumps(credentials["service_account"]))
        return [*args, "--service-account-file", str(key)], None
    [(name, secret)] = credentials.items()
    return [*args, f"--{name.replace('_', '-')}", "-"], secret + "\n"


@pytest.fixture
def source(cli, fake, kind, tmp_path):
    args, stdin = add_source_args(fake, tmp_path)
    result = cli(
        "sources", "add", "staff", "--kind", kind, "--domain", "school.example", *args, input=stdin
    )
    assert result.exit_code == 0, result.output
    return "staff"


@pytest.fixture
def estate(cli, clock, tmp_path, fake):
    for server, user in PEOPLE.items():
        fake.add_user(user, password_changed_at=DOWNLOADED - timedelta(days=40))
        assert cli("servers", "add", server).exit_code == 0
        install(cli, clock, tmp_path, server, user, DOWNLOADED)
    return PEOPLE


@pytest.fixture
def subscribed(cli, receiver):
    assert cli("subscriptions", "add", receiver.url).exit_code == 0
    return receiver


def received(receiver, event_type=catalog.REPLACEMENT_REQUIRED) -> list[dict]:
    events = [json.loads(r.body) for r in receiver.received]
    return [e for e in events if e["type"] == event_type]


def check(cli, name="staff"):
    result = cli("sources", "check", name, "--json")
    return result.exit_code, json.loads(result.stdout)


def open_reasons(cli) -> dict[str, list[str]]:
    return {r["server"]: sorted(x["type"] for x in r["reasons"]) for r in replacements(cli)}


def test_changes_in_the_directory_become_replacements_and_events_once(
    app, cli, fake, source, estate, worker, subscribed
):
    fake.set_password_changed("ann@school.example", DOWNLOADED + timedelta(days=2))
    fake.disable("bob@school.example")
    fake.delete("cat@school.example")
    fake.set_password_changed("dan@school.example", DOWNLOADED - timedelta(days=1))
    code, report = check(cli)
    assert code == 1, report
    outcomes = {f["user"]: f["outcome"] for f in report["findings"]}
    assert outcomes == {
        "ann@school.example": "password_changed",
        "bob@school.example": "left",
        "cat@school.example": "not_found",
        "dan@school.example": "unchanged",
        "eve@school.example": "unchanged",
    }
    worker.drain()
    assert open_reasons(cli) == {
        "Lab": [catalog.PASSWORD_CHANGED],
        "Office": [catalog.USER_LEFT],
        "Library": [catalog.USER_LEFT],
    }
    wait_until(lambda: len(received(subscribed)) >= 3, what="three webhooks")
    # Again: nothing new is sent, and nothing arrives twice.
    code, report = check(cli)
    assert code == 0 and report["events"] == 0
    worker.drain()
    assert sorted(e["data"]["server"] for e in received(subscribed)) == ["Lab", "Library", "Office"]


def test_the_schedulers_round_finds_what_changed_since(
    app, cli, clock, fake, source, estate, worker
):
    assert check(cli)[0] == 0
    fake.disable("eve@school.example")
    rounds = DirectoryRounds(app, lambda: True)
    app.sources.schedule("staff", clock.now)
    rounds.tick()
    wait_until(lambda: app.sources.next_round("staff") > clock.now, what="the round")
    rounds.stop()
    worker.drain()
    assert open_reasons(cli) == {"Hall": [catalog.USER_LEFT]}


@pytest.mark.parametrize("failure", ["500", "html-404", "hang"])
def test_a_failing_directory_makes_no_departure(app, cli, fake, source, estate, worker, failure):
    fake.delete("cat@school.example")  # would be a departure, if the directory were believed
    if failure == "500":
        fake.fail(500)
    elif failure == "html-404":
        fake.fail_html_404()
    else:
        fake.hang(5)
    try:
        code, report = check(cli)
    finally:
        fake.hang(0)
    assert code == 3, report
    assert report["events"] == 0 and "not_found" not in report["counts"]
    worker.drain()
    assert replacements(cli) == []


def test_a_revoked_credential_is_reported_once_and_shown(
    app, cli, fake, source, estate, subscribed, worker
):
    assert check(cli)[0] == 0
    fake.revoke_credentials()
    for _ in range(2):
        code, report = check(cli)
        assert code == 2 and report["error"], report
    listed = {d["name"]: d for d in json.loads(cli("sources", "list", "--json").stdout)}
    assert listed["staff"]["failing_since"] is not None
    assert listed["staff"]["last_success"] is not None
    worker.drain()
    wait_until(lambda: received(subscribed, catalog.SOURCE_FAILING), what="the report")
    assert len(received(subscribed, catalog.SOURCE_FAILING)) == 1


def test_no_credential_in_logs_output_or_redis(app, cli, fake, source, estate, redis_url, caplog):
    caplog.set_level(logging.DEBUG)
    fake.fail(500, times=1)
    results = [cli("sources", "check", "staff"), cli("sources", "list", "--json")]
    fake.revoke_credentials()
    results.append(cli("sources", "check", "staff"))
    credential = fake.credentials()
    secrets = [v for v in credential.values() if isinstance(v, str)]
    if "service_account" in credential:  # a line of the private key's base64
        secrets.append(credential["service_account"]["private_key"].splitlines()[1])
    everything = "\n".join([caplog.text, *(r.output for r in results)])
    stored = every_redis_byte(redis_url)
    for secret in secrets:
        assert secret not in everything
        assert secret.encode() not in stored

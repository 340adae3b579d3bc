"""Okta event hooks at /sources/NAME/okta: the one-time verification, then deliveries of System
Log events, through a real uvicorn serving the intake, real Redis and a real dramatiq worker.
The deliveries are shaped as Okta's documentation shows them; the values are made up."""

from __future__ import annotations

import io
import json
import uuid
from datetime import timedelta

import httpx
import pytest

from events import catalog
from tests.helpers import DOWNLOADED, every_redis_byte, install, quiet_logging, replacements
from worker.logs import configure_logging

OKTA_ORG = "https://springfield.okta.com"
HOOK = f"{OKTA_ORG}/api/v1/eventHooks/who4k2hz3kdfA8Xxq1d7"


def add_source(cli, name="okta-staff", *extra):
    result = cli("sources", "add", name, "--kind", "okta", "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["secret"]


def log_event(event_type, login, *, published, result="SUCCESS", event_uuid=None):
    """A System Log event as Okta's event hooks carry it (an admin acting on `login`)."""
    return {
        "uuid": event_uuid or str(uuid.uuid4()),
        "published": published,
        "eventType": event_type,
        "version": "0",
        "displayMessage": "made up for the tests",
        "severity": "INFO",
        "client": {
            "userAgent": {"rawUserAgent": "Mozilla/5.0", "os": "Mac OS X", "browser": "CHROME"},
            "zone": "null",
            "device": "Computer",
            "id": None,
            "ipAddress": "192.0.2.10",
            "geographicalContext": None,
        },
        "device": None,
        "actor": {
            "id": "00u1admin0000000000x7",
            "type": "User",
            "alternateId": "it-admin@school.edu",
            "displayName": "IT Admin",
            "detailEntry": None,
        },
        "outcome": {"result": result, "reason": None if result == "SUCCESS" else "denied"},
        "target": [
            {
                "id": "00u1teacher00000000x7",
                "type": "User",
                "alternateId": login,
                "displayName": "Edna Krabappel",
                "detailEntry": None,
            },
            {
                "id": "0oa1app000000000000x7",
                "type": "AppInstance",
                "alternateId": "Apple School Manager",
                "displayName": "Apple School Manager",
                "detailEntry": None,
            },
        ],
        "transaction": {"type": "WEB", "id": "Y2s1TqhXy8L7rbpGkCzwKQAAAvE", "detail": {}},
        "debugContext": {"debugData": {"requestUri": "/api/v1/users/00u1teacher00000000x7"}},
        "legacyEventType": None,
        "authenticationContext": {"externalSessionId": "102a1b2c3d4e5f", "interface": None},
        "securityContext": {"asNumber": None, "isp": None, "domain": None, "isProxy": None},
        "request": {"ipChain": [{"ip": "192.0.2.10", "version": "V4"}]},
    }


def delivery(*log_events):
    return {
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": HOOK,
        "eventId": str(uuid.uuid4()),
        "data": {"events": list(log_events)},
        "eventTime": "2025-03-01T08:59:58.000Z",
        "contentType": "application/json",
    }


def post(intake, secret, body, *, name="okta-staff", content_type="application/json"):
    """POST as Okta does: the Authorization header holds the secret exactly as configured."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    if secret is not None:
        headers["Authorization"] = secret
    return httpx.post(f"{intake}/sources/{name}/okta", content=content, headers=headers)


def audit(cli, kind):
    entries = json.loads(cli("events", "list", "--json").stdout)
    return [e for e in entries if e["kind"] == kind]


@pytest.fixture
def lab(cli, clock, tmp_path):
    """Server Lab with a token downloaded by Teacher@School.edu 20 days ago."""
    assert cli("servers", "add", "Lab", "--org", "School").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "Teacher@School.edu", DOWNLOADED, days_left=345)
    return "Lab"


@pytest.fixture
def an_hour_ago(clock):
    return (clock.now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.123Z")


# ---- the one-time verification ------------------------------------------------------------


def test_the_verification_challenge_is_echoed_to_the_right_secret(cli, intake):
    secret = add_source(cli)
    challenge = "Me_rShK8JHsTnbyYrWXCEoMGbM_zsZ6k0hLPZ_Pg"
    answer = httpx.get(
        f"{intake}/sources/okta-staff/okta",
        headers={"X-Okta-Verification-Challenge": challenge, "Authorization": secret},
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"verification": challenge}


@pytest.mark.parametrize("authorization", [None, "tws_" + "w" * 43, "Bearer wrong"])
def test_the_verification_is_refused_without_the_secret(cli, intake, authorization):
    add_source(cli)
    headers = {"X-Okta-Verification-Challenge": "challenge-value-1234"}
    if authorization is not None:
        headers["Authorization"] = authorization
    answer = httpx.get(f"{intake}/sources/okta-staff/okta", headers=headers)
    assert answer.status_code == 401
    assert answer.content == b""  # no detail, and never the challenge


def test_a_get_without_a_challenge_is_400_with_one_line(cli, intake):
    secret = add_source(cli)
    answer = httpx.get(f"{intake}/sources/okta-staff/okta", headers={"Authorization": secret})
    assert answer.status_code == 400
    assert "X-Okta-Verification-Challenge" in answer.json()["error"]
    assert "\n" not in answer.json()["error"]


# ---- deliveries -----------------------------------------------------------------------------


def test_a_password_update_opens_the_replacement_of_the_downloaders_token(
    cli, intake, worker, lab, an_hour_ago
):
    # Given an Okta source (the secret sent bare, as the admin typed it into Okta)
    secret = add_source(cli)
    event = log_event("user.account.update_password", "teacher@school.edu", published=an_hour_ago)
    # When Okta delivers the password update of the token's downloader
    answer = post(intake, secret, delivery(event))
    assert (answer.status_code, answer.content) == (200, b"")
    worker.drain()
    # Then the replacement is open, the reason being Okta's event (its uuid, its time)
    [opened] = replacements(cli)
    assert opened["server"] == "Lab"
    assert opened["urgency"] == "immediate"
    [reason] = opened["reasons"]
    assert (reason["type"], reason["id"]) == (catalog.PASSWORD_CHANGED, event["uuid"])
    assert reason["time"] == an_hour_ago[:19] + "Z"
    [received] = audit(cli, "event")
    assert received["event"]["source"] == "urn:tokenwarden:okta:okta-staff"
    assert received["event"]["data"] == {"user": "teacher@school.edu"}


def test_a_reset_password_sent_with_bearer_is_a_password_change_too(
    cli, intake, worker, lab, an_hour_ago
):
    secret = add_source(cli)
    event = log_event("user.account.reset_password", "Teacher@School.edu", published=an_hour_ago)
    assert post(intake, f"Bearer {secret}", delivery(event)).status_code == 200
    worker.drain()
    [opened] = replacements(cli)
    assert [r["type"] for r in opened["reasons"]] == [catalog.PASSWORD_CHANGED]


@pytest.mark.parametrize(
    "okta_type",
    ["user.lifecycle.deactivate", "user.lifecycle.suspend", "user.lifecycle.delete.initiated"],
)
def test_a_deactivation_suspension_or_deletion_is_a_departure(
    cli, intake, worker, lab, an_hour_ago, okta_type
):
    secret = add_source(cli)
    event = log_event(okta_type, "teacher@school.edu", published=an_hour_ago)
    assert post(intake, secret, delivery(event)).status_code == 200
    worker.drain()
    [opened] = replacements(cli)
    assert [(r["type"], r["id"]) for r in opened["reasons"]] == [(catalog.USER_LEFT, event["uuid"])]


def test_failures_and_other_types_are_acknowledged_and_kept_as_ignored_with_why(
    cli, app, intake, worker, lab, an_hour_ago
):
    secret = add_source(cli)
    failed = log_event(
        "user.account.update_password", "teacher@school.edu", published=an_hour_ago,
        result="FAILURE",
    )  # fmt: skip
    session = log_event("user.session.start", "teacher@school.edu", published=an_hour_ago)
    good = log_event("user.lifecycle.deactivate", "teacher@school.edu", published=an_hour_ago)
    # When one delivery mixes a failed password update, a sign-in and a deactivation
    assert post(intake, secret, delivery(failed, session, good)).status_code == 200
    worker.drain()
    # Then only the deactivation is decided on
    [opened] = replacements(cli)
    assert [r["id"] for r in opened["reasons"]] == [good["uuid"]]
    assert len(audit(cli, "event")) == 1
    # And the other two are in the audit trail, each with why; nothing is a dead letter
    ignored = {e["event"]["id"]: e for e in audit(cli, "ignored")}
    assert set(ignored) == {failed["uuid"], session["uuid"]}
    assert "outcome 'FAILURE'" in ignored[failed["uuid"]]["note"]
    assert "'user.session.start' means nothing for tokens" in ignored[session["uuid"]]["note"]
    assert ignored[session["uuid"]]["event"]["data"]["user"] == "teacher@school.edu"
    assert app.store.events.dead_letters() == []


def test_a_delivery_sent_twice_counts_once(cli, app, intake, worker, lab, an_hour_ago):
    secret = add_source(cli)
    body = delivery(
        log_event("user.lifecycle.suspend", "teacher@school.edu", published=an_hour_ago)
    )
    # When Okta retries a delivery (it did not see our 200 in time)
    assert post(intake, secret, body).status_code == 200
    assert post(intake, secret, body).status_code == 200
    worker.drain()
    # Then its event counts once
    [opened] = replacements(cli)
    assert len(opened["reasons"]) == 1
    assert (
        len([e for e in app.store.events.outbox() if e["type"] == catalog.REPLACEMENT_REQUIRED])
        == 1
    )


def test_the_directory_domain_is_mapped_to_the_managed_apple_account_domain(
    cli, intake, worker, clock, tmp_path, an_hour_ago
):
    assert cli("servers", "add", "Lab").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "teacher@appleid.school.edu", DOWNLOADED)
    secret = add_source(cli, "okta-staff", "--map-domain", "school.edu=appleid.school.edu")
    event = log_event("user.account.update_password", "Teacher@School.EDU", published=an_hour_ago)
    assert post(intake, secret, delivery(event)).status_code == 200
    worker.drain()
    [opened] = replacements(cli)
    assert opened["server"] == "Lab"
    [received] = audit(cli, "event")
    assert received["event"]["data"] == {"user": "Teacher@appleid.school.edu"}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"target": []}, "no target of type User"),
        ({"target": [{"type": "AppInstance", "alternateId": "x"}]}, "no target of type User"),
        ({"published": "yesterday"}, "field 'published' is not an RFC 3339 time"),
        ({"published": "2031-01-01T00:00:00Z"}, "has a time in the future"),
        ({"uuid": None}, "field 'uuid'"),
        ({"outcome": None}, "outcome 'missing', not SUCCESS"),
        ({"eventType": 7}, "Okta event type 'int' means nothing"),
    ],
)
def test_one_unusable_event_is_ignored_with_why_and_the_rest_of_the_delivery_counts(
    cli, app, intake, worker, lab, an_hour_ago, change, why
):
    secret = add_source(cli)
    broken = log_event("user.lifecycle.deactivate", "teacher@school.edu", published=an_hour_ago)
    broken.update(change)
    good = log_event("user.account.update_password", "teacher@school.edu", published=an_hour_ago)
    assert post(intake, secret, delivery(broken, good)).status_code == 200
    worker.drain()
    [opened] = replacements(cli)
    assert [r["id"] for r in opened["reasons"]] == [good["uuid"]]
    [ignored] = audit(cli, "ignored")
    assert why in ignored["note"]
    assert app.store.events.dead_letters() == []


# ---- bad input ------------------------------------------------------------------------------


def test_refusals_change_nothing_stored(cli, intake, snapshot, an_hour_ago):
    secret = add_source(cli)
    assert cli("sources", "add", "hr", "--kind", "cloudevents").exit_code == 0
    good = delivery(log_event("user.lifecycle.deactivate", "a@school.edu", published=an_hour_ago))
    too_many = delivery(*[{"eventType": "user.session.start"}] * 1001)
    before = snapshot()
    cases = [
        (post(intake, None, good), 401),
        (post(intake, "tws_" + "x" * 43, good), 401),
        (post(intake, secret, good, name="nowhere"), 404),
        (post(intake, secret, good, name="hr"), 404),  # another kind's source
        (post(intake, secret, b"{" * (1024 * 1024 + 1)), 413),
        (post(intake, secret, good, content_type="text/plain"), 415),
        (post(intake, secret, b"", content_type="application/json; charset=utf-8"), 400),
        (post(intake, secret, b'{"data": '), 400),
        (post(intake, secret, b"[" * 100_000), 400),
        (post(intake, secret, [good]), 400),
        (post(intake, secret, {"eventType": "com.okta.event_hook", "data": {}}), 400),
        (post(intake, secret, {"data": {"events": {"0": {}}}}), 400),
        (post(intake, secret, too_many), 400),
    ]
    for answer, status in cases:
        assert answer.status_code == status, answer.text
        if status == 401:
            assert answer.content == b""
        else:
            [line] = answer.json()["error"].splitlines()
            assert "Traceback" not in line
    assert snapshot() == before


def test_the_400s_say_why_in_one_line(cli, intake):
    secret = add_source(cli)
    assert post(intake, secret, b'{"data": ').json()["error"].startswith("the body is not JSON")
    no_events = post(intake, secret, {"data": {}}).json()["error"]
    assert 'with "data": {"events": [...]}' in no_events
    too_many = post(intake, secret, delivery(*[{}] * 1001)).json()["error"]
    assert too_many == "the delivery carries 1001 events; at most 1000 are taken"


def test_secrets_are_neither_logged_nor_stored(cli, intake, worker, lab, redis_url, an_hour_ago):
    secret = add_source(cli)
    wrong = "tws_" + "w" * 43
    challenge = "challenge-" + "c" * 30
    log = io.StringIO()
    configure_logging("debug", "json", stream=log)
    try:
        url = f"{intake}/sources/okta-staff/okta"
        for authorization in (secret, wrong):
            httpx.get(url, headers={"Authorization": authorization,
                                    "X-Okta-Verification-Challenge": challenge})  # fmt: skip
        event = log_event(
            "user.account.update_password", "teacher@school.edu", published=an_hour_ago
        )
        assert post(intake, secret, delivery(event)).status_code == 200
        assert post(intake, wrong, delivery(event)).status_code == 401
        assert post(intake, secret, b"not json").status_code == 400
        worker.drain()
    finally:
        quiet_logging()
    logged = log.getvalue()
    # the refusals were logged, with the source and the client, but no secret
    refusals = [json.loads(line) for line in logged.splitlines() if "intake_refused" in line]
    assert {(r["source"], r["status"], r["client"]) for r in refusals} >= {
        ("okta-staff", 401, "127.0.0.1"),
        ("okta-staff", 400, "127.0.0.1"),
    }
    stored = every_redis_byte(redis_url)
    for value in (secret, wrong, secret[4:]):
        assert value not in logged
        assert value.encode() not in stored
    assert len(replacements(cli)) == 1


# ---- the translation alone (pure) -----------------------------------------------------------


def test_an_ignored_event_keeps_a_few_fields_cut_short_never_the_whole_log_event(clock):
    from events import okta

    event = log_event("user.session.start", "x" * 5000 + "@school.edu", published="2025-03-01")
    event["uuid"] = "\ud800" + "u" * 5000  # a lone surrogate, as JSON may carry
    [ignored] = okta.translate([event], source="urn:s", map_user=str, now=clock.now).ignored
    assert set(ignored.record) == {"source", "id", "type", "time", "data"}
    assert set(ignored.record["data"]) == {"user", "outcome"}
    assert len(ignored.record["data"]["user"]) == 256
    assert ignored.record["id"] == "?" + "u" * 255
    # storable and printable as it is
    json.dumps(ignored.record, ensure_ascii=False).encode("utf-8")


def test_every_mapped_okta_type_is_one_of_tokenwardens_user_events():
    from events import okta

    assert set(okta.EVENT_TYPES.values()) == catalog.USER_EVENTS
    assert sorted(okta.EVENT_TYPES) == [
        "user.account.reset_password",
        "user.account.update_password",
        "user.lifecycle.deactivate",
        "user.lifecycle.delete.initiated",
        "user.lifecycle.suspend",
    ]

"""CloudEvents over HTTP (`POST /sources/NAME/events`): the binding's structured, batched and
binary modes and the webhook handshake, through a real uvicorn, real Redis and a real worker."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from structlog.testing import capture_logs

from events import catalog
from tests.helpers import DOWNLOADED, every_redis_byte, install, replacements
from worker.broker import EVENTS_QUEUE
from worker.intake.ce_binding import MAX_BATCH_EVENTS
from worker.intake.context import MAX_BODY_BYTES
from worker.store import keys as k

STRUCTURED = {"Content-Type": "application/cloudevents+json"}
BATCH = {"Content-Type": "application/cloudevents-batch+json; charset=utf-8"}
NOW = "2025-03-01T08:59:00Z"  # a minute before the test clock's now


def add_source(cli, name, kind, *extra):
    result = cli("sources", "add", name, "--kind", kind, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def password_changed(user, event_id="hr-1", **extra):
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "urn:hr:workday",
        "type": catalog.PASSWORD_CHANGED,
        "time": NOW,
        "datacontenttype": "application/json",
        "data": {"user": user},
        **extra,
    }


@pytest.fixture
def hr(cli):
    """A cloudevents source whose directory logins are @school.edu and Apple accounts
    @appleid.school.edu; yields (events URL path, secret)."""
    added = add_source(cli, "hr", "cloudevents", "--map-domain", "school.edu=appleid.school.edu")
    return added["path"], added["secret"]


@pytest.fixture
def lab(cli, clock, tmp_path):
    """Server Lab with a token downloaded by teacher@appleid.school.edu 20 days ago."""
    assert cli("servers", "add", "Lab", "--org", "School").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "teacher@appleid.school.edu", DOWNLOADED)
    return "Lab"


def post(intake, hr, body, headers, secret=None):
    path, real_secret = hr
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    auth = {"Authorization": f"Bearer {secret or real_secret}"}
    return httpx.post(f"{intake}{path}", content=content, headers={**auth, **headers})


def queued(redis_client) -> int:
    """Messages waiting on the events queue (none is handled: no worker runs)."""
    return redis_client.llen(k.broker_queue(EVENTS_QUEUE))


def opened_for(cli, event_id):
    [opened] = replacements(cli)
    assert (opened["server"], opened["status"], opened["urgency"]) == ("Lab", "open", "immediate")
    assert [r["id"] for r in opened["reasons"]] == [event_id]
    return opened


def test_a_structured_event_opens_a_replacement(cli, intake, hr, lab, worker):
    # When the directory posts one event in structured mode, its user in the directory's domain
    response = post(intake, hr, password_changed("Teacher@School.edu"), STRUCTURED)
    # Then it is accepted, and the worker, with the domain mapped, opens the replacement
    assert (response.status_code, response.json()) == (202, {"accepted": 1})
    worker.drain()
    opened_for(cli, "hr-1")


def test_a_batch_opens_a_replacement_and_counts_every_event(cli, app, intake, hr, lab, worker):
    batch = [
        password_changed("someone@school.edu", "hr-1"),
        password_changed("teacher@school.edu", "hr-2"),
        {**password_changed("other@elsewhere.org", "hr-3"), "type": catalog.USER_LEFT},
    ]
    response = post(intake, hr, batch, BATCH)
    assert (response.status_code, response.json()) == (202, {"accepted": 3})
    worker.drain()
    opened_for(cli, "hr-2")
    # The user of another domain is left as sent (no token of theirs, nothing decided)
    users = [e["event"]["data"]["user"] for e in app.store.events.audit() if e["kind"] == "event"]
    assert sorted(users) == [
        "other@elsewhere.org",
        "someone@appleid.school.edu",
        "teacher@appleid.school.edu",
    ]


def test_a_binary_event_opens_a_replacement(cli, app, intake, hr, lab, worker):
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "ce-specversion": "1.0",
        "ce-id": "hr%20binary%E2%82%AC",  # percent-encoded, as the binding says
        "ce-source": "urn:hr:workday",
        "ce-type": catalog.PASSWORD_CHANGED,
        "ce-time": NOW,
        "ce-subject": "teacher",
    }
    response = post(intake, hr, {"user": "teacher@SCHOOL.edu"}, headers)
    assert (response.status_code, response.json()) == (202, {"accepted": 1})
    worker.drain()
    opened_for(cli, "hr binary€")
    [entry] = [e for e in app.store.events.audit() if e["kind"] == "event"]
    assert entry["event"]["subject"] == "teacher"
    assert entry["event"]["data"] == {"user": "teacher@appleid.school.edu"}


def test_plain_json_is_taken_as_a_structured_event(cli, intake, hr, lab, worker):
    response = post(
        intake, hr, password_changed("teacher@school.edu"), {"Content-Type": "application/json"}
    )
    assert response.status_code == 202
    worker.drain()
    opened_for(cli, "hr-1")


def test_the_same_event_in_two_posts_is_decided_once(cli, app, intake, hr, lab, worker):
    event = password_changed("teacher@school.edu", "hr-4711")
    assert post(intake, hr, event, STRUCTURED).status_code == 202
    assert post(intake, hr, [event], BATCH).status_code == 202
    worker.drain()
    [opened] = replacements(cli)
    assert len(opened["reasons"]) == 1
    assert len([e for e in app.store.events.audit() if e["kind"] == "event"]) == 1


def test_an_empty_batch_is_accepted_as_nothing(intake, hr, redis_client):
    # (CloudEvents: "The batch MAY be empty")
    response = post(intake, hr, [], BATCH)
    assert (response.status_code, response.json()) == (202, {"accepted": 0})
    assert queued(redis_client) == 0


# Refusals: each changes nothing stored, and says why in one line.


def assert_refused_with(response, status, message, snapshot_before, snapshot):
    assert response.status_code == status, response.text
    why = response.json()["error"]
    assert message in why, why
    assert "\n" not in why and "Traceback" not in response.text
    assert snapshot() == snapshot_before


@pytest.mark.parametrize(
    ("secret", "header"),
    [(None, None), ("tws_" + "x" * 43, None), (None, "Basic dXNlcjpwYXNz")],
    ids=["no secret", "wrong secret", "another scheme"],
)
def test_a_missing_or_wrong_secret_gets_401_with_no_detail(intake, hr, snapshot, secret, header):
    before = snapshot()
    headers = dict(STRUCTURED)
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    if header:
        headers["Authorization"] = header
    url = f"{intake}{hr[0]}"
    response = httpx.post(url, json=password_changed("a@school.edu"), headers=headers)
    assert response.status_code == 401
    assert response.content == b""
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert snapshot() == before


def test_an_unknown_source_or_one_of_another_kind_is_404(cli, intake, hr, snapshot):
    okta = add_source(cli, "okta-staff", "okta")
    before = snapshot()
    for name, secret in (("nowhere", hr[1]), ("okta-staff", okta["secret"])):
        response = httpx.post(
            f"{intake}/sources/{name}/events",
            json=password_changed("a@school.edu"),
            headers={**STRUCTURED, "Authorization": f"Bearer {secret}"},
        )
        assert response.status_code == 404, name
    assert snapshot() == before


def test_a_body_over_a_mebibyte_is_413_with_or_without_content_length(intake, hr, snapshot):
    before = snapshot()
    big = b"[" + b" " * MAX_BODY_BYTES + b"]"
    assert post(intake, hr, big, BATCH).status_code == 413

    def chunks():  # sent chunked: no Content-Length to refuse it by
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    path, secret = hr
    response = httpx.post(
        f"{intake}{path}",
        content=chunks(),
        headers={**BATCH, "Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 413
    assert "Content-Length" not in response.request.headers
    assert snapshot() == before


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "application/cloudevents+avro",
        "application/cloudevents+json; charset=latin-1",
        "",
    ],
)
def test_another_content_type_is_415(intake, hr, snapshot, content_type):
    before = snapshot()
    response = post(intake, hr, password_changed("a@school.edu"), {"Content-Type": content_type})
    assert_refused_with(response, 415, "is not taken", before, snapshot)


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b'{"specversion": "1.0", "id": ', STRUCTURED, "is not JSON (line 1, column 30)"),
        (b"[{]", BATCH, "the body is not JSON (line 1, column 3)"),
        (b"\xff\xfe[]", BATCH, "is not JSON"),
        (b"[" * 5000 + b"]" * 5000, BATCH, "nests arrays or objects more than"),
        (b'{"n": ' + b"1" * 5000 + b"}", STRUCTURED, "a number too long to read"),
        (b'{"id": "x"}', BATCH, "a batch must be a JSON array of events, not an object"),
        (b"[1, 2]", {"Content-Type": "application/json"}, "must be a JSON object, not an array"),
        (b"", STRUCTURED, "is not JSON"),
    ],
    ids=["cut", "batch", "not utf-8", "deep", "long number", "object", "array", "empty"],
)
def test_malformed_json_is_400_with_one_line_of_why(intake, hr, snapshot, body, headers, message):
    before = snapshot()
    assert_refused_with(post(intake, hr, body, headers), 400, message, before, snapshot)


def test_a_batch_with_one_bad_event_is_refused_whole_listing_each_problem(
    intake, hr, redis_client, snapshot
):
    before = snapshot()
    batch = [
        password_changed("teacher@school.edu", "hr-1"),
        {**password_changed("x@school.edu", "hr-2"), "type": "com.example.other"},
        password_changed("y@school.edu", "hr-3"),
        {**password_changed("z@school.edu", "hr-4"), "data": {}},
    ]
    response = post(intake, hr, batch, BATCH)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "2 of 4 events are invalid; none was taken"
    assert [e["index"] for e in body["errors"]] == [1, 3]
    assert "unknown event type 'com.example.other'" in body["errors"][0]["error"]
    assert "field 'data.user' is missing" in body["errors"][1]["error"]
    assert queued(redis_client) == 0
    assert snapshot() == before


def test_a_batch_larger_than_the_limit_is_refused(intake, hr, snapshot):
    before = snapshot()
    batch = [password_changed("a@school.edu", f"e-{i}") for i in range(MAX_BATCH_EVENTS + 1)]
    response = post(intake, hr, batch, BATCH)
    assert_refused_with(response, 400, f"at most {MAX_BATCH_EVENTS} are taken", before, snapshot)


def test_an_event_from_the_future_is_400(intake, hr, snapshot, clock):
    before = snapshot()
    later = (clock.now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    response = post(intake, hr, password_changed("a@school.edu", time=later), STRUCTURED)
    assert_refused_with(response, 400, "has a time in the future", before, snapshot)


BINARY = {
    "Content-Type": "application/json",
    "ce-specversion": "1.0",
    "ce-id": "b-1",
    "ce-source": "urn:hr",
    "ce-type": catalog.USER_LEFT,
}


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({k: v for k, v in BINARY.items() if k != "ce-type"}, "field 'type' is missing"),
        ({**BINARY, "ce-datacontenttype": "application/json"}, "not ce-datacontenttype"),
        ({**BINARY, "ce-not_an_attribute": "x"}, "names no CloudEvents attribute"),
        ({**BINARY, "ce-id": "%C0%A0"}, "not UTF-8"),
        ({**BINARY, "ce-time": "2025-03-01"}, "field 'time' is not an RFC 3339 time"),
    ],
    ids=["no type", "datacontenttype", "bad name", "overlong utf-8", "bad time"],
)
def test_a_bad_binary_event_is_400(intake, hr, snapshot, headers, message):
    before = snapshot()
    response = post(intake, hr, {"user": "a@school.edu"}, headers)
    assert_refused_with(response, 400, message, before, snapshot)


def test_binary_data_must_be_a_json_object(intake, hr, snapshot):
    before = snapshot()
    response = post(intake, hr, b"", BINARY)
    assert_refused_with(response, 400, "must be a JSON object, not nothing", before, snapshot)


# The webhook validation handshake ("HTTP 1.1 Web Hooks for Event Delivery", section 4)


def handshake(intake, hr, headers, secret=None):
    path, real_secret = hr
    auth = {"Authorization": f"Bearer {secret or real_secret}"}
    return httpx.options(f"{intake}{path}", headers={**auth, **headers})


def test_the_webhook_handshake_consents_to_the_origin(intake, hr, snapshot):
    before = snapshot()
    response = handshake(
        intake,
        hr,
        {
            "WebHook-Request-Origin": "eventemitter.example.com",
            "WebHook-Request-Rate": "120",
            "WebHook-Request-Callback": "https://example.com/confirm?id=1&key=k3y",
        },
    )
    assert response.status_code == 200
    assert response.headers["WebHook-Allowed-Origin"] == "eventemitter.example.com"
    assert response.headers["WebHook-Allowed-Rate"] == "*"
    assert "POST" in response.headers["Allow"]
    assert snapshot() == before


def test_the_webhook_handshake_needs_the_secret_and_an_origin(intake, hr):
    origin = {"WebHook-Request-Origin": "eventemitter.example.com"}
    refused = handshake(intake, hr, origin, secret="tws_" + "y" * 43)
    assert refused.status_code == 401
    assert "WebHook-Allowed-Origin" not in refused.headers
    assert handshake(intake, hr, {}).status_code == 400
    assert handshake(intake, hr, {**origin, "WebHook-Request-Rate": "fast"}).status_code == 400


# Secrets stay out of logs and Redis


def test_refusals_are_logged_with_source_and_client_never_the_secret(cli, intake, hr, worker):
    secret = hr[1]
    with capture_logs() as logs:
        post(intake, hr, b"{", STRUCTURED)
        post(intake, hr, password_changed("a@school.edu"), {"Content-Type": "text/plain"})
        post(intake, hr, password_changed("a@school.edu"), STRUCTURED, secret=secret[:-1] + "x")
        post(intake, hr, [password_changed("teacher@school.edu")], BATCH)
        worker.drain()
    refusals = [line for line in logs if line["event"] == "intake_refused"]
    assert [(r["source"], r["status"]) for r in refusals] == [("hr", 400), ("hr", 415), ("hr", 401)]
    assert all(r["client"] == "127.0.0.1" for r in refusals)
    assert secret not in repr(logs)
    assert secret[:-1] not in repr(logs)


def test_the_secret_is_never_in_redis(intake, hr, lab, worker, redis_url):
    secret = hr[1]
    assert post(intake, hr, password_changed("teacher@school.edu"), STRUCTURED).status_code == 202
    post(intake, hr, b"{", STRUCTURED)
    worker.drain()
    stored = every_redis_byte(redis_url)
    assert secret.encode() not in stored
    assert secret[4:20].encode() not in stored

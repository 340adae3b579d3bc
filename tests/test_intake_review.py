"""The security review of the intake's Okta and CloudEvents kinds: each defect it found, as a test
that failed before its fix. Through a real uvicorn serving the intake, real Redis and, where the
workers' side matters, a real dramatiq worker."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import catalog, okta
from events.cloudevent import MAX_EVENT_BYTES, MAX_FIELD_CHARS, MalformedEvent, parse_event
from tests.helpers import DOWNLOADED, install, replacements
from worker.broker import EVENTS_QUEUE
from worker.intake.sources import OKTA, Source, parse_domain_maps
from worker.store import keys as k

MAPPING = "school.edu=appleid.school.edu"


def add_source(cli, name, kind, *extra):
    result = cli("sources", "add", name, "--kind", kind, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def audit(cli, kind):
    entries = json.loads(cli("events", "list", "--json").stdout)
    return [e for e in entries if e["kind"] == kind]


def queued(redis_client) -> int:
    """Messages waiting on the events queue (none is handled when no worker runs)."""
    return redis_client.llen(k.broker_queue(EVENTS_QUEUE))


@pytest.fixture
def lab(cli, clock, tmp_path):
    """Server Lab with a token downloaded by teacher@appleid.school.edu 20 days ago."""
    assert cli("servers", "add", "Lab", "--org", "School").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "teacher@appleid.school.edu", DOWNLOADED)
    return "Lab"


@pytest.fixture
def an_hour_ago(clock):
    return (clock.now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.123Z")


# ---- Okta -----------------------------------------------------------------------------------


@pytest.fixture
def okta_source(cli):
    """An Okta source mapping @school.edu to @appleid.school.edu; yields its secret."""
    return add_source(cli, "okta-staff", "okta", "--map-domain", MAPPING)["secret"]


def log_event(event_type, login, *, published, event_uuid=None):
    """A System Log event, cut to what tokenwarden reads of it."""
    return {
        "uuid": event_uuid or str(uuid.uuid4()),
        "published": published,
        "eventType": event_type,
        "outcome": {"result": "SUCCESS"},
        "target": [{"id": "00u1", "type": "User", "alternateId": login}],
    }


def post_okta(intake, secret, *log_events):
    body = {"eventType": "com.okta.event_hook", "data": {"events": list(log_events)}}
    return httpx.post(
        f"{intake}/sources/okta-staff/okta",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": secret},
    )


#: LogEvents a client can send that are no use to tokenwarden, each with a field of a type Okta
#: never sends. Each must be ignored on its own, never fail the delivery.
ODD_FIELDS = [
    {"eventType": {"a": 1}},
    {"eventType": ["user.account.update_password"]},
    {"uuid": {"a": 1}},
    {"uuid": ["x"]},
    {"published": {"a": 1}},
    {"published": [2025]},
    {"outcome": {"result": {"a": 1}}},
    {"outcome": {"result": ["SUCCESS"]}},
    {"outcome": ["SUCCESS"]},
    {"target": {"type": "User"}},
    {"target": [{"type": {"a": 1}, "alternateId": "teacher@school.edu"}]},
    {"target": [{"type": ["User"], "alternateId": "teacher@school.edu"}]},
    {"target": [{"type": "User", "alternateId": {"a": 1}}]},
    {"target": [{"type": "User", "alternateId": ["teacher@school.edu"]}]},
    {"target": [["User"]]},
]


def test_okta_events_of_odd_shapes_are_ignored_each_and_the_rest_of_the_delivery_counts(
    cli, app, intake, worker, lab, okta_source, an_hour_ago
):
    odd = []
    for change in ODD_FIELDS:
        event = log_event("user.lifecycle.deactivate", "teacher@school.edu", published=an_hour_ago)
        odd.append({**event, **change})
    good = log_event("user.account.update_password", "teacher@school.edu", published=an_hour_ago)
    # When one delivery carries the good event among the odd ones
    answer = post_okta(intake, okta_source, *odd, good)
    # Then it is acknowledged, the good event decided on, every odd one ignored with why
    assert (answer.status_code, answer.content) == (200, b"")
    worker.drain()
    [opened] = replacements(cli)
    assert [r["id"] for r in opened["reasons"]] == [good["uuid"]]
    ignored = audit(cli, "ignored")
    assert len(ignored) == len(ODD_FIELDS)
    assert all(entry["note"] and "\n" not in entry["note"] for entry in ignored)
    assert app.store.events.dead_letters() == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)

logins = st.one_of(
    json_values,
    st.text(max_size=300).map(lambda local: local + "@school.edu"),
    st.integers(1, 300).map(lambda n: "t" * n + "@School.EDU"),
)

targets = st.one_of(
    json_values,
    st.lists(
        st.one_of(
            json_values,
            st.fixed_dictionaries(
                {"type": st.one_of(st.just("User"), json_values)}, optional={"alternateId": logins}
            ),
        ),
        max_size=3,
    ),
)

log_events = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "uuid": st.one_of(json_values, st.uuids().map(str)),
            "eventType": st.one_of(st.sampled_from(sorted(okta.EVENT_TYPES)), json_values),
            "published": st.one_of(
                json_values,
                st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
            ),
            "outcome": st.one_of(json_values, st.fixed_dictionaries({"result": json_values})),
            "target": targets,
        },
    ),
)

NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@settings(max_examples=500, deadline=None)
@given(st.lists(log_events, max_size=4))
def test_the_okta_translation_never_raises_whatever_json_a_delivery_carries(delivered):
    source = Source("okta-staff", OKTA, NOW, "0" * 64, domain_maps=parse_domain_maps((MAPPING,)))
    translation = okta.translate(
        delivered, source=okta.source_for("okta-staff"), map_user=source.map_user, now=NOW
    )
    assert len(translation.events) + len(translation.ignored) == len(delivered)
    for event in translation.events:
        assert event.type in catalog.USER_EVENTS
        assert len(event.user()) <= MAX_FIELD_CHARS
    for ignored in translation.ignored:
        assert ignored.why and "\n" not in ignored.why
        json.dumps(ignored.record, ensure_ascii=False).encode("utf-8")  # storable as it is
        assert ignored.key is None or ignored.key.encode("utf-8")


def test_ignored_okta_events_are_recorded_once_however_often_a_delivery_is_retried(
    cli, intake, okta_source, an_hour_ago
):
    sessions = [
        log_event("user.session.start", "teacher@school.edu", published=an_hour_ago)
        for _ in range(10)
    ]
    # When Okta retries a delivery of ten events that mean nothing for tokens
    for _ in range(2):
        assert post_okta(intake, okta_source, *sessions).status_code == 200
    # Then each is in the audit trail once
    ignored = audit(cli, "ignored")
    assert sorted(e["event"]["id"] for e in ignored) == sorted(s["uuid"] for s in sessions)


def test_an_ignored_event_without_a_usable_uuid_is_recorded_each_time(
    cli, intake, okta_source, an_hour_ago
):
    # (nothing tells one such event from another: each delivery of it is kept)
    no_uuid = log_event("user.session.start", "teacher@school.edu", published=an_hour_ago)
    no_uuid["uuid"] = {"a": 1}
    for _ in range(2):
        assert post_okta(intake, okta_source, no_uuid).status_code == 200
    assert len(audit(cli, "ignored")) == 2


def test_an_event_once_ignored_is_still_taken_when_it_becomes_usable(
    cli, clock, intake, worker, lab, okta_source
):
    # Given an event first ignored because its time is ahead of the intake's clock
    ahead = (clock.now + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = log_event("user.lifecycle.suspend", "teacher@school.edu", published=ahead)
    assert post_okta(intake, okta_source, event).status_code == 200
    assert "in the future" in audit(cli, "ignored")[0]["note"]
    # When it is sent again once that time has come
    clock.now += timedelta(hours=1)
    assert post_okta(intake, okta_source, event).status_code == 200
    worker.drain()
    # Then having been ignored did not mark it as handled: it is decided on
    [opened] = replacements(cli)
    assert [r["id"] for r in opened["reasons"]] == [event["uuid"]]


def test_an_okta_user_too_long_once_mapped_is_ignored_with_why(
    cli, intake, worker, okta_source, an_hour_ago
):
    login = "t" * (MAX_FIELD_CHARS - len("@school.edu")) + "@school.edu"
    event = log_event("user.account.update_password", login, published=an_hour_ago)
    assert post_okta(intake, okta_source, event).status_code == 200
    worker.drain()
    [ignored] = audit(cli, "ignored")
    assert "alternateId" in ignored["note"] and "256" in ignored["note"]
    assert audit(cli, "event") == []


@pytest.fixture
def calls_on_the_event_loop():
    """For each watched function called in a thread started from now on (the intake's event
    loop and its thread pool), whether that thread was running an event loop. A profiler
    observes the calls: the code runs as it is."""
    watched = {okta.decode_delivery.__code__: "decode", okta.translate.__code__: "translate"}
    calls: list[tuple[str, bool]] = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in watched:
            try:
                asyncio.get_running_loop()
                on_loop = True
            except RuntimeError:
                on_loop = False
            calls.append((watched[frame.f_code], on_loop))

    threading.setprofile(profile)
    yield calls
    threading.setprofile(None)


def test_okta_parsing_and_translation_run_off_the_event_loop(
    calls_on_the_event_loop, intake, okta_source, an_hour_ago
):
    event = log_event("user.session.start", "teacher@school.edu", published=an_hour_ago)
    assert post_okta(intake, okta_source, event).status_code == 200
    assert sorted(calls_on_the_event_loop) == [("decode", False), ("translate", False)]


# ---- CloudEvents ----------------------------------------------------------------------------


@pytest.fixture
def hr(cli):
    """A cloudevents source mapping @school.edu to @appleid.school.edu; yields (path, secret)."""
    added = add_source(cli, "hr", "cloudevents", "--map-domain", MAPPING)
    return added["path"], added["secret"]


def password_changed(user, event_id="hr-1", **extra):
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "urn:hr:workday",
        "type": catalog.PASSWORD_CHANGED,
        "time": "2025-03-01T08:59:00Z",
        "datacontenttype": "application/json",
        "data": {"user": user},
        **extra,
    }


def post_ce(intake, hr, body, content_type, **headers):
    path, secret = hr
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{intake}{path}",
        content=content,
        headers={"Authorization": f"Bearer {secret}", "Content-Type": content_type, **headers},
    )


BIG = "x" * (900 * 1024)


@pytest.mark.parametrize(
    ("mode", "body", "content_type", "headers"),
    [
        (
            "structured",
            password_changed("teacher@school.edu", padding=BIG),
            "application/cloudevents+json",
            {},
        ),
        (
            "batch",
            [password_changed("teacher@school.edu", padding=BIG)],
            "application/cloudevents-batch+json",
            {},
        ),
        (
            "binary",
            {"user": "teacher@school.edu", "padding": BIG},
            "application/json",
            {
                "ce-specversion": "1.0",
                "ce-id": "hr-1",
                "ce-source": "urn:hr:workday",
                "ce-type": catalog.PASSWORD_CHANGED,
            },
        ),
    ],
)
def test_an_event_over_64_kib_is_refused_in_every_mode(
    intake, hr, snapshot, mode, body, content_type, headers
):
    before = snapshot()
    answer = post_ce(intake, hr, body, content_type, **headers)
    assert answer.status_code == 400, answer.text
    assert f"at most {MAX_EVENT_BYTES}" in json.dumps(answer.json())
    assert snapshot() == before


def test_an_event_object_over_64_kib_is_malformed_as_its_text_is():
    event = password_changed("teacher@school.edu", padding="x" * MAX_EVENT_BYTES)
    for form in (event, json.dumps(event)):
        with pytest.raises(MalformedEvent, match=f"at most {MAX_EVENT_BYTES} are taken"):
            parse_event(form)
    small = password_changed("teacher@school.edu", padding="x" * (MAX_EVENT_BYTES - 400))
    assert parse_event(small).id == parse_event(json.dumps(small)).id == "hr-1"


def test_an_event_taken_at_the_limit_is_one_the_workers_take_too():
    # A time's fraction is written out in full on the way to the workers ("…00.1Z" becomes
    # "…00.100000Z"): what is measured is the event as they will read it.
    event = password_changed("teacher@school.edu", time="2025-03-01T08:59:00.1Z", padding="")
    wire = len(json.dumps(parse_event(event).to_wire(), separators=(",", ":")))
    for extra in (0, 1, 3):  # the wire form at the limit, then just over it
        event["padding"] = "x" * (MAX_EVENT_BYTES - wire + extra)
        try:
            taken = parse_event(event)
        except MalformedEvent as exc:
            assert extra > 0 and f"at most {MAX_EVENT_BYTES} are taken" in str(exc)
            continue
        assert parse_event(taken.to_wire()) == taken  # as a worker reads it from the queue


def test_a_user_over_256_characters_once_mapped_is_refused_naming_the_event(
    intake, hr, snapshot, redis_client
):
    long_user = "t" * (MAX_FIELD_CHARS - len("@school.edu")) + "@school.edu"
    batch = [
        password_changed("teacher@school.edu", "hr-1"),
        password_changed(long_user, "hr-2"),
    ]
    before = snapshot()
    answer = post_ce(intake, hr, batch, "application/cloudevents-batch+json")
    assert answer.status_code == 400, answer.text
    [error] = answer.json()["errors"]
    assert error["index"] == 1
    assert "data.user" in error["error"] and "256" in error["error"]
    assert "\n" not in answer.json()["error"]
    assert snapshot() == before and queued(redis_client) == 0


def test_a_subject_that_is_the_user_is_mapped_with_it(cli, intake, hr, lab, worker):
    event = password_changed("teacher@school.edu", subject="teacher@school.edu")
    assert post_ce(intake, hr, event, "application/cloudevents+json").status_code == 202
    worker.drain()
    [received] = audit(cli, "event")
    assert received["event"]["data"] == {"user": "teacher@appleid.school.edu"}
    assert received["event"]["subject"] == "teacher@appleid.school.edu"
    assert len(replacements(cli)) == 1


# ---- trailing slashes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/sources/x/okta/", "/sources/x/events/", "/sources/x/scim", "/healthz/"]
)
def test_a_path_with_a_trailing_slash_is_404_not_a_redirect(intake, path):
    for method in ("GET", "POST"):
        answer = httpx.request(method, intake + path, headers={"Host": "evil.example"})
        assert answer.status_code == 404, (method, path, answer.status_code)
        assert "location" not in answer.headers


@pytest.mark.parametrize("suffix", ["/Users", "/Users/"])
def test_scim_users_answers_with_or_without_a_trailing_slash(cli, intake, suffix):
    added = add_source(cli, "entra", "scim")
    answer = httpx.get(
        f"{intake}{added['path']}{suffix}",
        headers={"Authorization": f"Bearer {added['secret']}"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["totalResults"] == 0

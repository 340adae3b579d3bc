"""The Okta Users API client against a fake Okta org (a real HTTP server that checks the SSWS
token as Okta does), and the pure reading of Okta's answers."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from structlog.testing import capture_logs

from tests.okta_api_fake import okta_api_fake  # noqa: F401
from worker.directories.base import Observation, Unobserved, WatchedLogin
from worker.directories.okta_api import (
    STOPPED,
    OktaApiClient,
    okta_error,
    parse_timestamp,
    read_answer,
    reset_wait_s,
)
from worker.errors import DirectoryCredentialsRejected, DirectoryUnreachable

SINCE = datetime(2024, 1, 1, tzinfo=UTC)
CHANGED = datetime(2024, 5, 1, 8, 30, 15, 123000, tzinfo=UTC)


def watched(*logins: str) -> list[WatchedLogin]:
    return [WatchedLogin(login, SINCE) for login in logins]


@pytest.fixture
def okta(okta_api_fake):  # noqa: F811 (the fixture imported above)
    return okta_api_fake


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def make_client(okta, waits):
    clients = []

    def make(**kwargs) -> OktaApiClient:
        settings = okta.directory_settings(**kwargs.pop("settings", {}))
        options = okta.source_options() | okta.credentials()
        options |= {k: kwargs.pop(k) for k in ("org_url", "api_token") if k in kwargs}
        client = OktaApiClient(**options, settings=settings, sleep=waits.append, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client):
    return make_client()


# What Okta says of a user


def test_an_active_user_is_found_enabled_with_the_password_change_okta_reports(okta, client):
    # Given
    okta.add_user("ann@school.example", password_changed_at=CHANGED)

    # When
    [seen] = client.observe(watched("ann@school.example"))

    # Then
    assert seen == Observation(
        "ann@school.example",
        found=True,
        enabled=True,
        status="ACTIVE",
        password_changed_at=CHANGED,
        status_changed_at=seen.status_changed_at,
    )
    assert seen.password_changed_at.tzinfo is UTC
    assert seen.status_changed_at is not None and seen.status_changed_at.tzinfo is UTC


def test_a_user_whose_password_never_changed_has_no_password_change(okta, client):
    okta.add_user("bob@school.example")

    [seen] = client.observe(watched("bob@school.example"))

    assert seen.found and seen.password_changed_at is None


def test_a_password_changed_later_is_seen_by_the_next_observation(okta, client):
    okta.add_user("ann@school.example", password_changed_at=CHANGED)
    later = CHANGED + timedelta(days=3, seconds=1)

    okta.set_password_changed("ann@school.example", later)
    [seen] = client.observe(watched("ann@school.example"))

    assert seen.password_changed_at == later


@pytest.mark.parametrize(
    ("status", "enabled"),
    [
        ("SUSPENDED", False),
        ("DEPROVISIONED", False),
        ("ACTIVE", True),
        ("STAGED", True),
        ("PROVISIONED", True),
        ("RECOVERY", True),
        ("LOCKED_OUT", True),
        ("PASSWORD_EXPIRED", True),
    ],
)
def test_only_suspended_and_deprovisioned_users_are_disabled(okta, client, status, enabled):
    okta.add_user("ann@school.example")

    okta.set_status("ann@school.example", status)
    [seen] = client.observe(watched("ann@school.example"))

    assert (seen.found, seen.enabled, seen.status) == (True, enabled, status)


def test_a_disabled_user_reports_when_the_status_changed(okta, client):
    okta.add_user("ann@school.example")
    [before] = client.observe(watched("ann@school.example"))

    okta.disable("ann@school.example")
    [after] = client.observe(watched("ann@school.example"))

    assert not after.enabled and after.status == "SUSPENDED"
    assert after.status_changed_at >= before.status_changed_at


def test_a_deleted_user_is_not_found(okta, client):
    okta.add_user("ann@school.example")

    okta.delete("ann@school.example")
    [seen] = client.observe(watched("ann@school.example"))

    assert seen == Observation("ann@school.example", found=False, enabled=False, status="not found")


def test_logins_are_matched_case_insensitively_and_sent_quoted(okta, client):
    okta.add_user("Ann.O'Neil+ipad@School.example")
    okta.add_user("odd/login?x=1#y")

    seen = client.observe(watched("ann.o'neil+ipad@school.example", "odd/login?x=1#y"))

    assert [s.found for s in seen] == [True, True]


def test_answers_come_in_the_order_asked_with_requests_at_once(okta, make_client):
    # Given 40 users, a third of them gone
    logins = [f"user{i}@school.example" for i in range(40)]
    for i, login in enumerate(logins):
        if i % 3:
            okta.add_user(login)
    client = make_client(settings={"concurrency": 8})

    # When
    seen = client.observe(watched(*logins))

    # Then
    assert [s.login for s in seen] == logins
    assert [s.found for s in seen] == [bool(i % 3) for i in range(40)]
    assert client.requests_made == okta.requests == 40


def test_nothing_asked_answers_nothing(okta, client):
    assert client.observe([]) == []
    assert okta.requests == 0


# Failures


def test_a_500_is_retried_and_the_user_observed(okta, client, waits):
    okta.add_user("ann@school.example")
    okta.fail(500, times=1)

    [seen] = client.observe(watched("ann@school.example"))

    assert seen.found and seen.enabled
    assert waits == [1.0]
    assert client.requests_made == okta.requests == 2


def test_a_login_failing_through_its_retries_is_unobserved_and_the_others_observed(
    okta, make_client, waits
):
    okta.add_user("ann@school.example")
    okta.add_user("bob@school.example")
    okta.fail(500, times=3)
    client = make_client(settings={"concurrency": 1})

    seen = client.observe(watched("ann@school.example", "bob@school.example"))

    assert seen[0] == Unobserved("ann@school.example", "HTTP 500 E0000009, 3 attempts")
    assert seen[1].found
    assert waits == [1.0, 2.0]  # exponential backoff between the three attempts
    assert client.requests_made == okta.requests == 4


def test_a_directory_answering_only_500s_is_unreachable_and_stops_being_asked(okta, make_client):
    # Given
    for i in range(6):
        okta.add_user(f"user{i}@school.example")
    okta.fail(500)
    client = make_client(settings={"concurrency": 1})

    # When / Then
    with pytest.raises(DirectoryUnreachable, match=r"Okta \(127\.0\.0\.1\).*HTTP 500") as raised:
        client.observe(watched(*[f"user{i}@school.example" for i in range(6)]))
    assert "\n" not in str(raised.value)
    assert okta.requests == 9  # three logins, three attempts each; then no more


def test_after_three_logins_fail_in_a_row_the_rest_are_not_asked(okta, make_client):
    # Given the first login answers, then Okta fails
    logins = [f"user{i}@school.example" for i in range(6)]
    for login in logins:
        okta.add_user(login)
    okta.fail(503, after=1)
    client = make_client(settings={"concurrency": 1})

    # When
    seen = client.observe(watched(*logins))

    # Then
    assert seen[0].found
    assert [type(s) for s in seen[1:4]] == [Unobserved] * 3
    assert seen[4:] == [Unobserved(logins[4], STOPPED), Unobserved(logins[5], STOPPED)]
    assert okta.requests == 1 + 3 * 3


def test_an_html_404_is_unobserved_never_a_departure(okta, make_client):
    okta.add_user("ann@school.example")
    okta.add_user("bob@school.example")
    okta.fail_html_404(times=1)
    client = make_client(settings={"concurrency": 1})

    seen = client.observe(watched("ann@school.example", "bob@school.example"))

    assert isinstance(seen[0], Unobserved)
    assert "HTTP 404 without Okta's error" in seen[0].why
    assert seen[1].found


@pytest.mark.parametrize("concurrency", [1, 4, 16])
def test_a_proxy_answering_an_html_404_to_everything_is_asked_three_times(
    okta, make_client, concurrency
):
    # Given 50 users behind a proxy that answers its own error page to every request
    logins = [f"user{i}@school.example" for i in range(50)]
    for login in logins:
        okta.add_user(login)
    okta.fail_html_404()
    client = make_client(settings={"concurrency": concurrency})

    # When / Then nothing was observed: unreachable, naming the first failure
    with pytest.raises(DirectoryUnreachable, match="HTTP 404 without Okta's error"):
        client.observe(watched(*logins))
    assert client.requests_made == okta.requests == 3


@pytest.mark.parametrize(
    ("status", "why"),
    [(401, "HTTP 401 without Okta's error"), (403, "HTTP 403 without Okta's error"),
     (418, "HTTP 418 without Okta's error"), (307, "HTTP 307 without Okta's error"),
     (200, "a user that is not JSON")],
)  # fmt: skip
def test_answers_that_are_not_okta_s_count_toward_stopping(okta, make_client, status, why):
    # Given the first user answers, then a proxy answers a page of its own to everything
    logins = [f"user{i}@school.example" for i in range(30)]
    for login in logins:
        okta.add_user(login)
    okta.fail_page(status, after=1)
    client = make_client(settings={"concurrency": 1})

    with capture_logs() as logs:
        seen = client.observe(watched(*logins))

    # Then three logins were asked after the first, and not one more
    assert seen[0].found
    assert sum(isinstance(s, Unobserved) and why in s.why for s in seen) == 3
    assert all(isinstance(s, Unobserved) for s in seen[1:])
    assert client.requests_made == okta.requests == 1 + 3
    # one warning for the call, naming how many and the first why
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["unobserved"] == 29 and why in warnings[0]["why"]


def test_once_logins_fail_the_others_wait_for_the_probe(okta, make_client):
    # Given 40 users answered, then a proxy's page to everything, asked 8 at a time
    logins = [f"user{i}@school.example" for i in range(200)]
    for login in logins:
        okta.add_user(login)
    okta.fail_page(404, after=40)
    client = make_client(settings={"concurrency": 8})

    seen = client.observe(watched(*logins))

    # Then the requests in flight when the first failed, and at most 3 more
    assert sum(isinstance(s, Observation) for s in seen) == 40
    assert okta.requests <= 40 + 8 + 3


def test_a_redirect_is_not_followed(okta, make_client):
    okta.add_user("ann@school.example")
    okta.fail_page(307, location="/api/v1/users/ann@school.example?moved=1")
    client = make_client()

    with pytest.raises(DirectoryUnreachable, match="HTTP 307"):
        client.observe(watched("ann@school.example"))
    assert okta.requests == 1


def test_a_user_okta_answers_unreadably_does_not_stop_the_call(okta, make_client):
    # Given users whose passwordChanged Okta answers in a shape no one reads
    logins = [f"user{i}@school.example" for i in range(6)]
    for login in logins:
        okta.add_user(login)
        okta.set_password_changed_raw(login, "yesterday")
    client = make_client(settings={"concurrency": 1})

    seen = client.observe(watched(*logins))

    # Then each is unobserved, all of them asked: Okta answered about each
    assert all(isinstance(s, Unobserved) and "'yesterday'" in s.why for s in seen)
    assert okta.requests == 6


def test_a_hanging_directory_is_unreachable(okta, make_client):
    okta.add_user("ann@school.example")
    okta.hang(30)
    client = make_client(settings={"timeout_s": 0.2})

    with pytest.raises(DirectoryUnreachable, match=r"no answer within 0\.2 s, 3 attempts"):
        client.observe(watched("ann@school.example"))
    assert client.requests_made == 3


def test_a_timeout_is_retried_and_the_user_observed(okta, make_client, waits):
    # Given Okta hangs until the client's first wait before a retry
    okta.add_user("ann@school.example")
    okta.hang(30)
    client = make_client(settings={"timeout_s": 0.2})

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        okta.hang(0)

    client._sleep = sleep

    # When
    [seen] = client.observe(watched("ann@school.example"))

    # Then
    assert seen.found
    assert waits == [1.0] and client.requests_made == 2


def test_a_connection_refused_is_unreachable(make_client):
    client = make_client(org_url="http://127.0.0.1:9")

    with pytest.raises(DirectoryUnreachable, match=r"cannot connect \(ConnectError\)"):
        client.observe(watched("ann@school.example"))


# Okta's rate limits


def test_a_429_waits_as_long_as_retry_after_asks_and_the_user_is_observed(okta, client, waits):
    okta.add_user("ann@school.example")
    okta.throttle(times=1, retry_after=7)

    [seen] = client.observe(watched("ann@school.example"))

    assert seen.found
    assert waits == [7.0]
    assert client.requests_made == 2


def test_a_429_without_retry_after_waits_until_okta_s_reset(okta, client, waits):
    okta.add_user("ann@school.example")
    okta.throttle(times=1, retry_after=7, retry_after_header=False)

    [seen] = client.observe(watched("ann@school.example"))

    assert seen.found
    [wait] = waits
    assert 6 <= wait <= 8  # Reset against the Date uvicorn sends (whole seconds, a tick late)


def test_a_429_asking_longer_than_max_wait_leaves_the_login_unobserved(okta, make_client, waits):
    okta.add_user("ann@school.example")
    okta.add_user("bob@school.example")
    okta.throttle(times=1, retry_after=120)
    client = make_client(settings={"concurrency": 1}, max_wait_s=60)

    seen = client.observe(watched("ann@school.example", "bob@school.example"))

    assert isinstance(seen[0], Unobserved) and "asked to wait 120 s" in seen[0].why
    assert seen[1].found
    assert waits == []


def test_when_no_request_remains_the_client_waits_for_the_reset_instead_of_a_429(
    okta, make_client, waits
):
    # Given two requests per 30 s window, and a sleep that lets the window pass
    logins = [f"user{i}@school.example" for i in range(5)]
    for login in logins:
        okta.add_user(login)
    okta.rate_limit(2, window_s=30)

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        okta.new_window()

    client = make_client(settings={"concurrency": 1})
    client._sleep = sleep

    # When
    seen = client.observe(watched(*logins))

    # Then it waited before the 3rd and the 5th request, and Okta never had to refuse one
    assert all(s.found for s in seen)
    assert len(waits) == 2 and all(29 <= w <= 31 for w in waits)
    assert okta.requests == 5


def test_the_wait_for_okta_s_reset_is_capped_at_max_wait(okta, make_client, waits):
    # Given one request per hour
    okta.add_user("ann@school.example")
    okta.rate_limit(1, window_s=3600)
    client = make_client(settings={"concurrency": 1}, max_wait_s=5)

    # When
    seen = client.observe(watched("ann@school.example", "ann@school.example"))

    # Then it waited 5 s, not an hour; Okta (whose window had not passed: the sleep was a
    # test's) then refused with a reset an hour away, too long to wait: that one is unobserved
    [wait] = waits
    assert 4.5 < wait <= 5
    assert seen[0].found
    assert isinstance(seen[1], Unobserved) and "HTTP 429 E0000047" in seen[1].why


def test_the_fake_refuses_requests_beyond_its_limit(okta):
    okta.add_user("ann@school.example")
    okta.rate_limit(1, window_s=60)
    auth = {"Authorization": f"SSWS {okta.token}"}
    url = okta.url + "/api/v1/users/ann@school.example"

    first, second = httpx.get(url, headers=auth), httpx.get(url, headers=auth)

    assert first.status_code == 200 and first.headers["X-Rate-Limit-Remaining"] == "0"
    assert second.status_code == 429 and second.json()["errorCode"] == "E0000047"


# Credentials


def test_a_revoked_token_is_rejected_with_okta_s_error(okta, make_client):
    for i in range(5):
        okta.add_user(f"user{i}@school.example")
    okta.revoke_credentials()
    client = make_client(settings={"concurrency": 1})

    with pytest.raises(DirectoryCredentialsRejected) as raised:
        client.observe(watched(*[f"user{i}@school.example" for i in range(5)]))

    message = str(raised.value)
    assert "E0000011 Invalid token provided (HTTP 401)" in message
    assert okta.token not in message
    assert okta.requests == 1  # at once: the others are not asked


def test_a_token_without_the_rights_to_read_users_is_rejected(okta, client):
    okta.add_user("ann@school.example")
    okta.forbid()

    with pytest.raises(DirectoryCredentialsRejected, match=r"E0000006 .* \(HTTP 403\).*Read-only"):
        client.observe(watched("ann@school.example"))


def test_a_wrong_token_is_rejected_by_the_fake_as_okta_does(okta, make_client):
    okta.add_user("ann@school.example")
    url = okta.url + "/api/v1/users/ann@school.example"
    right = okta.token

    answers = {
        "none": httpx.get(url),
        "wrong": httpx.get(url, headers={"Authorization": "SSWS 00" + "x" * 40}),
        "bearer": httpx.get(url, headers={"Authorization": f"Bearer {right}"}),
        "right": httpx.get(url, headers={"Authorization": f"SSWS {right}"}),
    }

    for name in ("none", "wrong", "bearer"):
        assert answers[name].status_code == 401, name
        assert answers[name].json()["errorCode"] == "E0000011", name
    assert answers["right"].status_code == 200
    assert answers["right"].json()["profile"]["login"] == "ann@school.example"
    with pytest.raises(DirectoryCredentialsRejected, match="E0000011"):
        make_client(api_token="00" + "y" * 40).observe(watched("ann@school.example"))


def test_the_fake_answers_users_by_id_and_okta_s_404_for_unknown_ones(okta):
    user_id = okta.add_user("ann@school.example")
    auth = {"Authorization": f"SSWS {okta.token}"}

    by_id = httpx.get(f"{okta.url}/api/v1/users/{user_id}", headers=auth)
    missing = httpx.get(f"{okta.url}/api/v1/users/nobody@school.example", headers=auth)

    assert by_id.json()["id"] == user_id and by_id.json()["status"] == "ACTIVE"
    assert missing.status_code == 404 and missing.json()["errorCode"] == "E0000007"


def test_the_token_never_shows_in_messages_logs_or_reprs(okta, make_client, caplog):
    token = okta.token
    okta.add_user("ann@school.example")
    shown: list[str] = []

    with caplog.at_level(logging.DEBUG), capture_logs() as logs:
        client = make_client(settings={"concurrency": 1})
        okta.fail(500, times=1)
        okta.throttle(times=1, retry_after=1)
        okta.fail_html_404(times=1)
        shown += [repr(client.observe(watched("ann@school.example", "ann@school.example")))]
        okta.fail(502)
        with pytest.raises(DirectoryUnreachable) as unreachable:
            client.observe(watched("ann@school.example"))
        okta.heal()
        okta.revoke_credentials()
        with pytest.raises(DirectoryCredentialsRejected) as rejected:
            client.observe(watched("ann@school.example"))
        for raised in (unreachable, rejected):
            shown += [str(raised.value), repr(raised.value)]

    shown += [caplog.text, repr([r.msg for r in caplog.records]), repr(logs), repr(client)]
    shown += [repr(okta)]
    assert any("okta_credentials_rejected" in repr(entry) for entry in logs)
    for text in shown:
        assert token not in text
        assert token[2:20] not in text


def test_requests_made_counts_every_request(okta, make_client):
    okta.add_user("ann@school.example")
    okta.fail(503, times=2)
    client = make_client(settings={"concurrency": 1})

    client.observe(watched("ann@school.example", "nobody@school.example"))

    assert client.requests_made == okta.requests == 4


# Reading Okta's answers (pure)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b"[]", "without a status"),
        (b'{"status": ""}', "without a status"),
        (b'{"status": "ACTIVE", "passwordChanged": "yesterday"}', "passwordChanged 'yesterday'"),
        (b'{"status": "ACTIVE", "passwordChanged": "2024-05-01T08:30:00"}', "not a timestamp"),
        (b'{"status": "ACTIVE", "statusChanged": 1714552200}', "statusChanged '1714552200'"),
    ],
)
def test_an_unreadable_user_is_unobserved(body, why):
    seen = read_answer("ann@school.example", 200, body)

    assert isinstance(seen, Unobserved) and why in seen.why


@pytest.mark.parametrize(
    ("status", "body", "found"),
    [
        (404, b'{"errorCode": "E0000007", "errorSummary": "Not found"}', False),
        (404, b'{"errorCode": "E0000022", "errorSummary": "no such endpoint"}', None),
        (404, b"<html>Not Found</html>", None),
        (404, b"", None),
        (400, b'{"errorCode": "E0000001", "errorSummary": "Api validation failed"}', None),
        (302, b"", None),
    ],
)
def test_only_okta_s_own_not_found_is_a_departure(status, body, found):
    seen = read_answer("ann@school.example", status, body)

    if found is None:
        assert isinstance(seen, Unobserved)
    else:
        assert seen == Observation(
            "ann@school.example", found=False, enabled=False, status="not found"
        )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T08:30:15.123Z", CHANGED),
        ("2024-05-01T10:30:15.123+02:00", CHANGED),
        ("2024-05-01T08:30:15.123", None),
        ("", None),
        (None, None),
        (17, None),
    ],
)
def test_okta_timestamps_are_read_as_aware_utc(value, expected):
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"errorCode": "E0000011", "errorSummary": "Invalid token provided"}',
            ("E0000011", "Invalid token provided"),
        ),
        (b'{"errorCode": "E0000006"}', ("E0000006", "")),
        (b'{"errorCode": "E 1\\n", "errorSummary": "x"}', None),
        (b'{"error": "invalid_client"}', None),
        (b"<html></html>", None),
    ],
)
def test_okta_s_error_shape_is_recognised(body, expected):
    assert okta_error(body) == expected


NOW = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-rate-limit-reset": str(int(NOW.timestamp()) + 42)}, 42.0),
        # Okta's clock is read from its Date: 10 s behind ours, the wait is still 42 s
        (
            {
                "x-rate-limit-reset": str(int(NOW.timestamp()) + 32),
                "date": "Wed, 01 May 2024 07:59:50 GMT",
            },
            42.0,
        ),
        ({"x-rate-limit-reset": str(int(NOW.timestamp()) - 5)}, 0.0),
        ({"x-rate-limit-reset": "soon"}, None),
        ({}, None),
        (
            {"x-rate-limit-reset": str(int(NOW.timestamp()) + 3), "date": "garbage"},
            3.0,
        ),
    ],
)
def test_the_wait_until_okta_s_reset_is_counted_on_okta_s_clock(headers, expected):
    assert reset_wait_s(headers, NOW) == expected


def test_a_timestamp_in_another_zone_is_converted_to_utc():
    when = parse_timestamp("2024-05-01T10:30:15.123+02:00")

    assert when.tzinfo is UTC and when == CHANGED.astimezone(timezone(timedelta(hours=2)))

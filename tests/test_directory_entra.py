"""The Entra ID client (worker/directories/entra.py), through msal and httpx over TLS, against
the fake of Entra's login endpoint and Microsoft Graph (tests/entra_fake.py), which checks the
client-credentials grant and the bearers as Entra does."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from structlog.testing import capture_logs

from tests.entra_fake import running_fake_entra
from worker.directories.base import Observation, Unobserved, WatchedLogin
from worker.directories.entra import EntraClient
from worker.directories.graph import Renew, Retry, answer_for, read_user
from worker.errors import DirectoryCredentialsRejected, DirectoryUnreachable
from worker.outbound import tls_context

SINCE = datetime(2025, 3, 1, tzinfo=UTC)


class Waits(list):
    """Stands in for time.sleep: records each wait instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def entra_fake(tmp_path):
    # the fixture of tests/entra_fake.py, written out (importing it reads as a redefinition)
    with running_fake_entra(tmp_path) as fake:
        yield fake


@pytest.fixture
def waits():
    return Waits()


@pytest.fixture
def client_for(entra_fake, waits):
    made = []

    def make(credentials=None, options=None, **kwargs) -> EntraClient:
        settings = {
            k: kwargs.pop(k) for k in ("timeout_s", "concurrency", "ca_bundle") if k in kwargs
        }
        client = EntraClient(
            **(options or entra_fake.source_options()),
            **(credentials or entra_fake.credentials()),
            settings=entra_fake.directory_settings(**settings),
            sleep=waits,
            **kwargs,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(client_for):
    return client_for()


def watched(*logins: str) -> list[WatchedLogin]:
    return [WatchedLogin(login, SINCE) for login in logins]


def people(fake, count: int) -> list[str]:
    logins = [f"user{n:03}@school.example" for n in range(count)]
    for login in logins:
        fake.add_user(login)
    return logins


# What Graph says of each user


def test_an_enabled_user_is_found_and_enabled(entra_fake, client):
    entra_fake.add_user("ann@school.example")

    [seen] = client.observe(watched("ann@school.example"))

    assert seen == Observation("ann@school.example", found=True, enabled=True,
                               status="accountEnabled=true")  # fmt: skip


def test_a_disabled_account_is_found_and_not_enabled(entra_fake, client):
    entra_fake.add_user("bob@school.example")
    entra_fake.disable("bob@school.example")

    [seen] = client.observe(watched("bob@school.example"))

    assert (seen.found, seen.enabled, seen.status) == (True, False, "accountEnabled=false")


def test_a_deleted_user_is_not_found(entra_fake, client):
    entra_fake.add_user("cy@school.example")
    entra_fake.delete("cy@school.example")

    [seen] = client.observe(watched("cy@school.example"))

    assert seen == Observation("cy@school.example", found=False, enabled=False, status="not found")


def test_the_password_change_time_is_read_as_aware_utc(entra_fake, client):
    entra_fake.add_user("dee@school.example")
    when = datetime(2025, 3, 4, 10, 30, 15, tzinfo=timezone(timedelta(hours=2)))
    entra_fake.set_password_changed("dee@school.example", when)

    [seen] = client.observe(watched("dee@school.example"))

    assert seen.password_changed_at == datetime(2025, 3, 4, 8, 30, 15, tzinfo=UTC)
    assert seen.password_changed_at.tzinfo is UTC


def test_answers_come_in_the_order_asked_and_a_guest_upn_is_quoted(entra_fake, client):
    guest = "eve_partner.example#EXT#@school.onmicrosoft.com"
    entra_fake.add_user(guest)
    entra_fake.add_user("fay@school.example", enabled=False)

    seen = client.observe(watched("fay@school.example", "gone@school.example", guest))

    assert [s.login for s in seen] == ["fay@school.example", "gone@school.example", guest]
    assert [s.status for s in seen] == ["accountEnabled=false", "not found", "accountEnabled=true"]


# Batches and counting


def test_45_users_are_asked_in_3_batches_and_every_request_is_counted(entra_fake, client):
    logins = people(entra_fake, 45)

    seen = client.observe(watched(*logins))

    assert all(isinstance(s, Observation) and s.found for s in seen)
    assert sorted(entra_fake.batch_sizes) == [5, 20, 20]
    # the tenant's discovery document (msal), the token, 3 batches
    assert client.requests_made == entra_fake.requests == 5
    assert entra_fake.token_requests == 1

    client.observe(watched(*logins))  # the token is kept: 3 more requests

    assert client.requests_made == entra_fake.requests == 8


def test_concurrent_batches_each_answer_their_own_logins(entra_fake, client_for):
    logins = people(entra_fake, 200)
    entra_fake.delete(logins[137])

    seen = client_for(concurrency=4).observe(watched(*logins))

    assert [s.login for s in seen] == logins
    assert [s.found for s in seen] == [n != 137 for n in range(200)]


# Retries


def test_a_500_is_asked_again_and_then_observed(entra_fake, client, waits):
    entra_fake.add_user("ann@school.example")
    entra_fake.fail(500, times=1)

    [seen] = client.observe(watched("ann@school.example"))

    assert seen.found
    assert len(waits) == 1 and 1 <= waits[0] <= 1.2  # a backoff


def test_a_batch_failing_every_attempt_leaves_its_logins_unobserved(entra_fake, client_for):
    logins = people(entra_fake, 25)
    entra_fake.fail(500, times=3)  # the first batch's 3 attempts

    seen = client_for(concurrency=1).observe(watched(*logins))

    assert all(isinstance(s, Unobserved) for s in seen[:20])
    assert "HTTP 500 (UnknownError) from Microsoft Graph, 3 attempts" in seen[0].why
    assert all(isinstance(s, Observation) for s in seen[20:])


def test_500_always_is_unreachable_never_a_departure(entra_fake, client):
    entra_fake.add_user("ann@school.example")
    entra_fake.fail(500)

    with pytest.raises(DirectoryUnreachable, match="HTTP 500"):
        client.observe(watched("ann@school.example"))


def test_after_3_failed_batches_the_rest_is_not_asked(entra_fake, client_for):
    logins = people(entra_fake, 100)
    entra_fake.fail(503)
    client = client_for(concurrency=1, attempts=1)

    with pytest.raises(DirectoryUnreachable, match="HTTP 503"):
        client.observe(watched(*logins))

    assert entra_fake.requests == 2 + 3  # discovery, token, then 3 of the 5 batches


def test_an_html_404_is_unobserved_never_not_found(entra_fake, client_for):
    logins = people(entra_fake, 25)
    entra_fake.fail_html_404(times=1)

    seen = client_for(concurrency=1).observe(watched(*logins))

    assert all(isinstance(s, Unobserved) for s in seen[:20])
    assert "HTTP 404" in seen[0].why and "without its error shape" in seen[0].why
    assert all(isinstance(s, Observation) and s.found for s in seen[20:])


@pytest.mark.parametrize(
    ("status", "why"),
    [(404, "HTTP 404 from Microsoft Graph without its error shape"),
     (401, "HTTP 401 from Microsoft Graph without its error shape"),
     (403, "HTTP 403 from Microsoft Graph without its error shape"),
     (418, "HTTP 418 from Microsoft Graph without its error shape"),
     (307, "HTTP 307 from Microsoft Graph without its error shape"),
     (200, "Graph's $batch answer is unreadable")],
)  # fmt: skip
def test_a_proxy_page_to_every_batch_costs_three_batches(entra_fake, client_for, status, why):
    # Given 200 users (10 batches) behind a proxy answering a page of its own to Graph's requests
    logins = people(entra_fake, 200)
    entra_fake.fail_page(status)

    # When / Then nothing was observed: unreachable, naming the first why
    with pytest.raises(DirectoryUnreachable, match=re.escape(why)):
        client_for(concurrency=4).observe(watched(*logins))
    assert entra_fake.requests == 2 + 3  # discovery, token, then 3 batches
    assert entra_fake.elsewhere_requests == 0


def test_failing_batches_after_answered_ones_stop_the_call(entra_fake, client_for):
    # Given the first batch answers, then a proxy's page to everything
    logins = people(entra_fake, 200)
    entra_fake.fail_page(418, after=1)
    client = client_for(concurrency=1)

    with capture_logs() as logs:
        seen = client.observe(watched(*logins))

    assert all(isinstance(s, Observation) for s in seen[:20])
    assert all(isinstance(s, Unobserved) for s in seen[20:])
    assert entra_fake.requests == 2 + 1 + 3
    # one warning line for the call: how many, and the first why
    [warning] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warning["unobserved"] == 180 and "HTTP 418" in warning["why"]


def test_with_batches_at_once_failing_batches_still_stop_the_call(entra_fake, client_for):
    logins = people(entra_fake, 400)
    entra_fake.fail_page(418, after=2)

    seen = client_for(concurrency=4).observe(watched(*logins))

    assert sum(isinstance(s, Observation) for s in seen) == 40
    assert entra_fake.requests <= 2 + 2 + 4 + 3  # those in flight when it began, 3 more


def test_a_batch_answer_over_4_mib_leaves_its_logins_unobserved(entra_fake, client_for):
    logins = people(entra_fake, 45)
    entra_fake.pad_batch(5 * 1024 * 1024, times=1)
    client = client_for(concurrency=1)

    seen = client.observe(watched(*logins))

    assert all(isinstance(s, Unobserved) and "larger than 4 MiB" in s.why for s in seen[:20])
    assert all(isinstance(s, Observation) for s in seen[20:])

    entra_fake.pad_batch(3 * 1024 * 1024, times=1)  # within the cap: read
    assert all(isinstance(s, Observation) for s in client.observe(watched(*logins)))


def test_a_token_answer_over_256_kib_is_refused(entra_fake, client, waits):
    entra_fake.add_user("ann@school.example")
    entra_fake.pad_token(300 * 1024)

    with pytest.raises(DirectoryUnreachable, match="more than 256 KiB"):
        client.observe(watched("ann@school.example"))
    assert entra_fake.token_requests == 1 and waits == []  # not asked again

    entra_fake.pad_token(100 * 1024)  # within the cap: taken
    assert client.observe(watched("ann@school.example"))[0].found


def test_a_redirect_from_the_token_endpoint_is_not_followed(entra_fake, client, waits):
    entra_fake.add_user("ann@school.example")
    client.observe(watched("ann@school.example"))  # the tenant's discovery, a token
    entra_fake.expire_tokens()
    entra_fake.fail_page(307, where="login")

    with pytest.raises(DirectoryUnreachable, match="HTTP 307, a redirect"):
        client.observe(watched("ann@school.example"))
    assert entra_fake.elsewhere_requests == 0  # the client secret went nowhere else
    assert entra_fake.token_requests == 2 and waits == []


def test_a_redirect_of_the_tenant_s_discovery_is_not_followed(entra_fake, client, waits):
    entra_fake.add_user("ann@school.example")
    entra_fake.fail_page(302, where="login")

    with pytest.raises(DirectoryUnreachable, match="HTTP 302, a redirect"):
        client.observe(watched("ann@school.example"))
    assert entra_fake.elsewhere_requests == 0
    assert entra_fake.requests == 1 and waits == []  # not asked again


def test_a_timeout_is_unreachable(entra_fake, client_for):
    entra_fake.add_user("ann@school.example")
    client = client_for(timeout_s=0.3, attempts=2)
    client.observe(watched("ann@school.example"))  # the token, before Graph hangs
    entra_fake.hang(5)

    with pytest.raises(DirectoryUnreachable, match=r"no answer from 127\.0\.0\.1 within 0\.3 s"):
        client.observe(watched("ann@school.example"))
    entra_fake.hang(0)


def test_a_429_is_waited_for_as_long_as_retry_after_says(entra_fake, client, waits):
    entra_fake.add_user("ann@school.example")
    entra_fake.throttle(times=1, retry_after=7)

    [seen] = client.observe(watched("ann@school.example"))

    assert seen.found
    assert waits == [7]


def test_a_retry_after_beyond_max_wait_is_not_waited_for(entra_fake, client_for, waits):
    entra_fake.add_user("ann@school.example")
    entra_fake.throttle(times=5, retry_after=120)

    with pytest.raises(DirectoryUnreachable, match="longer than 60 s"):
        client_for(max_wait_s=60).observe(watched("ann@school.example"))
    assert waits == []


def test_a_sub_request_throttled_inside_a_batch_is_sent_again_alone(entra_fake, client_for, waits):
    logins = people(entra_fake, 25)
    entra_fake.throttle_user(logins[3], retry_after=3)

    seen = client_for(concurrency=1).observe(watched(*logins))

    assert all(isinstance(s, Observation) and s.found for s in seen)
    assert entra_fake.batch_sizes == [20, 1, 5]
    assert waits == [3]


def test_the_token_endpoint_failing_once_is_asked_again(entra_fake, client, waits):
    entra_fake.add_user("ann@school.example")
    client.observe(watched("ann@school.example"))
    entra_fake.expire_tokens()
    entra_fake.fail(500, times=1, where="login")

    [seen] = client.observe(watched("ann@school.example"))

    assert seen.found
    # msal's own cache of failed POSTs would have answered the retry without asking
    assert entra_fake.token_requests == 3
    assert len(waits) == 1


# Tokens and credentials


def test_an_expired_access_token_is_renewed_once(entra_fake, client):
    entra_fake.add_user("ann@school.example")
    client.observe(watched("ann@school.example"))
    entra_fake.expire_tokens()

    [seen] = client.observe(watched("ann@school.example"))

    assert seen.found
    assert entra_fake.token_requests == 2


def test_a_revoked_credential_is_rejected_with_entras_error(entra_fake, client, caplog):
    entra_fake.add_user("ann@school.example")
    client.observe(watched("ann@school.example"))
    entra_fake.revoke_credentials()

    with caplog.at_level(logging.DEBUG), pytest.raises(DirectoryCredentialsRejected) as raised:
        client.observe(watched("ann@school.example"))

    message = str(raised.value)
    assert "invalid_client" in message and "AADSTS7000222" in message
    assert entra_fake.client_secret not in message + caplog.text


def test_a_wrong_client_secret_is_refused_by_the_fake(entra_fake, client_for, caplog):
    entra_fake.add_user("ann@school.example")
    wrong = "Wr0ng~" + "z" * 34
    client = client_for(credentials={"client_secret": wrong})

    with (
        caplog.at_level(logging.DEBUG),
        capture_logs() as logs,
        pytest.raises(DirectoryCredentialsRejected) as raised,
    ):
        client.observe(watched("ann@school.example"))

    message = str(raised.value)
    assert "invalid_client" in message and "AADSTS7000215" in message
    assert "\n" not in message
    assert entra_fake.token_requests == 1 and entra_fake.batch_sizes == []
    for text in (message, repr(raised.value), caplog.text, repr(logs), repr(client)):
        assert wrong not in text and entra_fake.client_secret not in text


def test_an_unknown_client_id_and_an_unknown_tenant_are_refused(entra_fake, client_for):
    entra_fake.add_user("ann@school.example")
    options = entra_fake.source_options()

    other_app = client_for(options=options | {"client_id": "00000000-0000-0000-0000-00000000abcd"})
    with pytest.raises(DirectoryCredentialsRejected, match="unauthorized_client AADSTS700016"):
        other_app.observe(watched("ann@school.example"))
    other_tenant = client_for(
        options=options | {"tenant_id": "00000000-0000-0000-0000-0000000000ff"}
    )
    with pytest.raises(DirectoryCredentialsRejected, match="invalid_tenant AADSTS90002"):
        other_tenant.observe(watched("ann@school.example"))


def test_an_app_without_user_read_all_is_told_which_permission_to_grant(entra_fake, client):
    entra_fake.add_user("ann@school.example")
    entra_fake.deny_permission()

    with pytest.raises(DirectoryCredentialsRejected) as raised:
        client.observe(watched("ann@school.example"))

    assert "Authorization_RequestDenied" in str(raised.value)
    assert "User.Read.All" in str(raised.value)


def test_without_the_ca_bundle_the_tls_handshake_fails(entra_fake, client_for, waits):
    entra_fake.add_user("ann@school.example")
    client = client_for(ca_bundle=None)

    with pytest.raises(DirectoryUnreachable, match="TLS handshake failed"):
        client.observe(watched("ann@school.example"))
    assert len(waits) == 2  # asked 3 times
    assert entra_fake.requests == 0  # no request got through the handshake


def test_no_secret_and_no_bearer_in_errors_logs_or_reprs(entra_fake, client_for, caplog):
    entra_fake.add_user("ann@school.example")
    client = client_for(attempts=1)
    shown: list[str] = []

    with caplog.at_level(logging.DEBUG), capture_logs() as logs:
        client.observe(watched("ann@school.example"))
        entra_fake.fail(500)
        with pytest.raises(DirectoryUnreachable) as unreachable:
            client.observe(watched("ann@school.example"))
        entra_fake.fail(500, times=0)
        entra_fake.revoke_credentials()
        with pytest.raises(DirectoryCredentialsRejected) as rejected:
            client.observe(watched("ann@school.example"))

    for raised in (unreachable, rejected):
        shown += [str(raised.value), repr(raised.value)]
    shown += [caplog.text, repr([r.msg for r in caplog.records]), repr(logs), repr(client)]
    assert entra_fake.bearers_issued
    for text in shown:
        for secret in [entra_fake.client_secret, *entra_fake.bearers_issued]:
            assert secret not in text


# The fake checks what Entra checks


def test_the_fake_refuses_graph_without_its_bearer_and_batches_over_20(entra_fake):
    base = f"{entra_fake.url}/v1.0"
    with httpx.Client(verify=tls_context(entra_fake.ca_bundle)) as http:
        anonymous = http.get(f"{base}/users/ann@school.example")
        forged = http.post(f"{base}/$batch", json={"requests": []},
                           headers={"Authorization": "Bearer forged"})  # fmt: skip
        token = http.post(
            f"{entra_fake.url}/{entra_fake.tenant_id}/oauth2/v2.0/token",
            data={"grant_type": "client_credentials", "client_id": entra_fake.client_id,
                  "client_secret": entra_fake.client_secret,
                  "scope": f"{entra_fake.url}/.default"},
        ).json()["access_token"]  # fmt: skip
        wrong_scope = http.post(
            f"{entra_fake.url}/{entra_fake.tenant_id}/oauth2/v2.0/token",
            data={"grant_type": "client_credentials", "client_id": entra_fake.client_id,
                  "client_secret": entra_fake.client_secret, "scope": "User.Read.All"},
        )  # fmt: skip
        lookups = [{"id": str(n), "method": "GET", "url": "/users/x"} for n in range(21)]
        too_many = http.post(f"{base}/$batch", json={"requests": lookups},
                             headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    assert anonymous.status_code == forged.status_code == 401
    assert anonymous.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert wrong_scope.status_code == 400 and wrong_scope.json()["error"] == "invalid_scope"
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "BadRequest"


# What an answer means (graph.py)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, {"error": {"code": "Request_ResourceNotFound", "message": "gone"}}, "not found"),
        (404, {"error": {"code": "ResourceNotFound", "message": "no route"}}, Unobserved),
        (404, b"<html>Not Found</html>", Unobserved),
        (400, {"error": {"code": "Request_BadRequest", "message": "bad UPN"}}, Unobserved),
        (401, {"error": {"code": "InvalidAuthenticationToken", "message": "expired"}}, Renew),
        (401, b"Unauthorized", Unobserved),
        (403, b"<html>Forbidden</html>", Unobserved),
        (429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, Retry),
        (503, b"", Retry),
    ],
)
def test_what_each_answer_of_graph_means(status, body, expected):
    answer = answer_for("ann@school.example", status, {}, body)

    if expected == "not found":
        assert answer == Observation("ann@school.example", False, False, "not found")
    else:
        assert isinstance(answer, expected)


def test_a_403_with_graphs_error_is_a_refusal():
    body = {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient"}}
    with pytest.raises(DirectoryCredentialsRejected, match=r"User\.Read\.All"):
        answer_for("ann@school.example", 403, {}, body)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-03-04T08:30:15Z", datetime(2025, 3, 4, 8, 30, 15, tzinfo=UTC)),
        ("2025-03-04T10:30:15+02:00", datetime(2025, 3, 4, 8, 30, 15, tzinfo=UTC)),
        (None, None),
    ],
)
def test_password_change_times_are_aware_utc(value, expected):
    seen = read_user("ann", {"accountEnabled": True, "lastPasswordChangeDateTime": value})
    assert seen.password_changed_at == expected


@pytest.mark.parametrize("value", ["2025-03-04T08:30:15", "yesterday", 1741077015])
def test_an_unreadable_or_naive_time_leaves_the_login_unobserved(value):
    seen = read_user("ann", {"accountEnabled": True, "lastPasswordChangeDateTime": value})
    assert isinstance(seen, Unobserved) and "lastPasswordChangeDateTime" in seen.why


def test_a_user_without_account_enabled_is_unobserved():
    assert isinstance(read_user("ann", {"id": "x"}), Unobserved)

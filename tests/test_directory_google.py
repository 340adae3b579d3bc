"""The Google Workspace directory client against the fake token endpoint and Admin SDK."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests import google_fake as fakes
from tests.google_fake import (
    ADMIN,
    AUDIENCE,
    DIRECTORY_SCOPE,
    JWT_GRANT,
    REPORTS_SCOPE,
    rsa_key_pem,
    service_account_info,
)
from tests.helpers import private_key_forms
from worker.directories import google as google_module
from worker.directories.base import Observation, Unobserved, WatchedLogin
from worker.directories.google import GoogleClient, read_service_account
from worker.errors import DirectoryCredentialsRejected, DirectoryUnreachable, InvalidInput

google_fake = fakes.google_fake  # the fixture

NOW = datetime.now(UTC).replace(microsecond=0)
DOWNLOADED = NOW - timedelta(days=30)
ANN, BOB, CAT = "ann@school.example", "bob@school.example", "cat@school.example"


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client_for(fake, *, info=None, subject=None, sleeps=None, **settings) -> GoogleClient:
    return GoogleClient(
        info or fake.credentials()["service_account"],
        subject or fake.source_options()["admin_subject"],
        settings=fake.directory_settings(**settings),
        sleep=sleeps if sleeps is not None else Sleeps(),
    )


def watch(*logins: str, since: datetime = DOWNLOADED) -> list[WatchedLogin]:
    return [WatchedLogin(login, since) for login in logins]


def warmed(fake, **kwargs) -> GoogleClient:
    """A client that already holds an access token (the faults that follow hit the API)."""
    client = client_for(fake, **kwargs)
    assert client.observe(watch(ADMIN))[0].found
    return client


# What is observed


def test_an_active_user_is_found_and_enabled(google_fake):
    google_fake.add_user(ANN)
    [seen] = client_for(google_fake).observe(watch(ANN))
    assert seen == Observation(ANN, found=True, enabled=True, status="active")


def test_suspended_and_archived_users_are_disabled_with_google_s_word(google_fake):
    google_fake.add_user(ANN, enabled=False)
    google_fake.add_user(BOB)
    google_fake.archive(BOB)
    ann, bob = client_for(google_fake).observe(watch(ANN, BOB))
    assert (ann.found, ann.enabled, ann.status) == (True, False, "suspended")
    assert (bob.found, bob.enabled, bob.status) == (True, False, "archived")


def test_a_deleted_user_is_not_found(google_fake):
    google_fake.add_user(ANN)
    google_fake.delete(ANN)
    [seen] = client_for(google_fake).observe(watch(ANN))
    assert seen == Observation(ANN, found=False, enabled=False, status="not found")


def test_the_latest_password_change_is_read_across_pages(google_fake):
    # Given more password changes than the fake's page holds
    google_fake.add_user(ANN)
    latest = NOW - timedelta(days=2, microseconds=-123_000)
    for days in (20, 9, 15, 4, 12):
        google_fake.set_password_changed(ANN, NOW - timedelta(days=days))
    google_fake.set_password_changed(ANN, latest)
    # When Ann is observed
    [seen] = client_for(google_fake).observe(watch(ANN))
    # Then the latest one is reported, as an aware UTC datetime
    assert seen.password_changed_at == latest.replace(microsecond=123_000)
    assert seen.password_changed_at.tzinfo == UTC


def test_an_admin_reset_is_a_password_change_too(google_fake):
    google_fake.add_user(ANN, password_changed_at=NOW - timedelta(days=10))
    google_fake.add_user(BOB, password_changed_at=NOW - timedelta(days=3))
    for login in (CAT, "dan@school.example", "eve@school.example"):
        google_fake.add_user(login)
        google_fake.admin_reset_password(login, NOW - timedelta(days=8))
    google_fake.admin_reset_password(ANN.upper(), NOW - timedelta(days=5))
    google_fake.admin_reset_password(BOB, NOW - timedelta(days=6))
    ann, bob, cat = client_for(google_fake).observe(watch(ANN, BOB, CAT))
    assert ann.password_changed_at == NOW - timedelta(days=5)  # the admin's, later
    assert bob.password_changed_at == NOW - timedelta(days=3)  # her own, later
    assert cat.password_changed_at == NOW - timedelta(days=8)


def test_password_edit_is_read_under_user_accounts_and_login(google_fake):
    # Google's current docs list password_edit under user_accounts, older ones under login
    google_fake.add_user(ANN)
    google_fake.set_password_changed(ANN, NOW - timedelta(days=4), application="login")
    google_fake.add_user(BOB)
    google_fake.set_password_changed(BOB, NOW - timedelta(days=6), application="user_accounts")
    google_fake.add_user(CAT)
    google_fake.set_password_changed(CAT, NOW - timedelta(days=9), application="login")
    google_fake.set_password_changed(CAT, NOW - timedelta(days=7), application="user_accounts")
    google_fake.admin_reset_password(CAT, NOW - timedelta(days=8))
    ann, bob, cat = client_for(google_fake).observe(watch(ANN, BOB, CAT))
    assert ann.password_changed_at == NOW - timedelta(days=4)
    assert bob.password_changed_at == NOW - timedelta(days=6)
    assert cat.password_changed_at == NOW - timedelta(days=7)  # the latest of the three


def test_an_org_full_of_admin_resets_does_not_hide_a_user_s_own(google_fake, monkeypatch):
    # Many resets of other people (more than the page bound of one question) ...
    monkeypatch.setattr(google_module, "MAX_PAGES", 3)
    google_fake.add_user(ANN, password_changed_at=NOW - timedelta(days=6))
    google_fake.admin_reset_password(ANN, NOW - timedelta(days=5))
    for n in range(10):
        login = f"user{n}@school.example"
        google_fake.add_user(login)
        google_fake.admin_reset_password(login, NOW - timedelta(days=2))
    client = client_for(google_fake)
    [ann] = client.observe(watch(ANN))
    # ... are not read: Ann's question names her USER_EMAIL, and her reset is found
    assert ann.password_changed_at == NOW - timedelta(days=5)
    assert client.requests_made == 1 + 4  # the token; users.get and three Reports questions


def test_a_user_with_more_pages_than_the_bound_is_unobserved_saying_so(google_fake, monkeypatch):
    monkeypatch.setattr(google_module, "MAX_PAGES", 2)
    google_fake.add_user(ANN)
    for days in range(1, 6):  # five resets: three of the fake's pages
        google_fake.admin_reset_password(ANN, NOW - timedelta(days=days))
    google_fake.add_user(BOB, password_changed_at=NOW - timedelta(days=3))
    ann, bob = client_for(google_fake).observe(watch(ANN, BOB))
    assert isinstance(ann, Unobserved)
    assert "more than 2 pages of admin CHANGE_PASSWORD activities" in ann.why
    assert bob.password_changed_at == NOW - timedelta(days=3)


def test_a_password_change_before_since_is_not_reported(google_fake):
    google_fake.add_user(ANN, password_changed_at=DOWNLOADED - timedelta(days=1))
    google_fake.add_user(BOB)
    google_fake.admin_reset_password(BOB, DOWNLOADED - timedelta(hours=1))
    google_fake.add_user(CAT)
    observed = client_for(google_fake).observe(
        [*watch(ANN, BOB), WatchedLogin(CAT, DOWNLOADED - timedelta(days=3))]
    )
    assert [o.password_changed_at for o in observed] == [None, None, None]


def test_a_since_beyond_the_reports_reach_is_clamped_to_it(google_fake):
    # The fake answers 400 to a startTime more than 180 days back, as the Reports API does
    google_fake.add_user(ANN, password_changed_at=NOW - timedelta(days=100))
    [seen] = client_for(google_fake).observe(watch(ANN, since=NOW - timedelta(days=400)))
    assert seen.password_changed_at == NOW - timedelta(days=100)


def test_a_user_named_by_an_alias_case_is_matched(google_fake):
    google_fake.add_user(ANN, password_changed_at=NOW - timedelta(days=1))
    [seen] = client_for(google_fake).observe(watch("Ann@School.example"))
    assert seen.login == "Ann@School.example"
    assert seen.password_changed_at == NOW - timedelta(days=1)


def test_a_user_outside_the_organization_is_unobserved_not_a_refused_credential(google_fake):
    # Google answers 403 forbidden for it, as for an admin without the right
    google_fake.add_user(ANN)
    outsider, ann = client_for(google_fake).observe(watch("jo@elsewhere.example", ANN))
    assert isinstance(outsider, Unobserved) and "does not let the admin read" in outsider.why
    assert ann.found


# Failures about one login, or the whole directory


def test_a_500_is_retried_and_the_login_observed(google_fake):
    google_fake.add_user(ANN)
    sleeps = Sleeps()
    client = warmed(google_fake, sleeps=sleeps)
    google_fake.fail(500, times=1)
    [seen] = client.observe(watch(ANN))
    assert seen.found and seen.enabled
    assert len(sleeps) == 1 and 1 <= sleeps[0] <= 1.2  # backoff, with jitter


def test_a_login_failing_through_its_retries_is_unobserved_and_the_others_observed(google_fake):
    google_fake.add_user(ANN)
    google_fake.add_user(BOB)
    client = warmed(google_fake, concurrency=1)
    google_fake.fail(500, times=3)  # the three attempts for Ann
    ann, bob = client.observe(watch(ANN, BOB))
    assert isinstance(ann, Unobserved) and "HTTP 500 backendError" in ann.why
    assert isinstance(bob, Observation) and bob.found


def test_500_always_makes_the_directory_unreachable(google_fake):
    google_fake.add_user(ANN)
    client = warmed(google_fake)
    google_fake.fail(500)
    with pytest.raises(DirectoryUnreachable, match="HTTP 500"):
        client.observe(watch(ANN, BOB))


def test_the_rest_of_a_call_is_not_asked_after_three_logins_fail_in_a_row(google_fake):
    logins = [f"user{n}@school.example" for n in range(6)]
    for login in logins:
        google_fake.add_user(login)
    client = warmed(google_fake, concurrency=1)
    google_fake.fail(503)
    before = google_fake.requests
    with pytest.raises(DirectoryUnreachable):
        client.observe(watch(*logins))
    assert google_fake.requests - before == 3 * 3  # three logins, three attempts each


def test_the_stopped_logins_are_unobserved_when_others_were_observed(google_fake):
    logins = [f"user{n}@school.example" for n in range(5)]
    for login in (ANN, *logins):
        google_fake.add_user(login)
    client = warmed(google_fake, concurrency=1)
    client._attempts = 1
    google_fake.fail(502, times=3, after=4)  # Ann's user and three Reports questions answer
    answers = client.observe(watch(ANN, *logins))
    assert answers[0].found
    assert [type(a).__name__ for a in answers[1:]] == ["Unobserved"] * 5
    assert "HTTP 502" in answers[1].why
    assert [a.why for a in answers[4:]] == ["the directory stopped answering"] * 2


def test_an_html_404_is_unobserved_never_not_found(google_fake):
    google_fake.add_user(ANN)
    client = warmed(google_fake)
    google_fake.fail_html_404()
    [seen] = client.observe(watch(ANN))
    assert isinstance(seen, Unobserved)
    assert "not Google's error JSON" in seen.why


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        (lambda fake: fake.fail_html_404(), "HTTP 404 that is not Google's error JSON"),
        (lambda fake: fake.fail(status=418), "HTTP 418 invalid"),
        (lambda fake: fake.redirect(), "HTTP 307, a redirect (not followed)"),
        (lambda fake: fake.oversize(), "an answer larger than 256 KiB"),
    ],
)
def test_a_proxy_answering_errors_costs_three_requests_and_one_warning(
    google_fake, caplog, fault, why
):
    # Failures that are not retried count toward "three logins in a row" like 5xx do
    logins = [f"user{n}@school.example" for n in range(6)]
    for login in logins:
        google_fake.add_user(login)
    client = warmed(google_fake, concurrency=1)
    fault(google_fake)
    before = google_fake.requests
    caplog.set_level(logging.DEBUG)
    answers = client.observe(watch(*logins))
    assert google_fake.requests - before == 3  # one per login, not retried
    assert [type(a) for a in answers] == [Unobserved] * 6
    assert answers[0].why.startswith(why) and answers[0].why.endswith("from the Directory API")
    assert [a.why for a in answers[3:]] == ["the directory stopped answering"] * 3
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "google_logins_unobserved" in warnings[0].getMessage()
    assert "'unobserved': 6" in warnings[0].getMessage() and why in warnings[0].getMessage()
    assert google_fake.redirects_followed == 0


def test_users_google_will_not_show_do_not_stop_the_call(google_fake):
    # Google's 403 for users outside the organization is an answer, not a failing directory
    google_fake.add_user(ANN)
    outsiders = [f"jo{n}@elsewhere.example" for n in range(4)]
    *seen, ann = client_for(google_fake, concurrency=1).observe(watch(*outsiders, ANN))
    assert all("does not let the admin read" in s.why for s in seen)
    assert ann.found


def test_a_redirect_from_the_reports_api_is_not_followed(google_fake):
    google_fake.add_user(ANN)
    google_fake.add_user(BOB)
    client = warmed(google_fake, concurrency=1)
    google_fake.redirect(times=1, after=1)  # Ann's users.get answers, her first Reports: 307
    ann, bob = client.observe(watch(ANN, BOB))
    assert isinstance(ann, Unobserved) and "redirect (not followed) from the Reports API" in ann.why
    assert bob.found and google_fake.redirects_followed == 0


def test_a_redirect_from_the_token_endpoint_is_not_followed(google_fake):
    # Following a 307 would post the signed assertion wherever it points
    client = client_for(google_fake)
    google_fake.redirect(times=1)
    with pytest.raises(DirectoryUnreachable, match=r"redirect \(HTTP 307\), not followed"):
        client.observe(watch(ANN))
    assert google_fake.redirects_followed == 0
    assert client.requests_made == 1


def test_an_oversized_token_answer_is_unreachable(google_fake):
    client = client_for(google_fake)
    google_fake.oversize(times=1)
    with pytest.raises(DirectoryUnreachable, match="more than 256 KiB"):
        client.observe(watch(ANN))


def test_an_oversized_reports_page_leaves_the_login_unobserved(google_fake):
    google_fake.add_user(ANN)
    google_fake.add_user(BOB, password_changed_at=NOW - timedelta(days=1))
    client = warmed(google_fake, concurrency=1)
    google_fake.oversize(times=1, after=1)
    ann, bob = client.observe(watch(ANN, BOB))
    assert ann == Unobserved(ANN, "an answer larger than 256 KiB from the Reports API")
    assert bob.password_changed_at == NOW - timedelta(days=1)


def test_a_timeout_makes_the_directory_unreachable(google_fake):
    google_fake.add_user(ANN)
    client = warmed(google_fake, timeout_s=0.3)
    client._attempts = 2
    google_fake.hang(5)
    with pytest.raises(DirectoryUnreachable, match=r"no answer from Google within 0\.3 s"):
        client.observe(watch(ANN))


@pytest.mark.parametrize("status", [429, 403])
def test_throttling_waits_for_retry_after_and_observes(google_fake, status):
    # 403 rateLimitExceeded is the Admin SDK slowing us down, not refusing the credential
    google_fake.add_user(ANN)
    sleeps = Sleeps()
    client = warmed(google_fake, sleeps=sleeps)
    google_fake.throttle(times=1, retry_after=7, status=status)
    [seen] = client.observe(watch(ANN))
    assert seen.found
    assert sleeps == [7.0]


def test_a_retry_after_beyond_max_wait_leaves_the_login_unobserved(google_fake):
    google_fake.add_user(ANN)
    google_fake.add_user(BOB)
    sleeps = Sleeps()
    client = warmed(google_fake, sleeps=sleeps, concurrency=1)
    google_fake.throttle(times=1, retry_after=3600)
    ann, bob = client.observe(watch(ANN, BOB))
    assert isinstance(ann, Unobserved) and "rateLimitExceeded" in ann.why
    assert bob.found and sleeps == []


def test_a_busy_token_endpoint_is_retried_with_the_injected_sleep(google_fake):
    google_fake.add_user(ANN)
    sleeps = Sleeps()
    client = client_for(google_fake, sleeps=sleeps)
    google_fake.fail(503, times=2)
    [seen] = client.observe(watch(ANN))
    assert seen.found and len(sleeps) == 2


def test_a_token_endpoint_that_cannot_be_reached_is_unreachable(google_fake):
    client = client_for(google_fake, google_token_url="http://127.0.0.1:9/token")
    with pytest.raises(DirectoryUnreachable, match="cannot reach Google's token endpoint"):
        client.observe(watch(ANN))


# Credentials


def test_an_expired_access_token_is_renewed_once(google_fake):
    google_fake.add_user(ANN)
    client = warmed(google_fake)
    google_fake.expire_tokens()
    before = google_fake.token_requests
    assert client.observe(watch(ANN))[0].found
    assert google_fake.token_requests - before == 1


def test_a_revoked_key_is_rejected_with_google_s_error(google_fake):
    google_fake.add_user(ANN)
    client = warmed(google_fake)
    google_fake.revoke_credentials()
    with pytest.raises(DirectoryCredentialsRejected, match=r"invalid_grant: Invalid JWT Signature"):
        client.observe(watch(ANN))


def test_a_jwt_signed_with_another_key_is_refused_by_the_fake(google_fake):
    forged = service_account_info(google_fake.token_url, key_label="another")
    client = client_for(google_fake, info=forged)
    with pytest.raises(DirectoryCredentialsRejected, match="invalid_grant") as raised:
        client.observe(watch(ANN))
    assert "Invalid JWT Signature" in str(raised.value)
    assert google_fake.bearers_issued == []


def test_a_subject_outside_the_domain_is_an_invalid_grant(google_fake):
    client = client_for(google_fake, subject="someone@elsewhere.example")
    with pytest.raises(DirectoryCredentialsRejected, match="Invalid email or User ID"):
        client.observe(watch(ANN))


def test_scopes_not_delegated_are_unauthorized_client(google_fake):
    google_fake.delegated_scopes = {DIRECTORY_SCOPE}  # the Reports scope was forgotten
    client = client_for(google_fake)
    with pytest.raises(DirectoryCredentialsRejected, match="unauthorized_client") as raised:
        client.observe(watch(ANN))
    assert "domain-wide delegation" in str(raised.value)


def test_a_subject_that_is_not_an_admin_is_refused_by_the_admin_sdk(google_fake):
    # Google issues the token (delegation is granted), and the Admin SDK answers 403
    google_fake.add_user(BOB)
    client = client_for(google_fake, subject=BOB)
    with pytest.raises(DirectoryCredentialsRejected, match="forbidden: Not Authorized"):
        client.observe(watch(ANN))


def test_the_fake_checks_the_grant_as_google_does(google_fake):
    # A direct look at the fake: only a well signed, fresh grant for the domain gets a bearer
    from google.auth import crypt
    from google.auth import jwt as google_jwt

    def grant(label="main", **claims):
        signer = crypt.RSASigner.from_string(
            rsa_key_pem(label), "3f1c0d5e7a9b2c4d6e8f0a1b3c5d7e9f1a2b3c4d"
        )
        now = int(datetime.now(UTC).timestamp())
        payload = {
            "iss": google_fake.credentials()["service_account"]["client_email"],
            "scope": f"{DIRECTORY_SCOPE} {REPORTS_SCOPE}",
            "aud": AUDIENCE,
            "sub": ADMIN,
            "iat": now,
            "exp": now + 3600,
        } | claims
        assertion = google_jwt.encode(signer, payload).decode()
        body = {"grant_type": JWT_GRANT, "assertion": assertion}
        return httpx.post(google_fake.token_url, data=body)

    assert grant().status_code == 200
    assert grant("another").json()["error_description"] == "Invalid JWT Signature."
    assert grant(aud="https://elsewhere.example/token").json()["error"] == "invalid_grant"
    stale = int((datetime.now(UTC) - timedelta(hours=3)).timestamp())
    assert grant(iat=stale, exp=stale + 3600).json()["error"] == "invalid_grant"
    assert grant(exp=int(datetime.now(UTC).timestamp()) + 7200).json()["error"] == "invalid_grant"
    assert grant(iss="other@p.iam.gserviceaccount.com").json()["error"] == "invalid_grant"
    unauthorized = httpx.get(google_fake.url + f"/admin/directory/v1/users/{ADMIN}")
    assert unauthorized.status_code == 401
    assert unauthorized.json()["error"]["errors"][0]["reason"] == "authError"


def test_no_credential_appears_in_logs_errors_or_repr(google_fake, caplog):
    caplog.set_level(logging.DEBUG)
    google_fake.add_user(ANN)
    info = google_fake.credentials()["service_account"]
    client = warmed(google_fake)
    google_fake.fail_html_404(times=1)
    client.observe(watch(ANN, BOB))
    google_fake.revoke_credentials()
    with pytest.raises(DirectoryCredentialsRejected) as raised:
        client.observe(watch(ANN))
    seen = caplog.text + str(raised.value) + repr(raised.value) + repr(client)
    assert "eyJ" not in seen  # no assertion
    for bearer in google_fake.bearers_issued:
        assert bearer not in seen and bearer[5:40] not in seen
    for form in private_key_forms(info["private_key"].encode()):
        assert form.decode(errors="replace") not in seen
    assert "google_logins_unobserved" in caplog.text  # the logs were captured


def test_requests_made_counts_every_request_token_included(google_fake):
    google_fake.add_user(ANN, password_changed_at=NOW - timedelta(days=1))
    for days in (2, 3, 4):
        google_fake.admin_reset_password(ANN, NOW - timedelta(days=days))
    client = client_for(google_fake)
    google_fake.fail(500, times=1)
    client.observe(watch(ANN, BOB))
    assert client.requests_made == google_fake.requests
    # the token (2: one 500), two users, Ann's one page of user_accounts and one of login
    # password_edit, two pages of her admin resets (the fake's pages hold two)
    assert client.requests_made == 2 + 2 + 1 + 1 + 2


# The key file `sources add` reads


def test_a_service_account_key_file_is_read():
    info = service_account_info("https://oauth2.googleapis.com/token")
    assert read_service_account(json.dumps(info)) == info


def _without_email(info: dict) -> str:
    return json.dumps({k: v for k, v in info.items() if k != "client_email"})


def _truncated_key(info: dict) -> str:
    return json.dumps(
        info | {"private_key": info["private_key"][:300] + "-----END PRIVATE KEY-----"}
    )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda i: "not json {", "not JSON"),
        (lambda i: json.dumps([i]), "not a service account key"),
        (lambda i: json.dumps(i | {"type": "authorized_user"}), "not a service account key"),
        (_without_email, "lacks client_email"),
        (
            lambda i: json.dumps(i | {"private_key": "", "private_key_id": None}),
            "lacks private_key",
        ),
        (_truncated_key, "not a readable RSA"),
    ],
)
def test_an_unusable_key_file_is_refused_in_one_line_without_the_key(change, why):
    info = service_account_info("https://oauth2.googleapis.com/token")
    with pytest.raises(InvalidInput, match=why) as raised:
        read_service_account(change(info))
    message = str(raised.value)
    assert "\n" not in message
    assert "PRIVATE KEY" not in message and info["private_key"][40:80] not in message

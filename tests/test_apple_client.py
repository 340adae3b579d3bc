"""The client of Apple's device enrollment service, against the signature-checking fake
(tests/apple_fake.py): sessions, every classified answer, retries, and no secret anywhere."""

from __future__ import annotations

import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from tests.helpers import FIXTURE_NOW
from tests.tokenfiles import credentials
from worker.apple.client import AppleClient, SessionCache
from worker.apple.verdicts import REJECTED_CODES, Verdict
from worker.config import AppleSettings
from worker.crypto.payload import TokenCredentials
from worker.errors import AppleMalformed, AppleRejected, AppleUnreachable


class Waits(list):
    """Stands in for time.sleep: records each wait instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def waits():
    return Waits()


@pytest.fixture
def client_for(apple, waits):
    made = []

    def make(**settings) -> AppleClient:
        options = {k: settings.pop(k) for k in ("attempts", "max_retry_after_s") if k in settings}
        client = AppleClient(AppleSettings(url=apple.url, **settings), sleep=waits, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(client_for):
    return client_for()


def new_token(apple=None, **account) -> tuple[dict[str, str], TokenCredentials]:
    """A token's credentials (enrolled with the fake when it is given)."""
    creds = credentials(FIXTURE_NOW + timedelta(days=300))
    if apple is not None:
        apple.enroll(creds, **account)
    return creds, TokenCredentials.model_validate(creds)


# Accepted


def test_an_enrolled_token_gets_its_account_with_who_downloaded_it(apple, client):
    creds, token = new_token()
    enrolled = apple.enroll(creds, admin_id="ann@school.example", org_name="Springfield High")

    account = client.account(token)

    assert account.admin_id == "ann@school.example"
    assert account.server_uuid == enrolled["server_uuid"]
    assert (account.server_name, account.org_name, account.org_type) == (
        "MDM Server",
        "Springfield High",
        "edu",
    )
    assert apple.requests == [("GET", "/session", 200), ("GET", "/account", 200)]
    assert all(agent.startswith("tokenwarden/") for agent in apple.user_agents)


def test_an_older_answer_with_facilitator_id_names_the_downloader(apple, client):
    _, token = new_token(apple, admin_id=None, facilitator_id="old@school.example")

    assert client.account(token).admin_id == "old@school.example"


def test_check_of_an_accepted_token_carries_the_account(apple, client):
    _, token = new_token(apple, admin_id="ann@school.example")

    result = client.check(token)

    assert result.verdict is Verdict.ACCEPTED
    assert result.account.admin_id == "ann@school.example"
    assert (result.code, result.detail, result.confirmed) == (None, "", True)


# Rejected and terms


@pytest.mark.parametrize("code", REJECTED_CODES)
def test_a_revoked_token_is_rejected_with_apples_code(apple, client, code):
    creds, token = new_token(apple)
    apple.revoke(creds["consumer_key"], code=code)

    result = client.check(token)

    assert (result.verdict, result.code) == (Verdict.REJECTED, code)
    assert result.detail == f"Apple rejected the token ({code}): download a new token from ASM/ABM"


def test_a_token_revoked_while_its_session_is_cached_is_rejected(apple, client):
    creds, token = new_token(apple)
    client.account(token)
    apple.revoke(creds["consumer_key"])

    with pytest.raises(AppleRejected) as raised:
        client.account(token)

    assert raised.value.code == "token_rejected"
    assert apple.paths()[2:] == ["/account", "/session"]


def test_a_token_replaced_by_a_newer_download_is_rejected(apple, client):
    creds, old = new_token(apple)
    newer = credentials(FIXTURE_NOW + timedelta(days=300), consumer_key=creds["consumer_key"])
    apple.enroll(newer)

    assert client.check(old).code == "token_rejected"
    assert client.check(TokenCredentials.model_validate(newer)).verdict is Verdict.ACCEPTED


def test_a_wrong_consumer_secret_is_a_bad_signature(apple, client):
    creds, _ = new_token(apple)
    forged = TokenCredentials.model_validate(creds | {"consumer_secret": "CS_" + "0" * 40})

    result = client.check(forged)

    assert (result.verdict, result.code) == (Verdict.REJECTED, "signature_invalid")
    assert apple.sessions_issued == []


def test_a_wrong_access_secret_is_a_bad_signature(apple, client):
    creds, _ = new_token(apple)
    forged = TokenCredentials.model_validate(creds | {"access_secret": "AS_" + "0" * 40})

    assert client.check(forged).code == "signature_invalid"


def test_an_unknown_consumer_key_is_rejected(apple, client):
    _, stranger = new_token()

    assert client.check(stranger).code == "consumer_key_rejected"


def test_an_unknown_access_token_is_rejected(apple, client):
    creds, _ = new_token(apple)
    other = TokenCredentials.model_validate(creds | {"access_token": "AT_" + "1" * 80})

    assert client.check(other).code == "token_rejected"


def test_terms_not_accepted_until_someone_signs_them(apple, client):
    creds, token = new_token(apple)
    client.account(token)
    apple.terms(creds["consumer_key"], signed=False)

    waiting = client.check(token)
    apple.terms(creds["consumer_key"], signed=True)
    signed = client.check(token)

    assert (waiting.verdict, waiting.code) == (Verdict.TERMS_NOT_ACCEPTED, "T_C_NOT_SIGNED")
    assert "someone with the Administrator role must sign in" in waiting.detail
    assert signed.verdict is Verdict.ACCEPTED


def test_terms_not_accepted_on_a_new_session_too(apple, client):
    creds, token = new_token(apple)
    apple.terms(creds["consumer_key"], signed=False)

    assert client.check(token).verdict is Verdict.TERMS_NOT_ACCEPTED
    assert apple.requests == [("GET", "/session", 403)]


# Transient: retried, then unreachable


def test_429_and_503_are_retried_with_growing_waits_then_succeed(apple, client, waits):
    _, token = new_token(apple)
    apple.then(503, 429)

    assert client.check(token).verdict is Verdict.ACCEPTED
    assert apple.requests[:3] == [("GET", "/session", s) for s in (503, 429, 200)]
    assert len(waits) == 2
    assert 1.0 <= waits[0] <= 1.2 and 2.0 <= waits[1] <= 2.4


def test_retry_after_in_seconds_is_honoured(apple, client, waits):
    _, token = new_token(apple)
    apple.then((503, {"Retry-After": "2"}, b""), (429, {"Retry-After": "7"}, b""))

    client.account(token)

    assert waits == [2.0, 7.0]


def test_retry_after_is_capped(apple, client_for, waits):
    _, token = new_token(apple)
    apple.then((429, {"Retry-After": "86400"}, b""))

    client_for(max_retry_after_s=30).account(token)

    assert waits == [30]


def test_503_through_every_attempt_is_unreachable(apple, client, waits):
    _, token = new_token(apple)
    client.account(token)
    apple.then(503, 503, 503)

    result = client.check(token)

    assert (result.verdict, result.code) == (Verdict.UNREACHABLE, "http_503")
    assert result.detail == "HTTP 503 from /account, 3 attempts"
    assert len(waits) == 2
    assert result.confirmed is False


def test_the_number_of_attempts_is_a_setting(apple, client_for, waits):
    _, token = new_token(apple)
    apple.then(500, 500, 500, 500, 500)

    with pytest.raises(AppleUnreachable) as raised:
        client_for(attempts=5).account(token)

    assert str(raised.value) == "HTTP 500 from /session, 5 attempts"
    assert len(waits) == 4


def test_a_dropped_connection_every_time_is_unreachable(apple, client):
    _, token = new_token(apple)
    apple.then("close", "close", "close")

    result = client.check(token)

    assert (result.verdict, result.code) == (Verdict.UNREACHABLE, "connection")
    assert result.detail.endswith(", 3 attempts")


def test_a_dropped_connection_once_is_retried(apple, client):
    _, token = new_token(apple)
    apple.then("close")

    assert client.check(token).verdict is Verdict.ACCEPTED


def test_a_closed_port_is_unreachable(waits):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, token = new_token()

    with AppleClient(AppleSettings(url=f"http://127.0.0.1:{port}"), sleep=waits) as client:
        result = client.check(token)

    assert (result.verdict, result.code) == (Verdict.UNREACHABLE, "connection")
    assert result.detail == "cannot reach 127.0.0.1 for /session (ConnectError), 3 attempts"


def test_no_answer_within_the_timeout_is_unreachable(apple, client_for):
    _, token = new_token(apple)
    apple.then("hang", "hang", "hang")

    result = client_for(timeout_s=0.2).check(token)

    assert (result.verdict, result.code) == (Verdict.UNREACHABLE, "timeout")
    assert result.detail == "no answer from 127.0.0.1 for /session within 0.2 s, 3 attempts"


# Malformed


def test_an_answer_that_is_not_json_is_malformed_and_logged(apple, client, caplog):
    _, token = new_token(apple)
    client.account(token)
    apple.then("garbage")

    with caplog.at_level(logging.INFO):
        result = client.check(token)

    assert (result.verdict, result.code) == (Verdict.MALFORMED, "not_json")
    assert "HTTP 200 from /account: " in result.detail and "not json at all" in result.detail
    logged = [r.msg for r in caplog.records if "apple_answer_malformed" in str(r.msg)]
    assert len(logged) == 1
    assert (logged[0]["status"], logged[0]["path"]) == (200, "/account")
    assert "not json at all" in logged[0]["body"]


def test_a_session_answer_that_is_not_json_is_malformed(apple, client):
    _, token = new_token(apple)
    apple.then("garbage")

    assert client.check(token).code == "not_json"


def test_a_404_is_malformed(apple, client):
    _, token = new_token(apple)
    apple.then((404, {"Content-Type": "text/plain"}, b"NOT_FOUND"))

    result = client.check(token)

    assert (result.verdict, result.code) == (Verdict.MALFORMED, "http_404")
    assert result.detail.endswith("HTTP 404 from /session: NOT_FOUND")


def test_an_account_without_server_uuid_is_malformed(apple, client):
    _, token = new_token(apple, server_uuid=None)

    result = client.check(token)

    assert (result.verdict, result.code) == (Verdict.MALFORMED, "no_server_uuid")


def test_a_bare_403_is_malformed_not_a_rejection(apple, client):
    _, token = new_token(apple)
    apple.then((403, {"Content-Type": "text/html"}, b"<h1>403 Forbidden</h1>"))

    assert client.check(token).verdict is Verdict.MALFORMED


def test_an_answer_too_large_is_malformed(apple, client):
    _, token = new_token(apple)
    apple.then((200, {}, b'{"auth_session_token": "' + b"x" * 300_000 + b'"}'))

    assert client.check(token).code == "too_large"


# Sessions


def test_one_session_serves_many_account_calls(apple, client):
    _, token = new_token(apple)

    client.account(token)
    client.account(token)

    assert apple.paths() == ["/session", "/account", "/account"]
    assert len(apple.sessions_issued) == 1


def test_each_token_has_its_own_session(apple, client):
    _, first = new_token(apple, admin_id="a@school.example")
    _, second = new_token(apple, admin_id="b@school.example")

    assert [client.account(t).admin_id for t in (first, second, first, second)] == [
        "a@school.example",
        "b@school.example",
        "a@school.example",
        "b@school.example",
    ]
    assert apple.paths().count("/session") == 2


def test_an_expired_session_is_renewed_once_and_the_call_replayed(apple, client):
    _, token = new_token(apple, admin_id="ann@school.example")
    client.account(token)
    apple.expire_sessions()

    assert client.account(token).admin_id == "ann@school.example"
    assert apple.requests[2:] == [
        ("GET", "/account", 401),
        ("GET", "/session", 200),
        ("GET", "/account", 200),
    ]
    assert client.account(token).admin_id == "ann@school.example"
    assert apple.paths().count("/session") == 2  # the renewed session is kept


def test_a_second_401_is_malformed_not_a_loop(apple, client):
    _, token = new_token(apple)
    apple.session_lifetime_s = -1  # every session is dead on arrival

    result = client.check(token)

    assert (result.verdict, result.code) == (Verdict.MALFORMED, "http_401")
    assert "HTTP 401 from /account: UNAUTHORIZED" in result.detail
    assert apple.paths() == ["/session", "/account", "/session", "/account"]


def test_a_session_handed_out_in_a_response_header_replaces_the_old(apple, client):
    _, token = new_token(apple)
    apple.rotate_sessions = True

    for _ in range(3):
        client.account(token)

    # The fake stops honouring a session once it hands out the next: a client that kept the
    # old one would have been answered 401 and opened new sessions.
    assert apple.requests == [("GET", "/session", 200)] + [("GET", "/account", 200)] * 3
    assert len(apple.sessions_issued) == 4


def test_sessions_of_many_tokens_asked_from_many_threads(apple, client):
    tokens = [new_token(apple, admin_id=f"user{n}@school.example")[1] for n in range(12)]

    with ThreadPoolExecutor(4) as pool:
        admins = list(pool.map(lambda t: client.account(t).admin_id, tokens * 3))

    assert admins == [f"user{n}@school.example" for n in range(12)] * 3
    assert all(status == 200 for _, _, status in apple.requests)


def test_the_session_cache_is_bounded_and_shows_no_session():
    cache = SessionCache(capacity=2)
    cache.put("a", "session-a")
    cache.put("b", "session-b")
    cache.get("a")  # a used last: b goes first
    cache.put("c", "session-c")

    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("session-a", None, "session-c")
    assert "session-" not in repr(cache)
    cache.drop("a", "another session")
    assert cache.get("a") == "session-a"


# The fake checks what Apple checks


def test_the_fake_refuses_a_replayed_session_request(apple):
    import httpx
    from oauthlib.oauth1 import Client

    creds, _ = new_token(apple)
    signer = Client(
        creds["consumer_key"],
        client_secret=creds["consumer_secret"],
        resource_owner_key=creds["access_token"],
        resource_owner_secret=creds["access_secret"],
    )
    _, headers, _ = signer.sign(apple.url + "/session", "GET")

    first = httpx.get(apple.url + "/session", headers=headers)
    replayed = httpx.get(apple.url + "/session", headers=headers)

    assert first.status_code == 200
    assert replayed.status_code == 401
    assert 'oauth_problem="nonce_used"' in replayed.headers["www-authenticate"]


def test_the_fake_refuses_account_without_the_protocol_version(apple, client):
    import httpx

    _, token = new_token(apple)
    client.account(token)
    session = apple.sessions_issued[-1]

    answer = httpx.get(apple.url + "/account", headers={"X-ADM-Auth-Session": session})

    assert answer.status_code == 400


# Secrets


def test_no_secret_and_no_session_in_errors_logs_or_reprs(apple, client, caplog):
    creds, token = new_token(apple)
    forged = TokenCredentials.model_validate(creds | {"consumer_secret": "CS_" + "0" * 40})
    shown: list[str] = []

    with caplog.at_level(logging.DEBUG), capture_logs() as logs:
        client.account(token)
        session = apple.sessions_issued[-1]
        # Apple echoing the session and the credentials back (a proxy's debug page, say)
        echo = f"bad session {session} for {creds['consumer_secret']} {creds['access_secret']}"
        apple.then((400, {}, echo.encode()), "garbage", 503, 503, 503)
        apple.then("close", "close", "close")
        for _ in range(4):
            result = client.check(token)
            shown += [result.detail, repr(result)]
        apple.then((400, {}, echo.encode()))
        with pytest.raises(AppleMalformed) as raised:
            client.account(token)
        shown += [str(raised.value), repr(raised.value)]
        apple.expire_sessions()
        apple.revoke(creds["consumer_key"])
        shown += [repr(client.check(token)), repr(client.check(forged))]

    shown += [caplog.text, repr([r.msg for r in caplog.records]), repr(logs), repr(client)]
    secrets = [creds[f] for f in ("consumer_key", "consumer_secret", "access_token")]
    secrets += [creds["access_secret"], *apple.sessions_issued]
    assert "bad session [redacted]" in shown[0]  # the echo was answered and quoted
    for text in shown:
        for secret in secrets:
            assert secret not in text

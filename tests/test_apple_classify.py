"""What each answer of Apple's enrollment service means: classify() and the readers, as tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from worker.apple.classify import (
    CAPITALS_ONLY,
    MAX_QUOTED_BODY,
    classify,
    quote_body,
    read_account,
    read_session,
    verdict_of,
)
from worker.apple.verdicts import REJECTED_CODES, Verdict
from worker.errors import (
    AppleMalformed,
    AppleRejected,
    AppleTermsNotAccepted,
    AppleUnreachable,
)
from worker.outbound import retry_after_s

NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def www_authenticate(problem: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'OAuth realm="ADM", oauth_problem="{problem}"'}


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_a_2xx_is_no_error(status):
    assert classify("/account", status, {}, b"whatever") is None


@pytest.mark.parametrize("code", REJECTED_CODES)
@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize(
    "where",
    ["www-authenticate", "json code", "json error", "plain body", "json string", "lower case"],
)
def test_a_401_or_403_naming_a_rejected_code_is_a_rejection(code, status, where):
    headers, body = {}, b""
    if where == "www-authenticate":
        headers = www_authenticate(code)
    elif where == "json code":
        body = json.dumps({"code": code, "message": "Token is invalid"}).encode()
    elif where == "json error":
        body = json.dumps({"error": code}).encode()
    elif where == "plain body":
        body = f"{code}\n".encode()
    elif where == "json string":
        body = json.dumps(code).encode()
    else:
        headers = {"www-authenticate": f'oauth realm="adm", oauth_problem="{code.lower()}"'}

    error = classify("/session", status, headers, body)

    if where == "lower case" and code in CAPITALS_ONLY:
        # Apple's own codes count only in capitals: "forbidden" is a proxy, not Apple
        assert type(error) is AppleMalformed
        return
    assert type(error) is AppleRejected
    assert error.code == code
    assert str(error) == f"Apple rejected the token ({code}): download a new token from ASM/ABM"


@pytest.mark.parametrize(
    "headers, body",
    [
        ({}, b"T_C_NOT_SIGNED"),
        ({}, b'{"code": "T_C_NOT_SIGNED", "message": "Terms and conditions not signed"}'),
        ({}, b"t_c_not_signed"),
        (www_authenticate("T_C_NOT_SIGNED"), b""),
    ],
)
def test_a_403_naming_t_c_not_signed_is_terms_not_accepted(headers, body):
    error = classify("/account", 403, headers, body)

    assert type(error) is AppleTermsNotAccepted
    assert error.code == "T_C_NOT_SIGNED"
    assert "someone with the Administrator role must sign in and accept them" in str(error)
    assert "the token itself still works" in str(error)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 599])
def test_429_and_5xx_are_transient_whatever_the_body_says(status):
    error = classify("/account", status, www_authenticate("token_rejected"), b"token_rejected")

    assert type(error) is AppleUnreachable
    assert error.code == f"http_{status}"
    assert str(error) == f"HTTP {status} from /account"


@pytest.mark.parametrize(
    "status, headers, body, why",
    [
        (401, {}, b"UNAUTHORIZED", "a 401 naming no code of a dead token"),
        (401, {}, b"", "a bare 401"),
        (403, {}, b"", "a bare 403"),
        (401, {}, b"T_C_NOT_SIGNED", "terms come with a 403, not a 401"),
        (403, {}, b"not_token_rejected_yet", "only whole words count"),
        (403, {}, b"token_rejectedness", "only whole words count"),
        (403, {"Content-Type": "text/html"}, b"<h1>403 Forbidden</h1>", "a proxy's page"),
        (403, {}, b"<html><body>Forbidden</body></html>", "a proxy's page without a type"),
        (403, {}, b'{"message": "token_rejected"}', "JSON naming it outside a code field"),
        (400, {}, b"BAD_REQUEST", "a 400"),
        (404, {}, b"NOT_FOUND", "a 404"),
        (302, {"Location": "https://elsewhere.example"}, b"", "a redirect"),
        (418, www_authenticate("token_rejected"), b"", "a code with another status"),
    ],
)
def test_anything_else_is_malformed_never_guessed_from_the_status(status, headers, body, why):
    error = classify("/account", status, headers, body)

    assert type(error) is AppleMalformed, why
    assert error.code == f"http_{status}"
    assert f"HTTP {status} from /account" in str(error)


def test_a_malformed_message_quotes_a_short_single_line_printable_body():
    body = b"line one\nline\ttwo\x00\x07 " + b"x" * 500

    message = str(classify("/account", 404, {}, body))

    assert "\n" not in message and message.isprintable()
    assert "line one line two" in message
    assert len(quote_body(body)) == MAX_QUOTED_BODY


def test_a_malformed_message_says_when_the_body_is_empty():
    assert str(classify("/account", 404, {}, b"")).endswith(
        "HTTP 404 from /account with an empty body"
    )


def test_a_quoted_body_hides_anything_shaped_like_a_credential():
    assert "CK_" not in quote_body(b"echo: CK_" + b"a" * 40)


@pytest.mark.parametrize(
    "body, code",
    [
        (b'{"auth_session_token": "abc"}', None),
        (b'{"auth_session_token": "  abc  "}', None),
        (b"not json", "not_json"),
        (b'{"session": "abc"}', "no_session_token"),
        (b'{"auth_session_token": ""}', "no_session_token"),
        (b'{"auth_session_token": 12}', "no_session_token"),
        (b'["abc"]', "no_session_token"),
    ],
)
def test_read_session(body, code):
    if code is None:
        assert read_session("/session", 200, body) == "abc"
        return
    with pytest.raises(AppleMalformed) as raised:
        read_session("/session", 200, body)
    assert raised.value.code == code
    assert "abc" not in str(raised.value)  # a session answer is never quoted


def test_read_account_keeps_what_is_there_and_falls_back_to_facilitator_id():
    body = json.dumps(
        {"server_uuid": "u-1", "facilitator_id": "ann@school.example", "new_field": "x"}
    ).encode()

    account = read_account("/account", 200, body)

    assert (account.server_uuid, account.admin_id, account.org_name) == (
        "u-1",
        "ann@school.example",
        None,
    )


@pytest.mark.parametrize(
    "body, code",
    [
        (b"\x00\xffnot json at all", "not_json"),
        (b"", "not_json"),
        (b'{"server_name": "MDM"}', "no_server_uuid"),
        (b'{"server_uuid": ""}', "no_server_uuid"),
        (b"[]", "no_server_uuid"),
        (b"[" * 100_000, "not_json"),
    ],
)
def test_read_account_refuses_an_answer_without_a_server_uuid(body, code):
    with pytest.raises(AppleMalformed) as raised:
        read_account("/account", 200, body)
    assert raised.value.code == code
    assert "HTTP 200 from /account" in str(raised.value)


@pytest.mark.parametrize(
    "value, seconds",
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("0", 0.0),
        ("2", 2.0),
        (" 120 ", 120.0),
        ("-5", None),
        ("soon", None),
        ("Sat, 01 Mar 2025 09:00:30 GMT", 30.0),
        ("Sat, 01 Mar 2025 08:59:00 GMT", 0.0),  # already past
        ("Sat, 01 Mar 2025 09:00:30", None),  # no zone: not an HTTP date
    ],
)
def test_retry_after_in_seconds_or_as_an_http_date(value, seconds):
    assert retry_after_s(value, NOW) == seconds


@pytest.mark.parametrize(
    "error, verdict",
    [
        (AppleRejected("x"), Verdict.REJECTED),
        (AppleTermsNotAccepted("x"), Verdict.TERMS_NOT_ACCEPTED),
        (AppleUnreachable("x"), Verdict.UNREACHABLE),
        (AppleMalformed("x"), Verdict.MALFORMED),
    ],
)
def test_each_error_has_its_verdict(error, verdict):
    assert verdict_of(error) is verdict


@pytest.mark.parametrize(
    "body", [b"Forbidden", b"403 Forbidden\n", b'{"error": "forbidden"}', b"access_denied"]
)
def test_a_proxys_plain_forbidden_is_not_apple_refusing_the_token(body):
    error = classify("/account", 403, {"content-type": "text/plain"}, body)
    assert type(error) is AppleMalformed


def test_a_retry_after_of_odd_digits_is_unreadable_not_a_crash():
    assert retry_after_s("²", datetime(2026, 11, 27, tzinfo=UTC)) is None

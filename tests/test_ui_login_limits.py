"""Logins to the web pages are rate limited (per name and per client address), and every
answer under /ui/ carries the security headers. Over HTTP against a real serve and Redis."""

import json
from dataclasses import replace

import httpx
import pytest

from worker.config_ui import UiSettings
from worker.ui.access import LOGIN_LIMITS, WRONG

#: The policy, spelled out here rather than imported: the test checks what is sent.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


@pytest.fixture
def settings(settings):
    return replace(settings, ui=UiSettings(enabled=True))


@pytest.fixture
def web(intake):
    with httpx.Client(base_url=intake, follow_redirects=False) as client:
        yield client


def add_viewer(cli, name):
    added = cli("viewers", "add", name, "--json")
    assert added.exit_code == 0, added.output
    return json.loads(added.stdout)["password"]


def log_in(web, name, password):
    response = web.post("/ui/login", data={"name": name, "password": password})
    web.cookies.clear()  # each test sends the cookie it means to, in a Cookie header
    return response


def test_past_the_failures_allowed_for_a_name_even_the_right_password_is_not_checked(web, cli):
    # Given a viewer whose name has had every failed login the window allows
    password = add_viewer(cli, "alice")
    for _ in range(LOGIN_LIMITS.per_name):
        assert log_in(web, "alice", "guess").status_code == 401
    # When the next attempt brings the right password
    response = log_in(web, "alice", password)
    # Then it is refused before the password is looked at: 429, and when to come back
    assert response.status_code == 429
    assert 0 < int(response.headers["retry-after"]) <= LOGIN_LIMITS.window_s
    assert "Too many failed logins" in response.text
    assert "set-cookie" not in response.headers
    # ...while another viewer, from the same address, still logs in
    other = add_viewer(cli, "bob")
    assert log_in(web, "bob", other).status_code == 303


def test_a_name_that_is_no_viewer_is_limited_the_same_way(web):
    for _ in range(LOGIN_LIMITS.per_name):
        assert log_in(web, "nobody", "guess").status_code == 401
    assert log_in(web, "nobody", "guess").status_code == 429


def test_past_the_failures_allowed_for_an_address_no_name_is_tried(web, cli):
    password = add_viewer(cli, "alice")
    for i in range(LOGIN_LIMITS.per_address):
        assert log_in(web, f"guess{i}", "guess").status_code == 401
    response = log_in(web, "alice", password)
    assert response.status_code == 429
    assert "retry-after" in response.headers


def test_a_login_forgets_the_names_failures(web, cli):
    password = add_viewer(cli, "alice")
    for _ in range(2):
        for _ in range(LOGIN_LIMITS.per_name - 1):
            assert log_in(web, "alice", "guess").status_code == 401
        assert log_in(web, "alice", password).status_code == 303


def test_the_counts_are_few_keys_each_gone_after_the_window(web, redis_client):
    for i in range(3):
        log_in(web, f"name{i}", "guess")
    counters = list(redis_client.scan_iter("tw:ui:login-failures:*"))
    assert len(counters) == 4  # one address, three names
    for key in counters:
        assert 0 < redis_client.ttl(key) <= LOGIN_LIMITS.window_s
        assert "name" not in key.split(":")[-1]  # names and addresses are kept hashed


def assert_secured(response):
    assert response.headers["content-security-policy"] == CSP, response.request.url
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"


def test_every_answer_under_ui_carries_the_security_headers(web, cli):
    password = add_viewer(cli, "alice")
    logged_in = log_in(web, "alice", password)
    cookie = {"cookie": logged_in.headers["set-cookie"].split(";")[0]}
    answers = {
        "the login form": web.get("/ui/login"),
        "a refused login": log_in(web, "alice", "guess"),
        "a login": logged_in,
        "a page": web.get("/ui/", headers=cookie),
        "the way to the login": web.get("/ui/"),
        "a page that is not there": web.get("/ui/nothing/here"),
        "a method not allowed": web.get("/ui/logout"),
        "the stylesheet": web.get("/ui/static/style.css"),
        "a file that is not there": web.get("/ui/static/nothing.css"),
        "the bare path": web.get("/ui"),
        "a logout": web.post("/ui/logout", headers=cookie),
    }
    for _ in range(LOGIN_LIMITS.per_name):
        answers["a throttled login"] = log_in(web, "alice", "guess")
    statuses = {what: r.status_code for what, r in answers.items()}
    assert statuses == {
        "the login form": 200,
        "a refused login": 401,
        "a login": 303,
        "a page": 200,
        "the way to the login": 303,
        "a page that is not there": 404,
        "a method not allowed": 405,
        "the stylesheet": 200,
        "a file that is not there": 404,
        "the bare path": 308,
        "a logout": 303,
        "a throttled login": 429,
    }
    for response in answers.values():
        assert_secured(response)
    assert answers["the stylesheet"].headers["content-type"].startswith("text/css")
    assert WRONG in answers["a refused login"].text
    assert "<html" in answers["a page that is not there"].text


def test_the_other_endpoints_keep_their_own_headers(web):
    assert "content-security-policy" not in web.get("/healthz").headers

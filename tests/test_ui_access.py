"""Who may see the web pages (/ui/): viewers log in through the form and get a signed cookie;
everyone else is sent to the form. Over HTTP against a real serve and Redis."""

import json
import re
from dataclasses import replace
from datetime import timedelta
from http.cookies import SimpleCookie

import httpx
import pytest

from tests.helpers import serving
from worker.bootstrap import App
from worker.config_ui import DEFAULT_SESSION_LIFETIME_S, UiSettings
from worker.intake.app import create_app
from worker.ui import session
from worker.ui.access import COOKIE, WRONG


@pytest.fixture
def settings(settings):
    return replace(settings, ui=UiSettings(enabled=True))


@pytest.fixture
def alice(cli):
    """A viewer, and the password `viewers add` showed."""
    added = cli("viewers", "add", "alice", "--json")
    assert added.exit_code == 0, added.output
    return json.loads(added.stdout)["password"]


@pytest.fixture
def web(intake):
    with httpx.Client(base_url=intake, follow_redirects=False) as client:
        yield client


def log_in(web, name, password, next_page=None):
    form = {"name": name, "password": password}
    if next_page is not None:
        form["next"] = next_page
    response = web.post("/ui/login", data=form)
    web.cookies.clear()  # each test sends the cookie it means to, in a Cookie header
    return response


def cookie_of(response) -> str:
    [header] = response.headers.get_list("set-cookie")
    return SimpleCookie(header)[COOKIE].value


def opened(web, cookie):
    return web.get("/ui/", headers={"cookie": f"{COOKIE}={cookie}"})


def test_a_page_refuses_access_without_a_login(web):
    # When nobody has logged in
    response = web.get("/ui/")
    # Then the page is not shown: the browser is sent to the form, which will bring it back
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=/ui/"
    assert "Estate" not in response.text
    asked = web.get("/ui/", params={"org": "Lab & co"})
    assert asked.headers["location"] == "/ui/login?next=/ui/%3Forg%3DLab%2B%2526%2Bco"


def test_the_login_form_is_a_page_of_its_own(web):
    response = web.get("/ui/login", params={"next": "/ui/timeline"})
    assert response.status_code == 200
    assert 'action="/ui/login"' in response.text
    assert 'value="/ui/timeline"' in response.text


def test_a_wrong_password_and_an_unknown_name_are_refused_alike(web, alice):
    # Given a viewer alice; when someone tries her name with a wrong password, and a name
    # that is no viewer's
    wrong = log_in(web, "alice", "not-her-password")
    unknown = log_in(web, "bob", alice)
    unusable = log_in(web, "Not A Name!", alice)
    # Then each is refused the same way, without a cookie
    for response in (wrong, unknown, unusable):
        assert response.status_code == 401
        assert WRONG in response.text
        assert "set-cookie" not in response.headers
    assert wrong.text.replace("alice", "X") == unknown.text.replace("bob", "X")


def test_the_right_password_gives_a_signed_httponly_strict_cookie_with_an_expiry(web, alice):
    response = log_in(web, "alice", alice)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/"
    [header] = response.headers.get_list("set-cookie")
    morsel = SimpleCookie(header)[COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "strict"
    assert morsel["path"] == "/ui"
    assert morsel["max-age"] == str(DEFAULT_SESSION_LIFETIME_S)
    assert morsel["expires"]
    # (plain http on loopback: the one case without Secure, see the https tests)
    assert not morsel["secure"]
    assert alice not in header


def test_the_cookie_opens_the_pages(web, alice):
    cookie = cookie_of(log_in(web, "alice", alice))
    response = opened(web, cookie)
    assert response.status_code == 200
    assert "alice" in response.text
    assert 'action="/ui/logout"' in response.text


def test_the_login_goes_back_to_the_page_asked_for_and_never_elsewhere(web, alice):
    assert log_in(web, "alice", alice, "/ui/servers/7?x=1").headers["location"] == (
        "/ui/servers/7?x=1"
    )
    for elsewhere in ("https://evil.example/ui/", "//evil.example/ui/", "/metrics", "/ui\\x"):
        assert log_in(web, "alice", alice, elsewhere).headers["location"] == "/ui/"


@pytest.mark.parametrize(
    "tamper",
    [
        # a character of the signature (not its last: base64's last one may carry spare bits)
        lambda v: v[:-5] + ("A" if v[-5] != "A" else "B") + v[-4:],
        lambda v: v.replace(v.split(".")[0], v.split(".")[0][::-1]),  # the payload
        lambda v: v.split(".")[0],  # no signature
        lambda v: "x" * 600,
        lambda v: "",
    ],
    ids=["signature", "payload", "unsigned", "long", "empty"],
)
def test_a_tampered_cookie_is_refused(web, alice, tamper):
    cookie = cookie_of(log_in(web, "alice", alice))
    assert opened(web, tamper(cookie)).status_code == 303


def test_a_cookie_for_another_viewer_signed_with_another_key_is_refused(web, alice, app):
    generation = app.viewers.get("alice").generation
    expires = int(app.now().timestamp()) + 3600
    forged = session.sign(session.Session("alice", generation, expires), [b"k" * 32])
    assert opened(web, forged).status_code == 303
    # ...and the same, signed with the key serve derives from the master key, opens the page
    good = session.sign(
        session.Session("alice", generation, expires),
        app.keyring().derive(session.KEY_PURPOSE),
    )
    assert opened(web, good).status_code == 200


def test_a_cookie_expires_with_the_session_lifetime(web, alice, clock):
    cookie = cookie_of(log_in(web, "alice", alice))
    clock.now += timedelta(seconds=DEFAULT_SESSION_LIFETIME_S - 1)
    assert opened(web, cookie).status_code == 200
    clock.now += timedelta(seconds=1)
    assert opened(web, cookie).status_code == 303


def test_a_removed_viewers_cookie_is_refused_at_once_even_when_the_name_comes_back(web, alice, cli):
    cookie = cookie_of(log_in(web, "alice", alice))
    assert cli("viewers", "remove", "alice").exit_code == 0
    assert opened(web, cookie).status_code == 303
    # A new alice (another person, perhaps) is not logged in by the old cookie
    assert cli("viewers", "add", "alice").exit_code == 0
    assert opened(web, cookie).status_code == 303


def test_logout_clears_the_cookie(web, alice):
    cookie = cookie_of(log_in(web, "alice", alice))
    response = web.post("/ui/logout", headers={"cookie": f"{COOKIE}={cookie}"})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"
    [header] = response.headers.get_list("set-cookie")
    morsel = SimpleCookie(header)[COOKIE]
    assert morsel.value == ""
    assert morsel["max-age"] == "0"
    assert morsel["path"] == "/ui"


def test_a_form_posted_from_another_site_neither_logs_in_nor_out(web, alice):
    cross = {"sec-fetch-site": "cross-site"}
    response = web.post("/ui/login", data={"name": "alice", "password": alice}, headers=cross)
    assert response.status_code == 403
    assert "set-cookie" not in response.headers
    assert web.post("/ui/logout", headers=cross).status_code == 403
    same = {"sec-fetch-site": "same-origin"}
    assert (
        web.post("/ui/login", data={"name": "alice", "password": alice}, headers=same).status_code
        == 303
    )


def test_a_form_that_is_not_one_is_refused(web, alice):
    assert web.post("/ui/login", json={"name": "alice"}).status_code == 400
    big = {"name": "alice", "password": "p" * 5000}
    assert web.post("/ui/login", data=big).status_code == 400


def test_the_pages_are_not_there_unless_turned_on(settings, redis_client, clock):
    off = App(replace(settings, ui=UiSettings()), clock=clock)
    try:
        with serving(create_app(off)) as url:
            for path in ("/ui/", "/ui/login", "/ui/static/style.css", "/ui"):
                assert httpx.get(url + path).status_code == 404
            assert httpx.get(url + "/healthz").status_code == 200
    finally:
        off.close()


def test_the_bare_ui_path_goes_to_the_pages(web):
    response = web.get("/ui")
    assert response.status_code == 308
    assert response.headers["location"] == "/ui/"


def test_no_script_and_no_inline_style_in_the_pages(web, alice):
    cookie = cookie_of(log_in(web, "alice", alice))
    for response in (web.get("/ui/login"), opened(web, cookie), web.get("/ui/nothing")):
        html = response.text.lower()
        assert "<script" not in html
        assert "<style" not in html
        assert not re.search(r"\sstyle\s*=", html)
        assert not re.search(r"\son[a-z]+\s*=", html)  # no event handler attributes

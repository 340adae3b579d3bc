"""The access part after review: attempts made at once are all counted before any password is
checked; logging out ends the viewer's sessions on the server (a copied cookie is refused);
an IPv4 client is counted by its own address whatever the proxy calls it; `next` never leaves
/ui/; `*` proxies never vouch for a user; the form answers 503 when Redis is gone."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import pytest

from tests.helpers import serving
from worker.bootstrap import App
from worker.config import Settings
from worker.config_ui import UiSettings
from worker.errors import ConfigError
from worker.intake.app import create_app
from worker.ui.access import COOKIE, _address_key, safe_next


@pytest.fixture
def settings(settings):
    return replace(settings, ui=UiSettings(enabled=True))


@pytest.fixture
def alice(cli):
    return json.loads(cli("viewers", "add", "alice", "--json").stdout)["password"]


def test_a_burst_of_logins_is_counted_before_any_password_is_checked(intake, alice):
    def attempt(_):
        form = {"name": "alice", "password": "guess"}
        return httpx.post(f"{intake}/ui/login", data=form, timeout=60).status_code

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(attempt, range(12)))
    assert answers.count(401) == 5  # the name's limit, however many came at once
    assert answers.count(429) == 7


def test_logging_out_ends_the_session_for_every_copy_of_the_cookie(intake, alice):
    with httpx.Client(base_url=intake) as web:
        assert web.post("/ui/login", data={"name": "alice", "password": alice}).status_code == 303
        cookie = web.cookies[COOKIE]
        assert web.get("/ui/").status_code == 200
        assert web.post("/ui/logout").status_code == 303
    replayed = httpx.get(f"{intake}/ui/", headers={"cookie": f"{COOKIE}={cookie}"})
    assert replayed.status_code == 303  # sent to the login form: the copy is refused


def test_an_ipv4_client_is_counted_by_its_address_whatever_the_proxy_calls_it():
    assert _address_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert _address_key("::ffff:203.0.113.9") != _address_key("::ffff:198.51.100.7")
    assert _address_key("2001:db8::1") == _address_key("2001:db8::2")  # one client's /64


@pytest.mark.parametrize(
    "given", ["/ui/../metrics", "/ui/%2e%2e/metrics", "/ui//evil.example/", "/ui/./x/../../y"]
)
def test_next_never_leaves_the_pages(given):
    assert safe_next(given) == "/ui/"


def test_proxies_named_star_never_vouch_for_a_user():
    with pytest.raises(ConfigError, match="any client"):
        Settings.from_env(
            {
                "TOKENWARDEN_UI": "on",
                "TOKENWARDEN_UI_TRUSTED_USER_HEADER": "X-Forwarded-Email",
                "TOKENWARDEN_HTTP_TRUSTED_PROXIES": "*",
            }
        )


def test_the_form_says_503_when_redis_is_gone(settings, clock):
    gone = App(replace(settings, redis_url="redis://127.0.0.1:9/0"), clock=clock)
    with serving(create_app(gone)) as url:
        answer = httpx.post(f"{url}/ui/login", data={"name": "alice", "password": "x"})
    assert answer.status_code == 503
    assert "cannot reach Redis" in answer.text
    gone.close()

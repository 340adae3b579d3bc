"""Behind a proxy: the trusted user header an SSO proxy sets (oauth2-proxy's X-Forwarded-Email)
opens the pages only when configured and only from TOKENWARDEN_HTTP_TRUSTED_PROXIES; the login
cookie is Secure unless the request came over plain http on loopback. Against `serve` as
`tokenwarden serve` configures uvicorn (worker/intake/serve.py), and a real Redis."""

import contextlib
import json
import socket
import ssl
import threading
from dataclasses import replace
from http.cookies import SimpleCookie

import httpx
import pytest

from tests.helpers import loopback_tls_files, serving, wait_until
from worker.bootstrap import App
from worker.config import HttpSettings
from worker.config_ui import UiSettings
from worker.intake.app import create_app
from worker.intake.serve import server_for
from worker.ui.access import COOKIE

#: The header oauth2-proxy sets to the signed-in user's e-mail address.
HEADER = "X-Forwarded-Email"

#: A client somewhere beyond the proxy (TEST-NET-3).
FAR_CLIENT = "203.0.113.7"


@contextlib.contextmanager
def serve(settings, clock, *, proxies=(), header=None):
    """`tokenwarden serve`'s uvicorn (server_for) on a free loopback port; yields its URL."""
    settings = replace(
        settings,
        http=HttpSettings(trusted_proxies=tuple(proxies)),
        ui=UiSettings(enabled=True, trusted_user_header=header and header.lower()),
    )
    app = App(settings, clock=clock)
    server = server_for(app)
    server.config.install_signal_handlers = False
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10, what="serve to start")
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        app.close()


def home(url, **headers):
    return httpx.get(f"{url}/ui/", headers=headers, follow_redirects=False)


def test_the_header_names_the_viewer_when_it_comes_from_a_trusted_proxy(
    settings, clock, redis_client
):
    with serve(settings, clock, proxies=["127.0.0.1"], header=HEADER) as url:
        response = home(url, **{HEADER: "jane@school.edu"})
        assert response.status_code == 200
        assert "jane@school.edu" in response.text
        # The proxy also says who connected to it: still the proxy's word that counts
        forwarded = home(url, **{HEADER: "jane@school.edu", "X-Forwarded-For": FAR_CLIENT})
        assert forwarded.status_code == 200
        # Without the header (the proxy let someone through unnamed), or with one that cannot
        # name anyone: the login form
        assert home(url).status_code == 303
        assert home(url, **{HEADER: ""}).status_code == 303
        assert home(url, **{HEADER: "j" * 300}).status_code == 303


def test_the_header_is_ignored_from_anyone_but_the_trusted_proxies(settings, clock, redis_client):
    with serve(settings, clock, proxies=["192.0.2.10"], header=HEADER) as url:
        assert home(url, **{HEADER: "jane@school.edu"}).status_code == 303
        # ...even when the client claims to be forwarded by the proxy
        claimed = home(url, **{HEADER: "jane@school.edu", "X-Forwarded-For": "192.0.2.10"})
        assert claimed.status_code == 303
    with serve(settings, clock, proxies=["192.0.2.0/24", "::1"], header=HEADER) as url:
        assert home(url, **{HEADER: "jane@school.edu"}).status_code == 303
    with serve(settings, clock, proxies=["127.0.0.0/8"], header=HEADER) as url:
        assert home(url, **{HEADER: "jane@school.edu"}).status_code == 200


def test_the_header_is_ignored_when_none_is_configured(settings, clock, redis_client):
    with serve(settings, clock, proxies=["127.0.0.1"]) as url:
        for header in (HEADER, "X-Auth-Request-Email", "X-Forwarded-User", "Remote-User"):
            assert home(url, **{header: "jane@school.edu"}).status_code == 303


def test_a_viewer_logs_in_with_the_form_beside_the_header(settings, clock, cli):
    password = json.loads(cli("viewers", "add", "alice", "--json").stdout)["password"]
    with serve(settings, clock, proxies=["127.0.0.1"], header=HEADER) as url:
        login = httpx.post(f"{url}/ui/login", data={"name": "alice", "password": password})
        assert login.status_code == 303
        cookie = {"cookie": login.headers["set-cookie"].split(";")[0]}
        assert home(url, **cookie).status_code == 200


def login_cookie(response):
    assert response.status_code == 303, response.text
    return SimpleCookie(response.headers["set-cookie"])[COOKIE]


def test_the_cookie_is_secure_behind_a_tls_proxy_and_refused_over_its_plain_http(
    settings, clock, cli
):
    password = json.loads(cli("viewers", "add", "alice", "--json").stdout)["password"]
    form = {"name": "alice", "password": password}
    with serve(settings, clock, proxies=["127.0.0.1"]) as url:
        # The proxy did TLS: the cookie is sent back over https only
        over_tls = {"X-Forwarded-For": FAR_CLIENT, "X-Forwarded-Proto": "https"}
        morsel = login_cookie(httpx.post(f"{url}/ui/login", data=form, headers=over_tls))
        assert morsel["secure"] is True
        # Plain http from beyond loopback: a Secure cookie would never come back; refused,
        # saying so, and no password is checked
        plain = {"X-Forwarded-For": FAR_CLIENT, "X-Forwarded-Proto": "http"}
        refused = httpx.post(f"{url}/ui/login", data=form, headers=plain)
        assert refused.status_code == 400
        assert "Log in over https" in refused.text
        assert "set-cookie" not in refused.headers


def test_the_cookie_is_secure_over_https_even_on_loopback(settings, clock, cli, tmp_path):
    password = json.loads(cli("viewers", "add", "alice", "--json").stdout)["password"]
    ca, cert, key = loopback_tls_files(tmp_path)
    app = App(replace(settings, ui=UiSettings(enabled=True)), clock=clock)
    try:
        with serving(create_app(app), certfile=cert, keyfile=key) as url:
            response = httpx.post(
                f"{url}/ui/login",
                data={"name": "alice", "password": password},
                verify=ssl.create_default_context(cafile=str(ca)),
            )
            assert login_cookie(response)["secure"] is True
    finally:
        app.close()


@pytest.mark.parametrize("header", ["X-Forwarded-Email", "X-Auth-Request-Email"])
def test_oauth2_proxys_headers_both_work(settings, clock, redis_client, header):
    with serve(settings, clock, proxies=["127.0.0.1"], header=header) as url:
        assert home(url, **{header: "jane@school.edu"}).status_code == 200

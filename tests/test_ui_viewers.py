"""`tokenwarden viewers add|list|remove`: a password shown once and kept only as an Argon2id
hash; bad input ends in one line; no password, hash or cookie in logs or Redis."""

import io
import json
from dataclasses import replace

import httpx
import pytest

from tests.helpers import assert_refused, every_redis_byte, quiet_logging
from worker.config import Settings
from worker.config_ui import UiSettings
from worker.errors import ConfigError
from worker.logs import configure_logging
from worker.store import keys as k
from worker.ui.access import COOKIE


@pytest.fixture
def settings(settings):
    return replace(settings, ui=UiSettings(enabled=True))


def test_viewers_add_shows_the_password_once_and_keeps_only_its_argon2id_hash(
    cli, redis_client, redis_url
):
    # When a viewer is added
    added = cli("viewers", "add", "Alice@School.edu")
    # Then the password is printed, this once, with a note that it is not kept
    assert added.exit_code == 0, added.output
    lines = added.stdout.splitlines()
    assert lines[0] == "added viewer 'alice@school.edu'"
    password = lines[1].removeprefix("password: ")
    assert len(password) >= 24
    assert "shown this once" in added.stderr
    # ...and what Redis keeps is an Argon2id hash, never the password
    stored = redis_client.hgetall(k.viewer("alice@school.edu"))
    assert stored["hash"].startswith("$argon2id$")
    assert password.encode() not in every_redis_byte(redis_url)
    # ...and it is never shown again
    listed = cli("viewers", "list").stdout + cli("viewers", "list", "--json").stdout
    assert "alice@school.edu" in listed
    assert password not in listed
    assert "argon2" not in listed


def test_each_viewer_gets_a_password_of_their_own(cli):
    first = json.loads(cli("viewers", "add", "alice", "--json").stdout)
    second = json.loads(cli("viewers", "add", "bob", "--json").stdout)
    assert first["password"] != second["password"]
    assert set(first) == {"name", "created_at", "password"}


def test_viewers_list_and_remove(cli):
    assert cli("viewers", "list").stdout.startswith("no viewers")
    cli("viewers", "add", "alice")
    cli("viewers", "add", "bob")
    listed = json.loads(cli("viewers", "list", "--json").stdout)
    assert [v["name"] for v in listed] == ["alice", "bob"]
    assert listed[0]["created_at"] == "2025-03-01T09:00:00Z"
    removed = cli("viewers", "remove", "Alice")
    assert removed.exit_code == 0
    assert removed.stdout.strip() == "removed viewer 'alice'"
    assert [v["name"] for v in json.loads(cli("viewers", "list", "--json").stdout)] == ["bob"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("viewers", "add", "Alice Smith"), "viewer name 'Alice Smith' is not usable"),
        (("viewers", "add", ""), "viewer name '' is not usable"),
        (("viewers", "add", "a" * 65), "is not usable"),
        (("viewers", "add", ".alice"), "starting with a letter or digit"),
        (("viewers", "add", "al\x1bice"), "is not usable"),
        (("viewers", "remove", "nobody"), "no viewer named 'nobody'"),
        (("viewers", "remove", "Bad Name"), "is not usable"),
    ],
)
def test_bad_names_end_in_one_line_and_change_nothing(cli, snapshot, args, message):
    line = assert_refused(cli, snapshot, args, message)
    assert "\x1b" not in line


def test_a_viewer_cannot_be_added_twice(cli, snapshot):
    cli("viewers", "add", "alice")
    assert_refused(cli, snapshot, ("viewers", "add", "ALICE"), "a viewer named 'alice' exists")


def test_no_password_hash_or_cookie_in_the_logs_or_redis(cli, intake, app, redis_url):
    log = io.StringIO()
    configure_logging("debug", "json", stream=log)
    try:
        password = json.loads(cli("viewers", "add", "alice", "--json").stdout)["password"]
        with httpx.Client(base_url=intake) as web:
            web.post("/ui/login", data={"name": "alice", "password": "a-wrong-guess-1234"})
            web.post("/ui/login", data={"name": "alice-typo", "password": password})
            logged_in = web.post(
                "/ui/login", data={"name": "alice", "password": password}, follow_redirects=False
            )
            cookie = logged_in.headers["set-cookie"].split(";")[0].removeprefix(f"{COOKIE}=")
            assert web.get("/ui/", headers={"cookie": f"{COOKIE}={cookie}"}).status_code == 200
            web.post("/ui/logout", headers={"cookie": f"{COOKIE}={cookie}"})
    finally:
        quiet_logging()
    password_hash = app.viewers.get("alice").password_hash
    logged = log.getvalue()
    assert "ui_login" in logged and "ui_login_refused" in logged
    for secret in (password, "a-wrong-guess-1234", cookie, password_hash):
        assert secret not in logged
    redis_bytes = every_redis_byte(redis_url)
    for secret in (password, "a-wrong-guess-1234", cookie):
        assert secret.encode() not in redis_bytes
    for key in app.keyring().derive("tokenwarden web pages session v1"):
        assert key not in redis_bytes


@pytest.mark.parametrize(
    ("variables", "enabled", "header", "lifetime"),
    [
        ({}, False, None, 28800),
        ({"TOKENWARDEN_UI": "off"}, False, None, 28800),
        ({"TOKENWARDEN_UI": " ON "}, True, None, 28800),
        ({"TOKENWARDEN_UI": "on", "TOKENWARDEN_UI_SESSION_LIFETIME": "3600"}, True, None, 3600),
        (
            {
                "TOKENWARDEN_UI": "on",
                "TOKENWARDEN_UI_TRUSTED_USER_HEADER": "X-Auth-Request-Email",
                "TOKENWARDEN_HTTP_TRUSTED_PROXIES": "127.0.0.1",
            },
            True,
            "x-auth-request-email",
            28800,
        ),
    ],
)
def test_the_ui_settings(variables, enabled, header, lifetime):
    ui = Settings.from_env(variables).ui
    assert (ui.enabled, ui.trusted_user_header, ui.session_lifetime_s) == (
        enabled,
        header,
        lifetime,
    )


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"TOKENWARDEN_UI": "yes"}, "TOKENWARDEN_UI 'yes' is not one of on, off"),
        ({"TOKENWARDEN_UI_SESSION_LIFETIME": "10"}, "TOKENWARDEN_UI_SESSION_LIFETIME '10'"),
        (
            {"TOKENWARDEN_UI_TRUSTED_USER_HEADER": "X-Forwarded-Email"},
            "TOKENWARDEN_HTTP_TRUSTED_PROXIES, which is unset",
        ),
        (
            {
                "TOKENWARDEN_UI_TRUSTED_USER_HEADER": "Cookie",
                "TOKENWARDEN_HTTP_TRUSTED_PROXIES": "127.0.0.1",
            },
            "is not a header that can name the user",
        ),
        (
            {
                "TOKENWARDEN_UI_TRUSTED_USER_HEADER": "X Email",
                "TOKENWARDEN_HTTP_TRUSTED_PROXIES": "127.0.0.1",
            },
            "is not a header that can name the user",
        ),
    ],
)
def test_unusable_ui_settings_are_refused_by_name(variables, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(variables)

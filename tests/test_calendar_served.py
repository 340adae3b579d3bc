"""`/calendar/renewals.ics` as `tokenwarden serve` answers it: only with
TOKENWARDEN_CALENDAR_TOKEN set (else 404), only to a request carrying it (as Basic's password,
a Bearer token or the `token` query parameter), and never with the secret in a log line."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from icalendar import Calendar

from tests.helpers import DOWNLOADED, TOKENWARDEN, install, serving, wait_until
from worker.bootstrap import App
from worker.config import HttpSettings, Settings
from worker.errors import ConfigError
from worker.intake.app import create_app

SECRET = "cal-" + "0123456789abcdef" * 3
WRONG = "cal-" + "fedcba9876543210" * 3
PATH = "/calendar/renewals.ics"


def basic(user: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


@pytest.fixture
def estate(cli, clock, tmp_path):
    for name, org in (("Lab", "North"), ("Gym", "North"), ("Annex", None)):
        assert cli("servers", "add", name, *(["--org", org] if org else [])).exit_code == 0
        install(cli, clock, tmp_path, name, f"admin@{name.lower()}.example", DOWNLOADED)
    assert cli("servers", "add", "Spare", "--org", "South").exit_code == 0


@pytest.fixture
def served(settings, clock, redis_client, estate):
    """The intake of an App whose settings hold the calendar's secret; yields its base URL."""
    app = App(replace(settings, http=HttpSettings(calendar_token=SECRET)), clock=clock)
    with serving(create_app(app)) as url:
        yield url
    app.close()


def events(response: httpx.Response) -> list:
    assert response.status_code == 200, response.text
    return Calendar.from_ical(response.content).walk("VEVENT")


def test_without_the_setting_the_feed_is_not_there(intake, estate):
    for headers in ({}, {"Authorization": f"Bearer {SECRET}"}):
        answer = httpx.get(f"{intake}{PATH}", headers=headers, params={"token": SECRET})
        assert answer.status_code == 404
        assert answer.text == httpx.get(f"{intake}/calendar/nothing.ics").text


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({}, {}),
        ({"Authorization": f"Bearer {WRONG}"}, {}),
        (basic("it", WRONG), {}),
        ({}, {"token": WRONG}),
        ({}, {"token": SECRET[:-1]}),  # all but the last character
        ({}, {"token": SECRET + "x"}),
        ({"Authorization": "Basic not-base64!"}, {}),
        ({"Authorization": SECRET}, {}),  # a bare header value is not a scheme
    ],
)
def test_a_missing_or_wrong_secret_is_refused_with_a_challenge(served, headers, params):
    answer = httpx.get(f"{served}{PATH}", headers=headers, params=params)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith('Basic realm="tokenwarden calendar"')
    assert answer.content == b""


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"Authorization": f"Bearer {SECRET}"}, {}),
        (basic("anyone", SECRET), {}),
        (basic(SECRET, ""), {}),  # the secret as the user name, no password
        ({}, {"token": SECRET}),
        (basic("it", WRONG), {"token": SECRET}),
    ],
)
def test_the_secret_opens_the_feed_however_it_is_sent(served, headers, params):
    answer = httpx.get(f"{served}{PATH}", headers=headers, params=params)
    assert answer.headers["content-type"] == "text/calendar; charset=utf-8"
    assert answer.headers["cache-control"] == "private, no-store"
    summaries = sorted(str(e["summary"]) for e in events(answer))
    assert summaries == [
        "Renew the server token of Annex",
        "Renew the server token of Gym (North)",
        "Renew the server token of Lab (North)",
    ]


def test_org_chooses_an_organizations_servers_after_the_secret(served):
    params = {"token": SECRET, "org": "north"}
    assert len(events(httpx.get(f"{served}{PATH}", params=params))) == 2
    assert events(httpx.get(f"{served}{PATH}", params={**params, "org": "South"})) == []
    unknown = httpx.get(f"{served}{PATH}", params={**params, "org": "West"})
    assert unknown.status_code == 404
    assert "no server is registered in organization 'West'" in unknown.json()["error"]
    assert httpx.get(f"{served}{PATH}", params={"org": "West"}).status_code == 401


def test_redis_unreachable_is_503_in_one_line(settings):
    down = App(replace(settings, redis_url="redis://127.0.0.1:9/0", http=HttpSettings(
        calendar_token=SECRET)))  # fmt: skip
    with serving(create_app(down)) as url:
        answer = httpx.get(f"{url}{PATH}", params={"token": SECRET})
    down.close()
    assert (answer.status_code, answer.text) == (503, "redis unreachable\n")


@pytest.mark.parametrize(
    "value", ["short", "x" * 31, "x" * 257, "a" * 31 + " ", "ä" * 40, "a/b" + "c" * 40]
)
def test_an_unusable_secret_is_refused_without_repeating_it(value):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"TOKENWARDEN_CALENDAR_TOKEN": value})
    message = str(refused.value)
    assert "TOKENWARDEN_CALENDAR_TOKEN" in message and "\n" not in message
    assert value not in message
    assert Settings.from_env({}).http.calendar_token is None
    taken = Settings.from_env({"TOKENWARDEN_CALENDAR_TOKEN": SECRET})
    assert taken.http.calendar_token == SECRET
    assert SECRET not in repr(taken)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_tokenwarden_serve_logs_neither_the_secret_nor_a_wrong_one(cli, clock, settings, tmp_path):
    clock.now = datetime.now(UTC).replace(microsecond=0)  # the process runs on the wall clock
    assert cli("servers", "add", "Lab").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "admin@lab.example", clock.now - timedelta(days=1))
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "TOKENWARDEN_MASTER_KEY": settings.master_key,
        "TOKENWARDEN_DATA_DIR": str(tmp_path),
        "TOKENWARDEN_HTTP_LISTEN": f"127.0.0.1:{port}",
        "TOKENWARDEN_CALENDAR_TOKEN": SECRET,
        "TOKENWARDEN_LOG_LEVEL": "debug",
        "TOKENWARDEN_LOG_FORMAT": "json",
    }
    process = subprocess.Popen(
        [TOKENWARDEN, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), timeout=30, what="tokenwarden serve to listen")
        assert httpx.get(f"{url}{PATH}", params={"token": WRONG}).status_code == 401
        assert httpx.get(f"{url}{PATH}", headers=basic("it", WRONG)).status_code == 401
        assert len(events(httpx.get(f"{url}{PATH}", params={"token": SECRET}))) == 1
        assert len(events(httpx.get(f"{url}{PATH}", headers=basic("it", SECRET)))) == 1
        assert httpx.get(f"{url}/calendar/{SECRET}/renewals.ics").status_code == 404
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    # uvicorn ends on SIGTERM by raising it again once it has shut down
    assert process.returncode in (0, -signal.SIGTERM), errors.decode()[-2000:]
    lines = [json.loads(line) for line in errors.decode().splitlines() if line.startswith("{")]
    logged = {line["event"] for line in lines}
    assert {"calendar_refused", "calendar_served"} <= logged, logged
    for secret in (SECRET, WRONG):
        assert secret.encode() not in errors
        assert base64.b64encode(f"it:{secret}".encode()) not in errors


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False

"""The HTTP intake's common ground: sources and their secrets, the operations endpoints, and
the refusals every source kind shares. Through a real uvicorn on loopback and real Redis."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest

from tests.helpers import assert_refused, wait_until
from worker.store import keys as k


def add_source(cli, name, kind, *extra):
    result = cli("sources", "add", name, "--kind", kind, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_source_is_added_with_a_secret_shown_once_and_kept_as_a_hash(cli, redis_client):
    added = add_source(cli, "okta-staff", "okta", "--map-domain", "school.edu=appleid.school.edu")
    assert added["path"] == "/sources/okta-staff/okta"
    assert added["map_domain"] == ["school.edu=appleid.school.edu"]
    secret = added["secret"]
    assert len(secret) >= 40
    stored = json.dumps(redis_client.hgetall(k.source("okta-staff")))
    assert secret not in stored
    listed = cli("sources", "list", "--json")
    assert secret not in listed.stdout
    assert [s["name"] for s in json.loads(listed.stdout)] == ["okta-staff"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sources", "add", "Bad Name!", "--kind", "okta"), "is not usable in a URL"),
        (("sources", "add", "x", "--kind", "ldap"), "Invalid value for '--kind'"),
        (("sources", "add", "x", "--kind", "okta", "--map-domain", "school.edu"), "FROM=TO"),
        (("sources", "remove", "nowhere"), "no source named 'nowhere'"),
        (("sources", "rotate-secret", "nowhere"), "no source named 'nowhere'"),
    ],
)
def test_bad_source_commands_are_one_line(cli, snapshot, args, message):
    code = 2 if "--kind" in args and "ldap" in args else 1
    assert_refused(cli, snapshot, args, message, code=code)


def test_a_name_taken_is_refused(cli, snapshot):
    add_source(cli, "hr", "cloudevents")
    assert_refused(cli, snapshot, ("sources", "add", "HR", "--kind", "okta"), "exists")


def test_a_short_secret_given_by_hand_is_refused(cli, snapshot):
    assert_refused(
        cli,
        snapshot,
        ("sources", "add", "hr", "--kind", "cloudevents", "--secret", "-"),
        "at least 24 characters",
    )


def test_operations_endpoints(intake):
    assert httpx.get(f"{intake}/healthz").status_code == 200
    assert httpx.get(f"{intake}/readyz").text == "ready\n"
    metrics = httpx.get(f"{intake}/metrics")
    assert metrics.status_code == 200
    assert "tokenwarden_intake_requests" in metrics.text


def test_readyz_says_503_when_redis_is_gone(settings, clock):
    from dataclasses import replace

    from tests.helpers import serving
    from worker.bootstrap import App
    from worker.intake.app import create_app

    gone = App(replace(settings, redis_url="redis://127.0.0.1:9/0"), clock=clock)
    with serving(create_app(gone, kinds=[])) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 503


def test_rotating_a_secret_keeps_the_old_one_for_the_grace_period(cli, app, clock):
    first = add_source(cli, "hr", "cloudevents")["secret"]
    rotated = json.loads(cli("sources", "rotate-secret", "hr", "--json").stdout)
    second = rotated["secret"]
    source = app.sources.get("hr")
    assert source.accepts(second, clock.now)
    assert source.accepts(first, clock.now)
    assert not source.accepts(first, clock.now + timedelta(hours=24, seconds=1))
    assert not source.accepts("tws_" + "x" * 40, clock.now)
    cli("sources", "rotate-secret", "hr", "--grace", "0")
    assert not app.sources.get("hr").accepts(second, clock.now)


def test_a_removed_source_is_gone(cli, app):
    add_source(cli, "hr", "cloudevents")
    assert cli("sources", "remove", "hr").exit_code == 0
    assert app.sources.get("hr") is None
    assert cli("sources", "list", "--json").stdout.strip() == "[]"


def test_serve_says_so_in_one_line_when_it_cannot_listen(settings, tmp_path):
    import os
    import socket
    import subprocess

    from tests.helpers import TOKENWARDEN

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "TOKENWARDEN_MASTER_KEY": settings.master_key,
        "TOKENWARDEN_DATA_DIR": str(tmp_path),
        "TOKENWARDEN_HTTP_LISTEN": f"127.0.0.1:{port}",
    }
    try:
        done = subprocess.run(
            [TOKENWARDEN, "serve"], env=env, capture_output=True, text=True, timeout=60
        )
    finally:
        taken.close()
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the HTTP intake cannot listen on 127.0.0.1:")
    assert "Traceback" not in done.stderr


def test_metrics_count_by_source_and_outcome_and_a_made_up_source_adds_no_series(cli, intake):
    secret = add_source(cli, "hr", "cloudevents")["secret"]
    event = {
        "specversion": "1.0",
        "id": "m-1",
        "source": "urn:example:hr",
        "type": "tokenwarden.directory.user_left",
        "data": {"user": "someone@school.edu"},
    }
    headers = {"Content-Type": "application/cloudevents+json"}
    accepted = httpx.post(
        f"{intake}/sources/hr/events",
        json=event,
        headers={**headers, "Authorization": f"Bearer {secret}"},
    )
    assert accepted.status_code == 202, accepted.text
    wrong = {**headers, "Authorization": "Bearer wrong-secret-wrong-secret"}
    assert httpx.post(f"{intake}/sources/hr/events", json=event, headers=wrong).status_code == 401
    for n in range(3):
        httpx.post(f"{intake}/sources/made-up-{n}/events", json=event, headers=headers)
    # (a request is counted once its answer is sent: wait for the last one to be)
    expected = 'tokenwarden_intake_requests_total{outcome="4xx",source="-"} 3.0'
    wait_until(lambda: expected in httpx.get(f"{intake}/metrics").text, what="the count")
    text = httpx.get(f"{intake}/metrics").text
    assert 'tokenwarden_intake_events_accepted_total{source="hr"} 1.0' in text
    assert 'tokenwarden_intake_auth_failures_total{source="hr"} 1.0' in text
    assert 'tokenwarden_intake_requests_total{outcome="2xx",source="hr"} 1.0' in text
    assert 'tokenwarden_intake_requests_total{outcome="4xx",source="hr"} 1.0' in text
    assert "made-up" not in text
    assert 'tokenwarden_intake_request_seconds_count{route="/sources/{name}/events"}' in text

"""The intake as `tokenwarden run` serves it: a real process on a real port, its worker and its
scheduler beside it; an Okta delivery posted to it opens the replacement."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from tests.helpers import TOKENWARDEN, install, replacements, wait_until
from worker.timefmt import format_rfc3339


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_an_okta_delivery_to_tokenwarden_run_opens_the_replacement(cli, clock, settings, tmp_path):
    clock.now = datetime.now(UTC).replace(microsecond=0)  # the process runs on the wall clock
    assert cli("servers", "add", "Lab").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "teacher@school.edu", clock.now - timedelta(days=10))
    added = json.loads(cli("sources", "add", "okta", "--kind", "okta", "--json").stdout)
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "TOKENWARDEN_MASTER_KEY": settings.master_key,
        "TOKENWARDEN_DATA_DIR": str(tmp_path),
        "TOKENWARDEN_HTTP_LISTEN": f"127.0.0.1:{port}",
    }
    process = subprocess.Popen(
        [TOKENWARDEN, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: ready(url), timeout=30, what="tokenwarden run to serve")
        event = {
            "uuid": str(uuid.uuid4()),
            "published": format_rfc3339(clock.now - timedelta(minutes=1)),
            "eventType": "user.account.update_password",
            "outcome": {"result": "SUCCESS"},
            "target": [{"type": "User", "alternateId": "teacher@school.edu", "id": "00u1"}],
        }
        delivery = {"eventType": "com.okta.event_hook", "data": {"events": [event]}}
        answer = httpx.post(
            f"{url}{added['path']}", json=delivery, headers={"Authorization": added["secret"]}
        )
        assert answer.status_code == 200, answer.text
        wait_until(lambda: len(replacements(cli)) == 1, what="the replacement")
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors.decode()[-2000:]
    [opened] = replacements(cli)
    assert opened["reasons"][0]["id"] == event["uuid"]

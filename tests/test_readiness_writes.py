"""`/readyz` asks Redis for a write, not a PING: after a Sentinel
failover, a client still pointed at the old master, back as a read-only replica, gets PONG but
cannot write, and must not be called ready."""

from __future__ import annotations

from dataclasses import replace

import httpx
import redis

from tests.helpers import serving
from tests.redis_server import start_redis_server
from worker.bootstrap import App
from worker.intake.app import create_app


def test_a_redis_that_answers_but_takes_no_writes_is_not_ready(settings, tmp_path, clock):
    url, process = start_redis_server(tmp_path)
    client = redis.Redis.from_url(url)
    app = App(replace(settings, redis_url=url), clock=clock)
    try:
        with serving(create_app(app)) as base:
            assert httpx.get(f"{base}/readyz").status_code == 200
            client.execute_command("REPLICAOF", "127.0.0.1", "1")  # a replica now: read-only
            assert client.ping()
            answer = httpx.get(f"{base}/readyz")
            assert answer.status_code == 503 and answer.text == "redis unreachable\n"
            client.execute_command("REPLICAOF", "NO", "ONE")
            assert httpx.get(f"{base}/readyz").status_code == 200
    finally:
        app.close()
        client.close()
        process.terminate()
        process.wait(timeout=30)

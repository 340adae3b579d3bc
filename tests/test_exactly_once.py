"""Exactly-once effect under at-least-once delivery: duplicates, racing workers, a worker
killed with SIGKILL mid-stream. Real Redis, real dramatiq workers, real processes."""

import json
import os
import signal
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest

from events import catalog
from tests.helpers import FIXTURE_NOW, start_worker
from tests.tokenfiles import credentials, encrypt_to
from worker import installing, registry
from worker.bootstrap import App
from worker.broker import EVENTS_QUEUE
from worker.store import keys as k
from worker.workerproc import WorkerThreads


def servers_with_tokens(app, count):
    """`count` servers, each with a token downloaded 30 days ago by user-<i>@school.edu."""
    for i in range(count):
        _, key = registry.add_server(app.store, f"Room {i}", org=None, now=app.now())
        data = encrypt_to(key.cert_pem, credentials(FIXTURE_NOW + timedelta(days=300)))
        installing.install_token(
            app.store,
            f"Room {i}",
            data,
            source="t.p7m",
            downloaded_by=f"user-{i}@school.edu",
            now=app.now(),
            downloaded_at=FIXTURE_NOW - timedelta(days=30),
        )


#: `tokenwarden emit`'s names of the user events.
USER_EVENT_TYPES = {"password-changed": catalog.PASSWORD_CHANGED, "user-left": catalog.USER_LEFT}


def event_lines(users, per_user, kinds=("password-changed", "user-left")):
    lines = []
    for n in range(per_user):
        for user in range(users):
            kind = kinds[n % len(kinds)]
            lines.append(
                json.dumps(
                    {
                        "specversion": "1.0",
                        "id": f"{kind}-{user}-{n}",
                        "source": "urn:test:hr",
                        "type": USER_EVENT_TYPES[kind],
                        "time": (FIXTURE_NOW - timedelta(days=29) + timedelta(minutes=n)).strftime(
                            "%Y-%m-%dT%H:%M:%SZ"
                        ),
                        "data": {"user": f"user-{user}@school.edu"},
                    }
                )
            )
    return lines


def events_handled(app) -> int:
    return sum(1 for e in app.store.events.audit(limit=100_000) if e["kind"] == "event")


def assert_each_event_had_its_effect_once(app, lines, users):
    unique = {json.loads(line)["id"] for line in lines}
    audited = [
        e["event"]["id"] for e in app.store.events.audit(limit=100_000) if e["kind"] == "event"
    ]
    assert Counter(audited) == Counter(unique), "each event audited exactly once"
    open_ = app.store.events.replacements()
    assert len(open_) == users
    kinds = {json.loads(line)["type"] for line in lines}
    for replacement in open_:
        # one merged reason per kind, counting each event once
        assert sorted(r["type"] for r in replacement.reasons) == sorted(kinds)
        assert sum(r["count"] for r in replacement.reasons) == len(unique) // users
    sent = app.store.events.outbox(limit=100_000)
    required = [e for e in sent if e["type"] == catalog.REPLACEMENT_REQUIRED]
    assert len(required) == len(kinds) * users, "told once per token and kind of reason"
    assert len({e["id"] for e in required}) == len(required)


def test_duplicates_and_two_racing_workers_end_as_if_each_event_was_handled_once(
    app, settings, cli, tmp_path
):
    # Given 3 tokens and two workers sharing the queue
    servers_with_tokens(app, 3)
    fast = replace(settings, poll_interval_ms=10)
    second = App(fast, clock=app.clock)
    workers = [WorkerThreads(App(fast, clock=app.clock), threads=4), WorkerThreads(second, 4)]
    for worker in workers:
        worker.start()
    try:
        # When 60 distinct events about the same 3 users arrive, every one of them twice
        lines = event_lines(users=3, per_user=20)
        path = tmp_path / "events.jsonl"
        path.write_text("\n".join(lines + lines[::-1]) + "\n")
        assert cli("emit", "--file", str(path)).exit_code == 0
        app.broker.join(EVENTS_QUEUE, timeout=60_000)
    finally:
        for worker in workers:
            worker.stop()
    # Then each token has one replacement counting its 20 causes in 2 reasons (one per kind),
    # and 6 events went out (the first of each kind per token)
    assert_each_event_had_its_effect_once(app, lines, users=3)


@pytest.mark.slow
def test_a_worker_killed_mid_stream_loses_nothing_and_doubles_nothing(app, settings, cli, tmp_path):
    servers_with_tokens(app, 20)
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "TOKENWARDEN_MASTER_KEY": settings.master_key,
        "TOKENWARDEN_DATA_DIR": str(tmp_path / "var"),
        "TOKENWARDEN_LOG_LEVEL": "warning",
        "TOKENWARDEN_HEARTBEAT_TIMEOUT": "2",
        "TOKENWARDEN_POLL_INTERVAL_MS": "10",
    }
    lines = event_lines(users=20, per_user=100)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    # Given a worker handling 2,000 events
    victim = start_worker(env)
    survivor = None
    try:
        assert cli("emit", "--file", str(path)).exit_code == 0
        deadline = time.monotonic() + 60
        while events_handled(app) < 300:
            assert time.monotonic() < deadline, victim.stderr.read()
            time.sleep(0.01)
        # When it is killed with SIGKILL mid-stream (its process group: supervisor and child)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        handled_when_killed = events_handled(app)
        assert handled_when_killed < len(lines), "the kill came too late to test anything"
        in_flight = sum(app.redis.scard(key) for key in app.redis.scan_iter(k.BROKER_ACKS_PATTERN))
        assert in_flight > 0, "the killed worker held no message: nothing to recover"
        # And another worker takes over
        started = time.monotonic()
        survivor = start_worker(env)
        app.broker.join(EVENTS_QUEUE, timeout=60_000)
        recovery_s = time.monotonic() - started
    finally:
        for process in (victim, survivor):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
    # Then every event had its effect exactly once, and the stranded messages came back
    assert_each_event_had_its_effect_once(app, lines, users=20)
    print(f"killed after {handled_when_killed} events; recovered in {recovery_s:.1f} s")

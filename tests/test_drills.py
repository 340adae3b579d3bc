"""Fault drills: each ends in a check that nothing was lost or doubled.

Real processes, a real Redis (its own, with AOF, where it is restarted), a real HTTP receiver.
"""

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from events import catalog
from tests.bench.common import load_tokens, user_of, wait_drained
from tests.helpers import TOKENWARDEN, wait_until, wait_until_settled
from tests.receiver import start_receiver
from tests.redis_server import free_port, start_redis_server
from worker.api import Client
from worker.broker import EVENTS_QUEUE
from worker.notify.subscriptions import Subscription, generate_secret
from worker.registry import new_id
from worker.store import keys as k
from worker.timefmt import utc_now


def worker_env(settings, tmp_path, **extra):
    return {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "TOKENWARDEN_MASTER_KEY": settings.master_key,
        "TOKENWARDEN_DATA_DIR": str(tmp_path / "var"),
        "TOKENWARDEN_LOG_LEVEL": "warning",
        **extra,
    }


def start(args, env):
    return subprocess.Popen(
        [TOKENWARDEN, *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(*processes):
    for process in processes:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def subscribe(app, url):
    app.deliveries.add_subscription(
        Subscription(
            id=new_id("sub"),
            kind="webhook",
            target=url,
            types=(catalog.REPLACEMENT_REQUIRED,),
            created_at=utc_now(),
        ),
        generate_secret(),
    )


def event_lines(count, users, prefix="e"):
    rng = random.Random(3)
    return [
        json.dumps(
            {
                "specversion": "1.0",
                "id": f"{prefix}-{i}",
                "source": "urn:drill",
                "type": (catalog.PASSWORD_CHANGED, catalog.USER_LEFT)[i % 2],
                "data": {"user": user_of(rng.randrange(users))},
            }
        )
        for i in range(count)
    ]


def audited_ids(app):
    return [
        e["event"]["id"] for e in app.store.events.audit(limit=1_000_000) if e["kind"] == "event"
    ]


def children_of(pid):
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


@pytest.mark.slow
def test_sigkill_one_of_two_workers_with_5000_events_in_flight(app, settings, cli, tmp_path):
    # Given 500 tokens, a webhook receiver, and two worker processes
    load_tokens(app, 500, now=app.now())
    receiver, server = start_receiver()
    subscribe(app, receiver.url)
    supervisor = start(["worker", "--processes", "2"], worker_env(settings, tmp_path))
    try:
        wait_until(
            lambda: (
                len(children_of(supervisor.pid)) == 2 and app.redis.zcard(k.BROKER_HEARTBEATS) >= 2
            ),
            30,
            "two workers",
        )
        victim = children_of(supervisor.pid)[0]
        workers = app.redis.zrange(k.BROKER_HEARTBEATS, 0, -1)
        lines = event_lines(5000, users=1500)
        (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
        # When 5,000 events go in and, once both workers hold messages, one is killed
        assert cli("emit", "--file", str(tmp_path / "events.jsonl")).exit_code == 0

        def held(worker_id):
            return app.redis.scard(k.broker_acks(worker_id, EVENTS_QUEUE))

        wait_until(lambda: all(held(w) for w in workers), 30, "both workers to hold messages")
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()

        def silent_worker():
            """Once the queue is empty the survivor idles and beats at every poll (a busy
            worker with all it may prefetch in hand does not): the one silent worker then is
            the one killed, and what it holds stays as it was at the kill until taken back."""
            if app.redis.llen(k.broker_queue(EVENTS_QUEUE)):
                return None
            now_ms = time.time() * 1000
            beats = dict(app.redis.zrange(k.BROKER_HEARTBEATS, 0, -1, withscores=True))
            silent = [w for w in workers if now_ms - beats.get(w, now_ms) > 1500]
            return silent[0] if len(silent) == 1 else None

        found = []
        wait_until(lambda: found.append(silent_worker()) or found[-1], 30, "a silent worker")
        killed_id = found[-1]
        stranded = held(killed_id)
        assert stranded, "the killed worker held no message: nothing to recover"
        # Then its messages are taken back (how fast: `make bench`), and every event had its
        # effect once
        wait_drained(app.redis, k.broker_queue(EVENTS_QUEUE), timeout=60)
        recovered_s = time.monotonic() - killed
        assert not held(killed_id), "the killed worker's messages were never taken back"
        ids = audited_ids(app)
        assert sorted(ids) == sorted(json.loads(line)["id"] for line in lines)
        # And every outgoing event reached the receiver, under one webhook-id each
        required = [
            e
            for e in app.store.events.outbox(limit=100_000)
            if e["type"] == catalog.REPLACEMENT_REQUIRED
        ]
        assert len({e["id"] for e in required}) == len(required)
        wait_until(
            lambda: (
                {r.headers["webhook-id"] for r in receiver.received} == {e["id"] for e in required}
            ),
            60,
            "every webhook",
        )
        wait_until_settled(app.redis, 60)
        arrivals = [r.headers["webhook-id"] for r in receiver.received]
        # at least once: a POST cut off by the kill is sent again, under the same id
        assert len(arrivals) - len(set(arrivals)) <= 8
        print(
            f"{stranded} messages were in the killed worker's hands; all recovered in "
            f"{recovered_s:.1f} s; {len(required)} webhooks, "
            f"{len(arrivals) - len(set(arrivals))} sent twice"
        )
    finally:
        stop(supervisor)
        server.shutdown()


@pytest.mark.slow
def test_a_redis_restart_mid_stream_loses_nothing_acknowledged(tmp_path, monkeypatch):
    from dataclasses import replace

    from tests.helpers import FIXTURE_NOW
    from worker.bootstrap import App
    from worker.config import Settings
    from worker.crypto.sealing import generate_master_key

    # Given a Redis with AOF (every write on disk before it is acknowledged)...
    port, data = free_port(), tmp_path / "redis"
    data.mkdir()

    def redis_up():
        return start_redis_server(data, port=port, durable=True)[1]

    redis_process = redis_up()
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        data_dir=tmp_path / "var",
        master_key=generate_master_key(),
    )
    app = App(settings, clock=lambda: FIXTURE_NOW)
    load_tokens(app, 200, now=FIXTURE_NOW)
    env = worker_env(settings, tmp_path, TOKENWARDEN_SCHEDULER_LEASE_TTL="5")
    worker = start(["worker", "--processes", "1"], env)
    scheduler = start(["scheduler"], env)
    acknowledged: list[str] = []
    stop_publishing = threading.Event()

    def publish():
        client = Client(settings)
        lines = event_lines(3000, users=600, prefix="r")
        for line in lines:
            while not stop_publishing.is_set():
                try:
                    client.publish([line])
                    acknowledged.append(json.loads(line)["id"])
                    break
                except redis.RedisError:
                    time.sleep(0.1)  # Redis is away: try the same event again
            time.sleep(0.001)

    publisher = threading.Thread(target=publish)
    try:
        wait_until(lambda: app.redis.get(k.SCHEDULER_LEADER) is not None, 30, "a leader")
        publisher.start()
        wait_until(lambda: len(acknowledged) > 500, 60, "events flowing")
        # When Redis is restarted mid-stream
        redis.Redis(port=port).shutdown(nosave=False)
        redis_process.wait(timeout=30)
        time.sleep(1)
        redis_process = redis_up()
        publisher.join(timeout=120)
        assert not publisher.is_alive()
        # Then workers and scheduler carry on by themselves, and nothing acknowledged is lost
        app.close()
        app = App(settings, clock=lambda: FIXTURE_NOW)
        wait_until(
            lambda: set(acknowledged) <= set(audited_ids(app)),
            90,
            "every acknowledged event decided",
        )
        assert len(audited_ids(app)) == len(set(audited_ids(app))), "an event doubled"
        assert worker.poll() is None and scheduler.poll() is None
        # the scheduler renews its lease again (its time to live climbs back), and its scan
        # (on the wall clock, to which these tokens have expired) warned about each one once
        low = app.redis.pttl(k.SCHEDULER_LEADER)
        wait_until(
            lambda: app.redis.pttl(k.SCHEDULER_LEADER) > low,
            30,
            "the scheduler to renew its lease",
        )
        expired = [e for e in app.store.events.outbox(limit=10_000) if e["type"] == catalog.EXPIRED]
        assert len(expired) == len({e["id"] for e in expired}) == 200
    finally:
        stop_publishing.set()
        stop(worker, scheduler)
        redis_process.terminate()
        redis_process.wait(timeout=30)
        app.close()
    del replace, monkeypatch


@pytest.mark.slow
def test_a_receiver_down_for_a_while_gets_every_event_once_when_back(app, settings, cli, tmp_path):
    from http.server import ThreadingHTTPServer

    load_tokens(app, 50, now=app.now())
    receiver, server = start_receiver()
    subscribe(app, receiver.url)
    port = server.server_address[1]
    handler = server.RequestHandlerClass
    server.shutdown()
    server.server_close()  # the receiver is down
    env = worker_env(
        settings,
        tmp_path,
        TOKENWARDEN_WEBHOOK_RETRY_SCHEDULE="1,1,1,1,1,1,1,1",
        TOKENWARDEN_WEBHOOK_RETRY_JITTER="0",
    )
    worker = start(["worker", "--processes", "1"], env)
    back = None
    try:
        lines = event_lines(60, users=50, prefix="d")
        (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
        assert cli("emit", "--file", str(tmp_path / "events.jsonl")).exit_code == 0
        wait_drained(app.redis, k.broker_queue(EVENTS_QUEUE), timeout=30)
        wait_until(
            lambda: (
                app.redis.zcard(k.DELIVERIES) > 0
                and all(d.attempts >= 1 for d in app.deliveries.deliveries(limit=1000))
            ),
            30,
            "every delivery to have failed once",
        )
        # When the receiver comes back on the same address
        back = ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=back.serve_forever, daemon=True).start()
        expected = {
            e["id"]
            for e in app.store.events.outbox(limit=10_000)
            if e["type"] == catalog.REPLACEMENT_REQUIRED
        }
        wait_until(
            lambda: {r.headers["webhook-id"] for r in receiver.received} == expected,
            60,
            "every event to arrive",
        )
        wait_until_settled(app.redis, 60)
        arrivals = [r.headers["webhook-id"] for r in receiver.received]
        assert len(arrivals) == len(set(arrivals)) == len(expected)
        assert all(d.status == "delivered" for d in app.deliveries.deliveries(limit=1000))
    finally:
        stop(worker)
        if back is not None:
            back.shutdown()
            back.server_close()


HOSTILE = [
    "{not json",
    "",
    "null",
    "[]",
    '"a string"',
    json.dumps(
        {
            "specversion": "1.0",
            "id": "x" * 300,
            "source": "s",
            "type": catalog.USER_LEFT,
            "data": {"user": "a"},
        }
    ),
    json.dumps(
        {
            "specversion": "1.0",
            "id": "big",
            "source": "s",
            "type": catalog.USER_LEFT,
            "data": {"user": "a", "padding": "y" * 100_000},
        }
    ),
    json.dumps(
        {
            "specversion": "1.0",
            "id": 7,
            "source": "s",
            "type": catalog.USER_LEFT,
            "data": {"user": "a"},
        }
    ),
    json.dumps(
        {
            "specversion": "1.0",
            "id": "t",
            "source": "s",
            "type": catalog.USER_LEFT,
            "data": {"user": ["a"]},
        }
    ),
    json.dumps(
        {
            "specversion": "1.0",
            "id": "u",
            "source": "s",
            "type": catalog.USER_LEFT,
            "data": {"user": "\ud83d"},
        },
        ensure_ascii=True,
    ),
    json.dumps(
        {
            "specversion": "1.0",
            "id": "v",
            "source": "s",
            "type": catalog.USER_LEFT,
            "data": {"user": "\x00admin"},
        }
    ),
]

#: Odd but valid names: they must be handled, not refused.
ODD_USERS = [
    "ädmin@schüle.de",
    "مدير@مدرسة.example",
    "e\u0301cole@example.org",
    "👩‍💻@x.org",
    "ADMIN@\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.ORG",
]


@pytest.mark.slow
def test_a_hostile_burst_is_dead_lettered_while_valid_traffic_is_handled(app, settings, tmp_path):
    import dramatiq

    from worker.actors import HANDLE_EVENTS

    load_tokens(app, 100, now=app.now())
    worker = start(["worker", "--processes", "1"], worker_env(settings, tmp_path))
    try:
        valid = [json.loads(line) for line in event_lines(300, users=100, prefix="ok")]
        odd = [
            {
                "specversion": "1.0",
                "id": f"odd-{i}",
                "source": "s",
                "type": catalog.PASSWORD_CHANGED,
                "data": {"user": user},
            }
            for i, user in enumerate(ODD_USERS)
        ]
        duplicates = [valid[0]] * 2000  # thousands of one id
        mixed = valid + odd + duplicates + HOSTILE * 3
        random.Random(5).shuffle(mixed)
        for start_at in range(0, len(mixed), 100):
            app.broker.enqueue(
                dramatiq.Message(
                    queue_name=EVENTS_QUEUE,
                    actor_name=HANDLE_EVENTS,
                    args=(mixed[start_at : start_at + 100], None),
                    kwargs={},
                    options={},
                )
            )
        app.broker.enqueue(
            dramatiq.Message(
                queue_name=EVENTS_QUEUE,
                actor_name=HANDLE_EVENTS,
                args=("not a list",),
                kwargs={},
                options={},
            )
        )
        wait_drained(app.redis, k.broker_queue(EVENTS_QUEUE), timeout=60)
        handled = audited_ids(app)
        assert sorted(handled) == sorted([e["id"] for e in valid] + [e["id"] for e in odd])
        dead = app.store.events.dead_letters(limit=1000)
        assert len(dead) == len(HOSTILE) * 3 + 1
        assert all(d["reason"] for d in dead)
        assert worker.poll() is None, "the worker died"
        assert app.redis.zcard(k.BROKER_HEARTBEATS) >= 1
    finally:
        stop(worker)

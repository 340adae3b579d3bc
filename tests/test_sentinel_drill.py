"""The Sentinel drill: a real master, its replica and three sentinels (Debian's redis-sentinel);
`tokenwarden worker`, `scheduler` and `serve` against REDIS_URL=redis+sentinel://...; the master
is SIGKILLed while 5,000 events stream in. Every process must follow the failover by itself,
and every event acknowledged must be decided exactly once.

The processes wait for the replica (TOKENWARDEN_REDIS_WAIT_REPLICAS=1): without it an event or
a decision the master acknowledged in its last instant may never have reached the replica
(`make bench`, part sentinel, counts how many).
"""

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from events import catalog
from tests.bench.common import load_tokens, user_of
from tests.helpers import TOKENWARDEN, wait_until
from tests.receiver import start_receiver
from tests.redis_server import free_port
from tests.sentinel_cluster import start_cluster
from worker.api import Client
from worker.bootstrap import App
from worker.config import Settings
from worker.crypto.sealing import generate_master_key
from worker.notify.subscriptions import Subscription, generate_secret
from worker.registry import new_id
from worker.store import keys as k
from worker.timefmt import utc_now

EVENTS = 5000

#: Events per publish call: each call is acknowledged (or not) as a whole.
PER_CALL = 25


def start(args, env):
    return subprocess.Popen(
        [TOKENWARDEN, *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(*processes):
    for process in processes:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def children_of(pid):
    return sorted(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def event_lines(count, users):
    rng = random.Random(14)
    return [
        json.dumps(
            {
                "specversion": "1.0",
                "id": f"s-{i}",
                "source": "urn:sentinel-drill",
                "type": (catalog.PASSWORD_CHANGED, catalog.USER_LEFT)[i % 2],
                "data": {"user": user_of(rng.randrange(users))},
            }
        )
        for i in range(count)
    ]


class Publisher(threading.Thread):
    """Publishes the events PER_CALL at a time, each call again until Redis acknowledges it
    (the same events: they are de-duplicated by id), and notes what was acknowledged when."""

    def __init__(self, settings, lines):
        super().__init__(daemon=True)
        self.settings, self.lines = settings, lines
        self.acknowledged: list[tuple[float, str]] = []
        self.failed_calls = 0
        self.halt = threading.Event()

    def run(self):
        client = Client(self.settings)
        try:
            for first in range(0, len(self.lines), PER_CALL):
                batch = self.lines[first : first + PER_CALL]
                while not self.halt.is_set():
                    try:
                        client.publish(batch)
                        break
                    except redis.RedisError:
                        self.failed_calls += 1
                        time.sleep(0.1)
                at = time.monotonic()
                self.acknowledged += [(at, json.loads(line)["id"]) for line in batch]
        finally:
            client.close()


def audited_ids(app):
    entries = app.store.events.audit(limit=1_000_000)
    return [e["event"]["id"] for e in entries if e["kind"] == "event"]


def ready(url):
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_a_master_killed_mid_stream_fails_over_and_nothing_acknowledged_is_lost_or_doubled(
    tmp_path,
):
    # Given a master, its replica and three sentinels, a receiver of webhooks, 500 tokens...
    cluster = start_cluster(tmp_path)
    settings = Settings(
        redis_url=cluster.url,
        data_dir=tmp_path / "var",
        master_key=generate_master_key(),
        redis_wait_replicas=1,
    )
    app = App(settings)
    load_tokens(app, 500, now=app.now())
    receiver, server = start_receiver()
    app.deliveries.add_subscription(
        Subscription(
            id=new_id("sub"),
            kind="webhook",
            target=receiver.url,
            types=(catalog.REPLACEMENT_REQUIRED,),
            created_at=utc_now(),
        ),
        generate_secret(),
    )
    # ...and the three kinds of tokenwarden process, all given the Sentinel URL
    http = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "REDIS_URL": cluster.url,
        "TOKENWARDEN_MASTER_KEY": settings.master_key,
        "TOKENWARDEN_DATA_DIR": str(tmp_path / "var"),
        "TOKENWARDEN_LOG_LEVEL": "warning",
        "TOKENWARDEN_REDIS_WAIT_REPLICAS": "1",
        "TOKENWARDEN_SCHEDULER_LEASE_TTL": "3",
        "TOKENWARDEN_HTTP_LISTEN": http,
    }
    worker = start(["worker", "--processes", "2"], env)
    scheduler = start(["scheduler"], env)
    serve = start(["serve"], env)
    publisher = Publisher(settings, event_lines(EVENTS, users=1500))
    try:
        wait_until(lambda: len(children_of(worker.pid)) == 2, 30, "two worker processes")
        wait_until(lambda: app.redis.zcard(k.BROKER_HEARTBEATS) >= 2, 30, "two workers")
        wait_until(lambda: app.redis.get(k.SCHEDULER_LEADER) is not None, 30, "a leader")
        wait_until(lambda: ready(f"http://{http}"), 30, "serve to be ready")
        workers_before = children_of(worker.pid)

        # When the master is SIGKILLed mid-stream
        publisher.start()
        wait_until(lambda: len(publisher.acknowledged) >= EVENTS // 3, 60, "events flowing")
        cluster.kill_master()
        killed = time.monotonic()
        acknowledged_before = {i for _, i in publisher.acknowledged}

        # Then the sentinels promote the replica
        promoted = ("127.0.0.1", cluster.replica_port)
        wait_until(lambda: cluster.master_address() == promoted, 30, "the replica's promotion")
        assert cluster.client(cluster.replica_port).info("replication")["role"] == "master"
        # (and the old master, started again, replicates it: there is a replica to wait for)
        cluster.restart_old_master()
        # And every process carries on against it by itself: serve is ready, the scheduler
        # renews its lease there, the workers decide what is published after the failover
        wait_until(lambda: ready(f"http://{http}"), 30, "serve to be ready again")
        low = app.redis.pttl(k.SCHEDULER_LEADER)
        wait_until(lambda: app.redis.pttl(k.SCHEDULER_LEADER) > low, 30, "the lease renewed")
        publisher.join(timeout=120)
        assert not publisher.is_alive(), "the publisher never got every event acknowledged"
        after = [i for at, i in publisher.acknowledged if at > killed]
        assert after, "nothing was published after the failover"
        wait_until(lambda: set(after) <= set(audited_ids(app)), 60, "events after the failover")
        assert worker.poll() is None and scheduler.poll() is None and serve.poll() is None
        assert children_of(worker.pid) == workers_before, "a worker process was restarted"

        # And nothing acknowledged is lost or doubled: each event is decided once...
        everything = {i for _, i in publisher.acknowledged}
        assert len(everything) == EVENTS
        wait_until(lambda: everything <= set(audited_ids(app)), 60, "every event decided")
        ids = audited_ids(app)
        assert len(ids) == len(set(ids)) == EVENTS, "an event was decided twice"
        assert acknowledged_before <= set(ids)
        # ...no outgoing event made twice, and every token they name has its replacement...
        required = [
            e
            for e in app.store.events.outbox(limit=100_000)
            if e["type"] == catalog.REPLACEMENT_REQUIRED
        ]
        assert len({e["id"] for e in required}) == len(required)
        replaced = {r.token_id for r in app.store.events.replacements()}
        assert {e["data"]["token_id"] for e in required} == replaced
        # ...and each reaches the receiver, under its own webhook id, never one that was not
        # decided (a POST cut off by the failover may be sent again, under the same id)
        expected = {e["id"] for e in required}
        wait_until(
            lambda: {r.headers["webhook-id"] for r in receiver.received} == expected,
            60,
            "every webhook",
        )
        arrivals = [r.headers["webhook-id"] for r in receiver.received]
        assert len(arrivals) - len(set(arrivals)) <= 20
        print(
            f"failover: {len(acknowledged_before)} events acknowledged before the kill, "
            f"{publisher.failed_calls} publish calls refused during it; {len(expected)} "
            f"webhooks, {len(arrivals) - len(set(arrivals))} sent again"
        )
    finally:
        publisher.halt.set()
        stop(worker, scheduler, serve)
        server.shutdown()
        app.close()
        cluster.stop()

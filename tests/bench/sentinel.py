"""Redis behind Sentinel: what waiting for a replica (TOKENWARDEN_REDIS_WAIT_REPLICAS) costs in
pipeline throughput, and what a failover loses without it and with it.

Loss: a worker decides events streamed in against redis+sentinel://; the master is SIGKILLed.
At once (the replica takes no write until it is promoted) the replica's audit trail is read;
the killed master's is read from its AOF (fsync on every write, so it holds every write it
acknowledged), started apart. Decisions on the master and not on the replica were acknowledged
and then lost with it. After the failover the stream goes on: events acknowledged to the
publisher and never decided are counted too (the drill, tests/test_sentinel_drill.py, proves
none with the wait on).

    .venv/bin/python -m tests.bench.sentinel [--events 3000] [--kills 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import redis

from events import catalog
from tests.bench.common import BIN, load_tokens, user_of, wait_drained, worker_env
from tests.bench.pipeline import event_file, tokenwarden
from tests.redis_server import free_port
from tests.sentinel_cluster import start_cluster
from worker.api import Client
from worker.bootstrap import App
from worker.broker import EVENTS_QUEUE
from worker.config import Settings
from worker.crypto.sealing import generate_master_key
from worker.store import keys as k


def throughput(workdir: Path, events: int, servers: int, wait_replicas: int) -> float:
    """Events per second through `tokenwarden worker` against a master with one replica."""
    cluster = start_cluster(workdir / f"tp-{wait_replicas}")
    try:
        url = f"redis://127.0.0.1:{cluster.master_port}/0"
        master_key = generate_master_key()
        app = App(Settings(redis_url=url, data_dir=workdir, master_key=master_key))
        load_tokens(app, servers)
        app.close()
        path = workdir / "sentinel-events.jsonl"
        event_file(path, events, users=servers * 3)
        env = worker_env(
            url, master_key, workdir, TOKENWARDEN_REDIS_WAIT_REPLICAS=str(wait_replicas)
        )
        seconds, _ = tokenwarden(url, path, events, 2, 2, env)
        return round(events / seconds)
    finally:
        cluster.stop()


def _audited(client: redis.Redis) -> set[str]:
    return {
        json.loads(fields["event"])["id"]
        for _, fields in client.xrange(k.AUDIT)
        if fields.get("kind") == "event"
    }


def one_failover(workdir: Path, events: int, wait_replicas: int) -> dict:
    cluster = start_cluster(workdir, fsync="always")
    master_key = generate_master_key()
    settings = Settings(
        redis_url=cluster.url,
        data_dir=workdir,
        master_key=master_key,
        redis_wait_replicas=wait_replicas,
    )
    app = App(settings)
    load_tokens(app, 300)
    env = worker_env(
        cluster.url, master_key, workdir, TOKENWARDEN_REDIS_WAIT_REPLICAS=str(wait_replicas)
    )
    worker = subprocess.Popen(
        [str(BIN / "tokenwarden"), "worker", "--processes", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    acknowledged: list[str] = []
    halt = threading.Event()

    def publish() -> None:
        client = Client(settings)
        for i in range(events):
            event = {
                "specversion": "1.0",
                "id": f"f-{i}",
                "source": "urn:bench",
                "type": catalog.PASSWORD_CHANGED,
                "data": {"user": user_of(i % 900)},
            }
            while not halt.is_set():
                try:
                    client.publish([event])
                    acknowledged.append(event["id"])
                    break
                except redis.RedisError:
                    time.sleep(0.05)
        client.close()

    publisher = threading.Thread(target=publish, daemon=True)
    try:
        while not app.redis.zcard(k.BROKER_HEARTBEATS):
            time.sleep(0.05)
        publisher.start()
        while len(acknowledged) < events // 3:
            time.sleep(0.01)
        cluster.kill_master()
        on_replica = _audited(cluster.client(cluster.replica_port))
        port = free_port()
        apart = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(workdir / "master"),
                "--appendonly",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        old = redis.Redis(port=port, decode_responses=True)
        while True:
            try:
                on_master = _audited(old)
                break
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.05)
        apart.kill()
        apart.wait(timeout=30)
        cluster.restart_old_master()  # a replica again: a write has one to wait for
        publisher.join(timeout=300)
        wait_drained(app.redis, k.broker_queue(EVENTS_QUEUE), timeout=120)
        time.sleep(2)  # the last batches in the worker's hands
        never = set(acknowledged) - _audited(app.redis)
        return {"missing_on_replica": len(on_master - on_replica), "never_decided": len(never)}
    finally:
        halt.set()
        worker.terminate()
        worker.wait(timeout=60)
        app.close()
        cluster.stop()


def measure(workdir: Path, events: int, servers: int, failover_events: int, kills: int) -> dict:
    figures = {
        "events_per_s_wait_off": throughput(workdir, events, servers, 0),
        "events_per_s_wait_1": throughput(workdir, events, servers, 1),
    }
    figures["wait_cost_ratio"] = round(
        figures["events_per_s_wait_1"] / figures["events_per_s_wait_off"], 2
    )
    for wait in (0, 1) if kills else ():
        runs = [
            one_failover(workdir / f"kill-{wait}-{n}", failover_events, wait) for n in range(kills)
        ]
        figures[f"failovers_wait_{wait}"] = runs
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=3)
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tw-bench-"))
    try:
        figures = measure(workdir, options.events, 1000, options.events, options.kills)
        print(json.dumps(figures, indent=2))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

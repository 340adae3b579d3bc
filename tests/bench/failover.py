"""Failover: how long until a SIGKILLed worker's messages are handled by the survivor, and how
long until a SIGKILLed scheduler leader is replaced by another replica. The tests prove that
both happen (tests/test_drills.py, tests/test_scheduler.py); this measures how fast.

    .venv/bin/python -m tests.bench.failover [--events 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.bench.common import (
    BIN,
    load_tokens,
    start_redis,
    stop_redis,
    wait_drained,
    worker_env,
)
from tests.bench.pipeline import event_file
from worker.bootstrap import App
from worker.broker import EVENTS_QUEUE
from worker.config import Settings
from worker.crypto.sealing import generate_master_key
from worker.store import keys as k

HEARTBEATS = k.BROKER_HEARTBEATS
EVENTS = k.broker_queue(EVENTS_QUEUE)
LEASE = k.SCHEDULER_LEADER


def _start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "tokenwarden"), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.002)


def _held(client: redis.Redis) -> dict[str, int]:
    """Messages each worker holds (taken, not yet acknowledged), by worker id."""
    return {
        key.decode(): client.scard(key)
        for key in client.scan_iter(k.broker_acks("*", EVENTS_QUEUE))
    }


def worker_recovery(url: str, workdir: Path, events: int) -> dict:
    """Two single-process workers share `events` events; once both hold messages one is
    killed: seconds from the kill until every message, the stranded ones included, is done."""
    client = redis.Redis.from_url(url)
    client.flushdb(asynchronous=True)
    master_key = generate_master_key()
    app = App(Settings(redis_url=url, data_dir=workdir, master_key=master_key))
    load_tokens(app, max(events // 3, 1))
    app.close()
    env = worker_env(url, master_key, workdir, TOKENWARDEN_WORKER_THREADS="2")
    path = workdir / "failover-events.jsonl"
    event_file(path, events, users=events)
    # Started one after the other, so the victim's broker id is the first heartbeat.
    workers = [_start(["worker", "--processes", "1"], env)]
    try:
        _wait(lambda: client.zcard(HEARTBEATS) == 1, 60, "the first worker")
        [victim_id] = [i.decode() for i in client.zrange(HEARTBEATS, 0, -1)]
        workers.append(_start(["worker", "--processes", "1"], env))
        _wait(lambda: client.zcard(HEARTBEATS) == 2, 60, "the second worker")
        subprocess.run(
            [str(BIN / "tokenwarden"), "emit", "--file", str(path)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        victim_acks = k.broker_acks(victim_id, EVENTS_QUEUE)
        _wait(lambda: client.scard(victim_acks) > 0, 60, "the first worker to hold messages")
        os.killpg(workers[0].pid, signal.SIGKILL)
        killed = time.monotonic()
        workers[0].wait(timeout=10)
        stranded = client.scard(victim_acks)
        wait_drained(client, EVENTS, timeout=120)
        recovered_s = time.monotonic() - killed
        decided = client.xlen(k.AUDIT)
    finally:
        for process in workers:
            _stop(process)
    return {
        "events": events,
        "held_at_kill": stranded,
        "recovered_s": round(recovered_s, 1),
        "audited": decided,
    }


def scheduler_takeover(url: str, workdir: Path) -> dict:
    """Two scheduler replicas with the default lease; the leader is killed: seconds until the
    other holds the lease."""
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb(asynchronous=True)
    env = worker_env(url, generate_master_key(), workdir)
    replicas = [_start(["scheduler"], env) for _ in range(2)]
    try:
        _wait(lambda: client.get(LEASE) is not None, 60, "a leader")
        leader = client.get(LEASE)
        victim = next(p for p in replicas if p.pid == int(leader.split("-")[-2]))
        os.killpg(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        _wait(lambda: client.get(LEASE) not in (None, leader), 120, "a new leader")
        took_over_s = time.monotonic() - killed
    finally:
        for process in replicas:
            _stop(process)
    return {"takeover_s": round(took_over_s, 1)}


def measure(url: str, workdir: Path, events: int) -> dict:
    return {**worker_recovery(url, workdir, events), **scheduler_takeover(url, workdir)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6000)
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tw-bench-"))
    url, process = start_redis(workdir)
    try:
        print(json.dumps(measure(url, workdir, options.events), indent=2))
    finally:
        stop_redis(process)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""End-to-end latency: from publishing a password change to the webhook arriving at a local
receiver, at a steady rate, through `tokenwarden worker` processes.

    .venv/bin/python -m tests.bench.latency [--rate 20] [--events 200] [--servers 100]

Events are published with the Python API (what `tokenwarden emit password-changed` calls),
so a CLI start-up (~0.3 s of Python) is not counted. It starts its own Redis on a free port.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.bench.pipeline import BIN, populate, start_redis, wait_worker_ready
from tests.receiver import start_receiver
from worker.api import Client
from worker.bootstrap import App
from worker.config import Settings
from worker.crypto.sealing import generate_master_key
from worker.notify.subscriptions import Subscription, generate_secret
from worker.registry import new_id
from worker.timefmt import utc_now


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(
    url: str, workdir: Path, rate: float, events: int, servers: int, idle_s: float = 0.0
) -> dict:
    master_key = generate_master_key()
    settings = Settings(redis_url=url, data_dir=workdir, master_key=master_key)
    app = App(settings)
    populate(app, servers)
    receiver, server = start_receiver()
    app.deliveries.add_subscription(
        Subscription(
            id=new_id("sub"),
            kind="webhook",
            target=receiver.url,
            types=("tokenwarden.token.replacement_required",),
            created_at=utc_now(),
        ),
        generate_secret(),
    )
    env = {
        **os.environ,
        "REDIS_URL": url,
        "TOKENWARDEN_MASTER_KEY": master_key,
        "TOKENWARDEN_DATA_DIR": str(workdir),
        "TOKENWARDEN_LOG_LEVEL": "warning",
    }
    worker = subprocess.Popen(
        [str(BIN / "tokenwarden"), "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    sent: dict[str, float] = {}
    try:
        wait_worker_ready(redis.Redis.from_url(url), "tw:queue:__heartbeats__")
        time.sleep(1.0 + idle_s)
        with Client(settings) as client:
            interval = 1.0 / rate
            next_at = time.monotonic()
            for i in range(events):
                event_id = f"lat-{i}"
                sent[event_id] = time.time()
                client.password_changed(f"user-{i % servers}@school.edu", event_id=event_id)
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
        receiver.wait_for(events, timeout=120)
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=60)
        server.shutdown()
        app.close()
    latencies = []
    for request in receiver.received:
        newest = json.loads(request.body)["data"]["reasons"][-1]["id"]
        latencies.append((request.at - sent[newest]) * 1000)
    return {
        "events": events,
        "rate_per_s": rate,
        "median_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--servers", type=int, default=100)
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tw-latency-"))
    url, redis_process = start_redis(workdir)
    try:
        redis.Redis.from_url(url).flushdb()
        figures = measure(url, workdir, options.rate, options.events, options.servers)
        print(
            f"end-to-end latency, {figures['events']} events at {figures['rate_per_s']:g}/s: "
            f"median {figures['median_ms']} ms, p99 {figures['p99_ms']} ms, "
            f"max {figures['max_ms']} ms"
        )
        print(json.dumps(figures))
    finally:
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

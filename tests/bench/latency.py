"""End-to-end latency: from publishing a password change to the signed webhook arriving at a
local receiver, through `tokenwarden worker` processes: at a steady rate, and for a single
event after a long silence (when dramatiq's consumers have backed off the most).

    .venv/bin/python -m tests.bench.latency [--rate 50] [--seconds 30] [--silence 60]

Events are published with the Python API (what `tokenwarden emit password-changed` calls), so a
CLI start-up (~0.3 s of Python) is not counted. It starts its own Redis on a free port.
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

from tests.bench.common import (
    BIN,
    load_tokens,
    start_redis,
    stop_redis,
    user_of,
    wait_worker_ready,
    worker_env,
)
from tests.receiver import start_receiver
from worker.api import Client
from worker.bootstrap import App
from worker.config import Settings
from worker.crypto.sealing import generate_master_key
from worker.notify.subscriptions import Subscription, generate_secret
from worker.registry import new_id
from worker.store import keys as k
from worker.timefmt import utc_now


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(url: str, workdir: Path, rate: float, seconds: float, silence_s: float) -> dict:
    redis.Redis.from_url(url).flushdb(asynchronous=True)
    master_key = generate_master_key()
    settings = Settings(redis_url=url, data_dir=workdir, master_key=master_key)
    app = App(settings)
    events = int(rate * seconds)
    # Each event is the first cause for its token, so each is told (more password changes
    # for a token already doomed are merged, and send nothing new).
    servers = events + 1
    load_tokens(app, servers)
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
    worker = subprocess.Popen(
        [str(BIN / "tokenwarden"), "worker"],
        env=worker_env(url, master_key, workdir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    sent: dict[str, float] = {}
    try:
        wait_worker_ready(redis.Redis.from_url(url), k.BROKER_HEARTBEATS)
        time.sleep(1.0)
        with Client(settings) as client:
            interval, next_at = 1.0 / rate, time.monotonic()
            for i in range(events):
                event_id = f"lat-{i}"
                sent[event_id] = time.time()
                client.password_changed(user_of(i), event_id=event_id)
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
            receiver.wait_for(events, timeout=120)
            single = None
            if silence_s:
                time.sleep(silence_s)
                sent["lat-single"] = time.time()
                client.password_changed(user_of(servers - 1), event_id="lat-single")
                receiver.wait_for(events + 1, timeout=60)
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=60)
        server.shutdown()
        app.close()
    latencies = {}
    for request in receiver.received:
        newest = json.loads(request.body)["data"]["reason"]["id"]
        latencies[newest] = (request.at - sent[newest]) * 1000
    single = latencies.pop("lat-single", None)
    steady = list(latencies.values())
    return {
        "events": events,
        "rate_per_s": rate,
        "median_ms": round(statistics.median(steady), 1),
        "p99_ms": round(percentile(steady, 0.99), 1),
        "max_ms": round(max(steady), 1),
        "after_silence_s": silence_s,
        "single_after_silence_ms": round(single, 1) if single is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--silence",
        type=float,
        default=60.0,
        help="seconds of silence before the single event (0: skip it)",
    )
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tw-latency-"))
    url, redis_process = start_redis(workdir)
    try:
        figures = measure(url, workdir, options.rate, options.seconds, options.silence)
        print(
            f"{figures['events']} events at {figures['rate_per_s']:g}/s: median "
            f"{figures['median_ms']} ms, p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms"
        )
        if figures["single_after_silence_ms"] is not None:
            print(
                f"one event after {options.silence:g} s of silence: "
                f"{figures['single_after_silence_ms']} ms"
            )
        print(json.dumps(figures))
    finally:
        stop_redis(redis_process)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

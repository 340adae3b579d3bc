"""Pipeline throughput: events from `tokenwarden emit --file` through the worker processes to
outbox records, against a no-op dramatiq actor (dramatiq's defaults) draining the same number
of messages on the same Redis with the same worker settings. Also the peak resident memory of
one worker process during the run.

    .venv/bin/python -m tests.bench.pipeline [--events 10000] [--servers 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import redis

from tests.bench.common import (
    BIN,
    NOW,
    PeakRss,
    load_tokens,
    start_redis,
    stop_redis,
    user_of,
    wait_drained,
    wait_worker_ready,
    worker_env,
)
from worker.bootstrap import App
from worker.broker import EVENTS_QUEUE
from worker.config import Settings
from worker.crypto.sealing import generate_master_key
from worker.store import keys as k

KINDS = ("tokenwarden.directory.password_changed", "tokenwarden.directory.user_left")


def event_file(path: Path, events: int, users: int) -> None:
    """Password changes and departures of `users` people; the first `servers` of them
    downloaded a token, so with users = 3 x servers about a third of the events hit one."""
    rng = random.Random(7)
    with path.open("w") as out:
        for i in range(events):
            out.write(
                json.dumps(
                    {
                        "specversion": "1.0",
                        "id": f"bench-{i}",
                        "source": "urn:bench",
                        "type": KINDS[i % 2],
                        "time": (NOW - timedelta(minutes=5)).isoformat(),
                        "data": {"user": user_of(rng.randrange(users))},
                    }
                )
                + "\n"
            )


def baseline(url: str, events: int, processes: int, threads: int, env: dict) -> float:
    """Seconds for a no-op actor to take `events` messages from enqueue to drained."""
    client = redis.Redis.from_url(url)
    worker = subprocess.Popen(
        [
            str(BIN / "dramatiq"),
            "tests.bench.noop",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
        ],
        env={**env, "BENCH_REDIS_URL": url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_worker_ready(client, "bench-noop:__heartbeats__")
        os.environ["BENCH_REDIS_URL"] = url
        from tests.bench import noop

        started = time.monotonic()
        for i in range(events):
            noop.noop.send(i)
        wait_drained(client, "bench-noop:noop")
        return time.monotonic() - started
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=60)


def tokenwarden(
    url: str, path: Path, events: int, processes: int, threads: int, env: dict
) -> tuple[float, int]:
    """Seconds from `emit --file` to every event decided and recorded, and the peak RSS (KiB)
    of one worker process meanwhile."""
    client = redis.Redis.from_url(url)
    audited = client.xlen(k.AUDIT)
    worker = subprocess.Popen(
        [
            str(BIN / "tokenwarden"),
            "worker",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_worker_ready(client, k.BROKER_HEARTBEATS)
        with PeakRss(worker.pid) as rss:
            started = time.monotonic()
            subprocess.run(
                [str(BIN / "tokenwarden"), "emit", "--file", str(path)],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            wait_drained(client, k.broker_queue(EVENTS_QUEUE))
            elapsed = time.monotonic() - started
        handled = client.xlen(k.AUDIT) - audited
        if handled < events:
            raise RuntimeError(f"only {handled} of {events} events were recorded")
        return elapsed, rss.peak_kb
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=60)


def measure(
    url: str, workdir: Path, events: int, servers: int, processes: int = 2, threads: int = 2
) -> dict:
    client = redis.Redis.from_url(url)
    client.flushdb(asynchronous=True)
    master_key = generate_master_key()
    app = App(Settings(redis_url=url, data_dir=workdir, master_key=master_key))
    load_tokens(app, servers)
    app.close()
    path = workdir / "events.jsonl"
    event_file(path, events, users=servers * 3)
    env = worker_env(url, master_key, workdir)
    base_s = baseline(url, events, processes, threads, env)
    ours_s, peak_kb = tokenwarden(url, path, events, processes, threads, env)
    return {
        "events": events,
        "servers": servers,
        "processes": processes,
        "threads": threads,
        "baseline_noop_events_per_s": round(events / base_s),
        "events_per_s": round(events / ours_s),
        "ratio_to_baseline": round(base_s / ours_s, 2),
        "outbox_records": client.xlen(k.OUTBOX),
        "worker_peak_rss_mb": round(peak_kb / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--servers", type=int, default=5_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tw-bench-"))
    url, redis_process = start_redis(workdir)
    try:
        figures = measure(
            url, workdir, options.events, options.servers, options.processes, options.threads
        )
        print(f"no-op dramatiq actor      {figures['baseline_noop_events_per_s']:>8} events/s")
        print(
            f"tokenwarden emit + worker {figures['events_per_s']:>8} events/s "
            f"({figures['ratio_to_baseline']}x), worker peak RSS "
            f"{figures['worker_peak_rss_mb']} MB"
        )
        print(json.dumps(figures))
    finally:
        stop_redis(redis_process)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Pipeline throughput: events from `tokenwarden emit --file` through the workers to outbox
records, against a no-op dramatiq actor draining the same number of messages on the same Redis
with the same worker settings.

    .venv/bin/python -m tests.bench.pipeline [--events 10000] [--servers 1000]

It starts its own Redis on a free port (or uses BENCH_REDIS_URL, which it flushes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from tests.tokenfiles import credentials, encrypt_to
from worker import registry
from worker.bootstrap import App
from worker.config import Settings
from worker.crypto.keys import generate_key_material
from worker.crypto.sealing import generate_master_key
from worker.store import keys as k

BIN = Path(sys.executable).parent
NOW = datetime.now(UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(workdir: Path) -> tuple[str, subprocess.Popen | None]:
    if url := os.environ.get("BENCH_REDIS_URL"):
        return url, None
    port = free_port()
    process = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return url, process


def populate(app: App, servers: int) -> None:
    """`servers` servers, each with a token downloaded 30 days ago by user-<i>."""
    material = generate_key_material("bench", NOW)
    cert = material.cert_pem
    key = material.private_key_der()
    for i in range(servers):
        registry.add_server(
            app.store, f"Room {i}", org=None, now=NOW, cert=(cert, "cert.pem"), key=(key, "key.der")
        )
        data = encrypt_to(cert, credentials(NOW + timedelta(days=335)))
        registry.install_token(
            app.store,
            f"Room {i}",
            data,
            source="t.p7m",
            downloaded_by=f"user-{i}@school.edu",
            now=NOW,
            downloaded_at=NOW - timedelta(days=30),
        )


def event_file(path: Path, events: int, users: int) -> None:
    rng = random.Random(7)
    kinds = ("tokenwarden.directory.password_changed", "tokenwarden.directory.user_left")
    with path.open("w") as out:
        for i in range(events):
            out.write(
                json.dumps(
                    {
                        "specversion": "1.0",
                        "id": f"bench-{i}",
                        "source": "urn:bench",
                        "type": kinds[i % 2],
                        "time": (NOW - timedelta(minutes=5)).isoformat(),
                        "data": {"user": f"user-{rng.randrange(users)}@school.edu"},
                    }
                )
                + "\n"
            )


def wait_drained(client: redis.Redis, queue_key: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while client.llen(queue_key) or client.hlen(f"{queue_key}.msgs"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{queue_key} did not drain")
        time.sleep(0.005)


def wait_worker_ready(client: redis.Redis, heartbeats: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not client.zcard(heartbeats):
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not start")
        time.sleep(0.05)


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
) -> float:
    """Seconds from `emit --file` to every event decided and recorded."""
    client = redis.Redis.from_url(url)
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
        wait_worker_ready(client, "tw:queue:__heartbeats__")
        started = time.monotonic()
        subprocess.run(
            [str(BIN / "tokenwarden"), "emit", "--file", str(path)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wait_drained(client, "tw:queue:events")
        elapsed = time.monotonic() - started
        handled = client.xlen(k.AUDIT)
        if handled < events:
            raise RuntimeError(f"only {handled} of {events} events were recorded")
        return elapsed
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--servers", type=int, default=1_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tw-bench-"))
    url, redis_process = start_redis(workdir)
    try:
        redis.Redis.from_url(url).flushdb()
        master_key = generate_master_key()
        settings = Settings(redis_url=url, data_dir=workdir, master_key=master_key)
        env = {
            **os.environ,
            "REDIS_URL": url,
            "TOKENWARDEN_MASTER_KEY": master_key,
            "TOKENWARDEN_DATA_DIR": str(workdir),
            "TOKENWARDEN_LOG_LEVEL": "warning",
        }
        app = App(settings)
        started = time.monotonic()
        populate(app, options.servers)
        setup_s = time.monotonic() - started
        path = workdir / "events.jsonl"
        # About a third of the events name a user who downloaded a token.
        event_file(path, options.events, users=options.servers * 3)
        base_s = baseline(url, options.events, options.processes, options.threads, env)
        ours_s = tokenwarden(url, path, options.events, options.processes, options.threads, env)
        outbox = redis.Redis.from_url(url).xlen(k.OUTBOX)
        figures = {
            "events": options.events,
            "servers": options.servers,
            "processes": options.processes,
            "threads": options.threads,
            "setup_s": round(setup_s, 2),
            "baseline_noop_events_per_s": round(options.events / base_s),
            "tokenwarden_events_per_s": round(options.events / ours_s),
            "ratio_to_baseline": round(base_s / ours_s, 2),
            "outbox_records": outbox,
        }
        print(f"{'pipeline throughput':<28}{'events/s':>10}")
        print(f"{'no-op dramatiq actor':<28}{figures['baseline_noop_events_per_s']:>10}")
        print(
            f"{'tokenwarden emit + worker':<28}{figures['tokenwarden_events_per_s']:>10}"
            f"   ({figures['ratio_to_baseline']}x the no-op baseline)"
        )
        print(json.dumps(figures))
    finally:
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Expiry scan and Redis memory: one scan over N tokens of which D are due, timed, for two
sizes; and Redis memory per stored token, its indexes included.

    .venv/bin/python -m tests.bench.scan [--tokens 100000] [--due 1000] [--also 1000000]

Tokens are bulk loaded (the store's records and keys, credentials sealed): installing a million
real token files would take hours. It starts its own Redis on a free port.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import redis

from scheduler.scan import Scanner
from tests.bench.common import NOW, load_tokens, start_redis, stop_redis, write_server
from worker.bootstrap import App
from worker.config import SchedulerSettings, Settings
from worker.crypto.sealing import generate_master_key
from worker.records import Server

#: Tokens used to measure memory per token (enough to make per-key overheads average out).
MEMORY_SAMPLE = 20_000


def memory_per_token(url: str, workdir: Path, count: int = MEMORY_SAMPLE) -> dict:
    """Bytes Redis uses per token and its index entries, beyond the servers that hold them."""
    client = redis.Redis.from_url(url)
    client.flushdb(asynchronous=True)
    app = App(Settings(redis_url=url, data_dir=workdir, master_key=generate_master_key()))
    pipe = client.pipeline(transaction=False)
    for i in range(count):  # the servers first, with the token ids they will hold
        write_server(
            pipe,
            Server(
                id=f"srv_{i:016x}",
                name=f"Server {i}",
                org=f"Org {i // 10}",
                created_at=NOW,
                token_id=f"tok_{i:016x}",
            ),
        )
    pipe.execute()
    before = client.info("memory")["used_memory"]
    load_tokens(app, count)
    after = client.info("memory")["used_memory"]
    app.close()
    return {
        "tokens": count,
        "bytes_per_token": round((after - before) / count),
        "bytes_per_server_and_token": round(after / count),
    }


def time_scan(url: str, workdir: Path, tokens: int, due: int) -> dict:
    client = redis.Redis.from_url(url)
    client.flushdb(asynchronous=True)
    app = App(Settings(redis_url=url, data_dir=workdir, master_key=generate_master_key()))
    load_tokens(app, tokens, due)
    scanner = Scanner(app.store, SchedulerSettings().thresholds)
    started = time.perf_counter()
    report = scanner.scan(NOW)
    scan_s = time.perf_counter() - started
    if len(report.warnings) != due:
        raise RuntimeError(f"{len(report.warnings)} warnings, {due} expected")
    app.close()
    return {"tokens": tokens, "due": due, "scan_s": round(scan_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=1_000)
    parser.add_argument(
        "--also",
        type=int,
        default=1_000_000,
        help="also time a scan over this many tokens, same number due (0: no)",
    )
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tw-scan-"))
    url, redis_process = start_redis(workdir)
    try:
        memory = memory_per_token(url, workdir)
        scans = [time_scan(url, workdir, options.tokens, options.due)]
        if options.also:
            scans.append(time_scan(url, workdir, options.also, options.due))
        for scan in scans:
            print(
                f"scan over {scan['tokens']:>9,} tokens, {scan['due']:,} due: "
                f"{scan['scan_s']:.3f} s"
            )
        if len(scans) == 2:
            print(f"ratio: {scans[1]['scan_s'] / scans[0]['scan_s']:.2f}x")
        print(f"Redis memory per token, indexes included: {memory['bytes_per_token']} bytes")
        print(json.dumps({"scans": scans, "memory": memory}))
    finally:
        stop_redis(redis_process)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

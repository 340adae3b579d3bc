"""Expiry scan: one scan over N tokens of which D are due, timed.

    .venv/bin/python -m tests.bench.scan [--tokens 100000] [--due 1000] [--also 1000000]

Tokens are written straight through pipelines (the same records and keys the store writes,
credentials sealed), since installing a million real token files would take hours. It starts
its own Redis on a free port.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from scheduler.config import SchedulerSettings
from scheduler.scan import Scanner
from tests.bench.pipeline import start_redis
from worker.bootstrap import App
from worker.config import Settings
from worker.crypto.sealing import generate_master_key
from worker.names import name_key, user_key
from worker.records import Server, Token, to_ms
from worker.store import keys as k

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CHUNK = 5_000


def load_tokens(app: App, count: int, due: int, start: int = 0) -> None:
    """`count` servers with one current token each; the first `due` cross a threshold now."""
    keyring = app.keyring()
    client = app.redis
    for first in range(start, start + count, CHUNK):
        pipe = client.pipeline(transaction=False)
        for i in range(first, min(first + CHUNK, start + count)):
            is_due = i - start < due
            server = Server(
                id=f"srv_b{i:010d}",
                name=f"Server {i}",
                org=f"Org {i // 10}",
                created_at=NOW,
                token_id=f"tok_b{i:010d}",
            )
            expires = NOW + (timedelta(days=25) if is_due else timedelta(days=200 + i % 100))
            token = Token(
                id=server.token_id,
                server_id=server.id,
                consumer_id=secrets.token_hex(16),
                fingerprint=secrets.token_hex(16),
                downloaded_by=f"admin{i}@org{i // 10}.example",
                downloaded_at=expires - timedelta(days=365),
                expires_at=expires,
                installed_at=NOW,
                key_id=f"key_b{i:010d}",
            )
            sealed = keyring.seal(
                json.dumps(
                    {
                        "consumer_key": "CK_" + secrets.token_hex(48),
                        "consumer_secret": "CS_" + secrets.token_hex(20),
                        "access_token": "AT_" + secrets.token_hex(40),
                        "access_secret": "AS_" + secrets.token_hex(20),
                    }
                ).encode(),
                f"{k.token(token.id)}#{k.SEALED_CREDENTIALS}",
            )
            pipe.hset(k.server(server.id), mapping=server.to_hash())
            pipe.hset(
                k.SERVERS,
                k.server_qualifier(name_key(server.org), name_key(server.name)),
                server.id,
            )
            pipe.sadd(k.servers_named(name_key(server.name)), server.id)
            pipe.hset(k.token(token.id), mapping={**token.to_hash(), k.SEALED_CREDENTIALS: sealed})
            pipe.zadd(k.server_tokens(server.id), {token.id: to_ms(NOW)})
            pipe.sadd(k.tokens_by_user(user_key(token.downloaded_by)), token.id)
            pipe.zadd(k.TOKENS_BY_EXPIRY, {token.id: to_ms(expires)})
            # as after an earlier scan: due ones now, the rest at their first threshold
            check = NOW if is_due else expires - timedelta(days=120)
            pipe.zadd(k.TOKENS_NEXT_CHECK, {token.id: to_ms(check)})
        pipe.execute()


def time_scan(url: str, workdir: Path, tokens: int, due: int) -> dict:
    client = redis.Redis.from_url(url)
    client.flushdb()
    app = App(Settings(redis_url=url, data_dir=workdir, master_key=generate_master_key()))
    started = time.perf_counter()
    load_tokens(app, tokens, due)
    load_s = time.perf_counter() - started
    memory = client.info("memory")["used_memory"]
    scanner = Scanner(app.store, SchedulerSettings().thresholds)
    started = time.perf_counter()
    report = scanner.scan(NOW)
    scan_s = time.perf_counter() - started
    if len(report.warnings) != due:
        raise RuntimeError(f"{len(report.warnings)} warnings, {due} expected")
    again = time.perf_counter()
    assert scanner.scan(NOW).warnings == []
    idle_s = time.perf_counter() - again
    app.close()
    return {
        "tokens": tokens,
        "due": due,
        "scan_s": round(scan_s, 3),
        "idle_scan_s": round(idle_s, 4),
        "load_s": round(load_s, 1),
        "redis_used_memory_bytes": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=1_000)
    parser.add_argument(
        "--also",
        type=int,
        default=0,
        help="also time a scan over this many tokens (same number due)",
    )
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tw-scan-"))
    url, redis_process = start_redis(workdir)
    try:
        results = [time_scan(url, workdir, options.tokens, options.due)]
        if options.also:
            results.append(time_scan(url, workdir, options.also, options.due))
        for r in results:
            print(
                f"scan over {r['tokens']:>9,} tokens, {r['due']:,} due: {r['scan_s']:.3f} s "
                f"(a scan with nothing due: {r['idle_scan_s'] * 1000:.1f} ms)"
            )
        if len(results) == 2:
            print(
                f"ratio {results[1]['tokens']:,} / {results[0]['tokens']:,} tokens: "
                f"{results[1]['scan_s'] / results[0]['scan_s']:.2f}x"
            )
        print(json.dumps(results))
    finally:
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

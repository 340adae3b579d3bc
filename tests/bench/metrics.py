"""The estate metrics: one scrape of `/metrics` over N tokens (a tenth with an open
replacement, every one confirmed by Apple), timed through the collector alone and over HTTP
from a real `serve`; then one over a larger estate, above the per-token series limit (counts
by days left only).

    .venv/bin/python -m tests.bench.metrics [--tokens 10000] [--large 100000]

Tokens are bulk loaded as the scan benchmark loads them. It starts its own Redis.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
import redis
from prometheus_client import CollectorRegistry, generate_latest

from tests.bench.common import NOW, load_tokens, start_redis, stop_redis
from tests.helpers import serving
from worker.bootstrap import App
from worker.config import Settings
from worker.crypto.sealing import generate_master_key
from worker.intake.app import create_app, estate_collector
from worker.records import to_ms
from worker.store import keys as k

#: Scrapes timed per figure (the median is reported).
SCRAPES = 5

#: One token in this many has an open replacement.
REPLACED_EVERY = 10


def _open_replacements(app: App, count: int) -> None:
    """Open replacements (and Apple's confirmations) written as the decisions write them."""
    reason = {
        "type": "tokenwarden.directory.password_changed",
        "urgency": "immediate",
        "rank": 30,
        "count": 1,
        "id": "e",
        "source": "bench",
        "time": "2026-01-01T00:00:00Z",
    }
    pipe = app.redis.pipeline(transaction=False)
    for i in range(count):
        token_id, server_id = f"tok_{i:016x}", f"srv_{i:016x}"
        pipe.hset(k.token(token_id), mapping={"a_verdict": "accepted", "a_confirmed": to_ms(NOW)})
        if i % REPLACED_EVERY == 0:
            pipe.hset(
                k.replacement(token_id),
                mapping={"token": token_id, "server": server_id, "status": "open",
                         "opened_at": "2026-01-01T00:00:00Z", "reasons": json.dumps([reason]),
                         "omitted": 0, k.REPLACEMENT_VERSION: 1},
            )  # fmt: skip
            pipe.zadd(k.REPLACEMENTS_OPEN, {token_id: to_ms(NOW) - i})
        if i % 5_000 == 4_999:
            pipe.execute()
    pipe.execute()


def _median_s(scrape) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(SCRAPES):
        started = time.perf_counter()
        size = len(scrape())
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3), size


def _collector_scrape(app: App):
    """Every scrape timed reads the estate afresh (snapshot 0): the shared snapshot, which
    serves the scrapes of the next few seconds from one reading, would time a cached answer."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(estate_collector(app, snapshot_s=0))
    return lambda: generate_latest(registry)


def scrape_once(url: str, workdir: Path, tokens: int, limit: int, http: bool) -> dict:
    redis.Redis.from_url(url).flushdb()
    settings = Settings(redis_url=url, data_dir=workdir, master_key=generate_master_key())
    app = App(replace(settings, metrics_token_series=limit), clock=lambda: NOW)
    load_tokens(app, tokens)
    _open_replacements(app, tokens)
    collector_s, size = _median_s(_collector_scrape(app))
    figures = {
        "tokens": tokens,
        "token_series_limit": limit,
        "per_token_series": tokens <= limit,
        "collector_s": collector_s,
        "bytes": size,
    }
    if http:
        with (
            serving(create_app(app, metrics_snapshot_s=0)) as base,
            httpx.Client(base_url=base, timeout=60) as client,
        ):
            figures["http_s"], _ = _median_s(
                lambda: client.get("/metrics").raise_for_status().content
            )
    app.close()
    return figures


def measure(url: str, workdir: Path, tokens: int, large: int) -> dict:
    """The scrape at `tokens` (per-token series), and at `large` above the series limit."""
    return {
        "series": scrape_once(url, workdir, tokens, tokens, http=True),
        "buckets": scrape_once(url, workdir, large, tokens, http=False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tw-bench-metrics-"))
    url, process = start_redis(workdir)
    try:
        print(json.dumps(measure(url, workdir, options.tokens, options.large), indent=2))
    finally:
        stop_redis(process)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

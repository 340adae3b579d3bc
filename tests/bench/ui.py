"""The web pages over an estate of N tokens: each page of `/ui/` fetched over HTTP from the
pages served by uvicorn, every view reading Redis afresh; the median of VIEWS views, and the
first one (nothing parsed yet) beside it.

The estate: N servers with a token each (bulk loaded as the scan benchmark loads them), a
password change dooming one token in ten and as many events about nobody (decided by the
EventHandler: replacements, outgoing events and audit entries as the worker writes them), a
webhook subscription with a delivery of each outgoing event (dispatched, never sent), and a
few events that could not be handled.

    .venv/bin/python -m tests.bench.ui [--tokens 10000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from events import catalog
from events.cloudevent import new_event
from tests.bench.common import NOW, load_tokens, start_redis, stop_redis, user_of
from tests.helpers import serving
from worker.bootstrap import App
from worker.config import Settings
from worker.config_ui import UiSettings
from worker.crypto.sealing import generate_master_key
from worker.intake.app import create_app
from worker.logs import configure_logging
from worker.notify.dispatcher import Dispatcher
from worker.notify.subscriptions import WEBHOOK, Subscription, generate_secret, parse_types
from worker.registry import new_id
from worker.ui.viewers import add_viewer

#: Views timed per page (the median is reported).
VIEWS = 5

#: One token in this many has a password change dooming it.
DOOMED_EVERY = 10

#: Events handled per batch (as the worker takes them).
BATCH = 100

#: Target per page, in seconds.
TARGET_S = 0.2


def _seed(app: App, tokens: int) -> None:
    load_tokens(app, tokens)
    every_type = parse_types(None)
    subscription = Subscription(
        new_id("sub"), WEBHOOK, "https://hooks.example.org/bench", every_type, NOW
    )
    app.deliveries.add_subscription(subscription, generate_secret())
    events = []
    for i in range(0, tokens, DOOMED_EVERY):
        events.append(new_event(catalog.PASSWORD_CHANGED, {"user": user_of(i)}, source="bench"))
        events.append(new_event(catalog.USER_LEFT, {"user": f"nobody{i}@example.org"}, source="hr"))
    wire = [e.to_wire() for e in events] + ["{not an event"] * 5
    for start in range(0, len(wire), BATCH):
        app.handler.handle_batch(wire[start : start + BATCH], received_at=NOW, now=NOW)
    app.deliveries.ensure_dispatch_group()
    dispatcher = Dispatcher(app.deliveries, app.now, lambda *_: None, consumer="bench")
    while dispatcher.dispatch_new(block_ms=1):
        pass


def _time(client: httpx.Client, path: str) -> dict:
    times = []
    for _ in range(VIEWS + 1):
        started = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - started)
        answer.raise_for_status()
    return {
        "path": path,
        "first_s": round(times[0], 3),
        "median_s": round(statistics.median(times[1:]), 3),
        "bytes": len(answer.content),
    }


def measure(url: str, workdir: Path, tokens: int) -> dict:
    redis.Redis.from_url(url).flushdb(asynchronous=True)  # (a million tokens may be there)
    settings = Settings(
        redis_url=url,
        data_dir=workdir,
        master_key=generate_master_key(),
        ui=UiSettings(enabled=True),
    )
    app = App(settings, clock=lambda: NOW)
    started = time.perf_counter()
    _seed(app, tokens)
    seeded_s = time.perf_counter() - started
    doomed = app.store.events.replacements()[0].server_id
    paths = ["/ui/", "/ui/?state=replace+now", "/ui/timeline", f"/ui/servers/{doomed}",
             "/ui/activity"]  # fmt: skip
    # serve as it runs, the pages on; a viewer logged in: each view pays the cookie check.
    password = add_viewer(app.viewers, "bench", now=NOW).password
    with serving(create_app(app)) as base, httpx.Client(base_url=base, timeout=60) as client:
        login = client.post("/ui/login", data={"name": "bench", "password": password})
        assert login.status_code == 303, login.text
        timed = [_time(client, path) for path in paths]
    app.close()
    return {
        "tokens": tokens,
        "seeded_s": round(seeded_s, 1),
        "audit_entries": 2 * (tokens // DOOMED_EVERY),
        "pages": timed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000)
    options = parser.parse_args()
    configure_logging("warning", "console", stream=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="tw-bench-ui-"))
    url, process = start_redis(workdir)
    try:
        print(json.dumps(measure(url, workdir, options.tokens), indent=2))
    finally:
        stop_redis(process)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

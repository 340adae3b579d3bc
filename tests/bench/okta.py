"""Okta event hooks end to end: deliveries of System Log events posted at a steady rate to a
`tokenwarden serve` process, decided by `tokenwarden worker` processes, the outgoing webhooks
arriving at a local receiver. Two latencies: from the POST to its 200 (what Okta waits for,
3 s at most), and from the POST to the webhooks its events caused.

    .venv/bin/python -m tests.bench.okta [--rate 20] [--seconds 30] [--doomed 5]

Each delivery carries 50 events, each about another user: `--doomed` of them (password resets
and deactivations; 1 by default) are of users holding a token, each that token's first cause,
so each is told in a webhook of its own; the others are password changes of users with no token
(every fifth a FAILURE, only recorded as ignored). The webhook latency is per delivery (to the
first webhook its events caused) and per dooming event (every webhook): the same with one.

One dooming event per delivery is 20 doomed tokens a second, more than any school has admins:
the webhook sender, not the intake, caps how many more (see README, "Benchmark").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
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
from tests.bench.latency import percentile
from tests.bench.serve import Serve, load_average, new_source, raise_unless_ok
from tests.receiver import start_receiver
from worker.bootstrap import App
from worker.config import Settings
from worker.crypto.sealing import generate_master_key
from worker.notify.subscriptions import Subscription, generate_secret
from worker.registry import new_id
from worker.store import keys as k
from worker.timefmt import utc_now

EVENTS_PER_DELIVERY = 50

#: Deliveries in flight at once at most (Okta sends them one after another per hook; a few
#: senders keep the schedule when one answer is slow, rather than hiding the delay).
SENDERS = 4

DOOMING = ("user.account.reset_password", "user.lifecycle.deactivate")


def log_event(event_type: str, login: str, published: str, result: str = "SUCCESS") -> dict:
    """A System Log event as an event hook carries it (trimmed: the fields read, and a few)."""
    return {
        "uuid": str(uuid.uuid4()),
        "published": published,
        "eventType": event_type,
        "version": "0",
        "severity": "INFO",
        "displayMessage": "benchmark",
        "actor": {"id": "00u1admin", "type": "User", "alternateId": "it-admin@school.example"},
        "outcome": {"result": result},
        "target": [{"id": "00u1target", "type": "User", "alternateId": login}],
        "client": {"ipAddress": "192.0.2.10", "device": "Computer"},
    }


def delivery(number: int, doomed: int, published: str) -> tuple[bytes, list[str]]:
    """Delivery `number`'s body, and the uuids of its events that doom a token."""
    events, dooming = [], []
    for j in range(EVENTS_PER_DELIVERY):
        if j < doomed:
            event = log_event(DOOMING[j % 2], user_of(number * doomed + j), published)
            dooming.append(event["uuid"])
        else:
            result = "FAILURE" if j % 5 == 0 else "SUCCESS"
            login = f"staff{number}-{j}@school.example"
            event = log_event("user.account.update_password", login, published, result)
        events.append(event)
    document = {
        "eventType": "com.okta.event_hook",
        "eventTypeVersion": "1.0",
        "cloudEventsVersion": "0.1",
        "source": "https://school.okta.com/api/v1/eventHooks/whobench",
        "eventId": str(uuid.uuid4()),
        "data": {"events": events},
        "eventTime": published,
        "contentType": "application/json",
    }
    return json.dumps(document).encode(), dooming


class Sender:
    """Posts delivery i at `start + i / rate` from a few threads; records when each was
    posted and how long its answer took. A refused delivery stops the run."""

    def __init__(self, url: str, secret: str, bodies: list[bytes], rate: float):
        self.url, self.bodies, self.rate = url, bodies, rate
        self.headers = {"authorization": secret, "content-type": "application/json"}
        self.posted_at: dict[int, float] = {}
        self.answer_ms: dict[int, float] = {}
        self._local = threading.local()

    def warm_up(self, bodies: list[bytes]) -> None:
        """A delivery from each sender first, not measured: a serve process just started
        answers its first few in up to about 100 ms (connections, threads, first imports)."""
        with ThreadPoolExecutor(SENDERS) as pool:
            for number, response in enumerate(pool.map(self._post, bodies)):
                raise_unless_ok(response, f"warm-up delivery {number}")

    def _post(self, body: bytes) -> httpx.Response:
        return self._client().post(self.url, content=body, headers=self.headers)

    def run(self) -> None:
        start = time.monotonic() + 0.2
        with ThreadPoolExecutor(SENDERS) as pool:
            futures = [
                pool.submit(self._send, i, start + i / self.rate) for i in range(len(self.bodies))
            ]
            for future in futures:
                future.result()  # raises what a sender raised

    def _client(self) -> httpx.Client:
        if not hasattr(self._local, "client"):
            self._local.client = httpx.Client(timeout=10)
        return self._local.client

    def _send(self, i: int, at: float) -> None:
        time.sleep(max(0.0, at - time.monotonic()))
        self.posted_at[i] = time.time()
        started = time.perf_counter()
        response = self._post(self.bodies[i])
        self.answer_ms[i] = (time.perf_counter() - started) * 1000
        raise_unless_ok(response, f"delivery {i}")


def measure(url: str, workdir: Path, rate: float, seconds: float, doomed: int) -> dict:
    redis.Redis.from_url(url).flushdb(asynchronous=True)
    master_key = generate_master_key()
    app = App(Settings(redis_url=url, data_dir=workdir, master_key=master_key))
    deliveries = int(rate * seconds)
    load_tokens(app, deliveries * doomed)
    receiver, http_server = start_receiver()
    subscribe(app, receiver.url)
    secret = new_source(app, "okta-bench", "okta")
    published = (datetime.now(UTC) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    bodies, delivery_of = [], {}
    for i in range(deliveries):
        body, dooming = delivery(i, doomed, published)
        bodies.append(body)
        delivery_of |= dict.fromkeys(dooming, i)
    worker = subprocess.Popen(
        [str(BIN / "tokenwarden"), "worker"],
        env=worker_env(url, master_key, workdir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_worker_ready(app.redis, k.BROKER_HEARTBEATS)
        with Serve(url, master_key, workdir) as serve:
            sender = Sender(f"{serve.base_url}/sources/okta-bench/okta", secret, bodies, rate)
            sender.warm_up([delivery(-1 - n, 0, published)[0] for n in range(SENDERS)])
            time.sleep(1.0)  # the workers' consumers settle, as in the latency benchmark
            cpu_before = serve.cpu_s()
            load_before = load_average()
            sender.run()
            serve_cpu_s = serve.cpu_s() - cpu_before
            load = f"{load_before} before, {load_average()} after"
            receiver.wait_for(len(delivery_of), timeout=120)
    finally:
        stop_group(worker)
        http_server.shutdown()
        app.close()
    return figures(sender, receiver.received, delivery_of, doomed) | {
        "rate_per_s": rate,
        "seconds": seconds,
        "serve_cpu_share": round(serve_cpu_s / seconds, 2),
        "load_average": load,
    }


def subscribe(app: App, target: str) -> None:
    app.deliveries.add_subscription(
        Subscription(
            id=new_id("sub"),
            kind="webhook",
            target=target,
            types=("tokenwarden.token.replacement_required",),
            created_at=utc_now(),
        ),
        generate_secret(),
    )


def figures(sender: Sender, received: list, delivery_of: dict[str, int], doomed: int) -> dict:
    per_event, first_of_delivery = [], {}
    for request in received:
        event_id = json.loads(request.body)["data"]["reason"]["id"]
        i = delivery_of[event_id]
        per_event.append((request.at - sender.posted_at[i]) * 1000)
        first_of_delivery[i] = min(first_of_delivery.get(i, request.at), request.at)
    if len(per_event) != len(delivery_of):
        raise RuntimeError(f"{len(per_event)} webhooks for {len(delivery_of)} doomed tokens")
    per_delivery = [(at - sender.posted_at[i]) * 1000 for i, at in first_of_delivery.items()]
    answers = list(sender.answer_ms.values())
    return {
        "deliveries": len(sender.bodies),
        "events_per_delivery": EVENTS_PER_DELIVERY,
        "doomed_per_delivery": doomed,
        "senders": SENDERS,
        "answer_median_ms": round(statistics.median(answers), 1),
        "answer_p99_ms": round(percentile(answers, 0.99), 1),
        "answer_max_ms": round(max(answers), 1),
        "webhook_median_ms": round(statistics.median(per_delivery), 1),
        "webhook_p99_ms": round(percentile(per_delivery, 0.99), 1),
        "webhook_per_event_median_ms": round(statistics.median(per_event), 1),
        "webhook_per_event_p99_ms": round(percentile(per_event, 0.99), 1),
    }


def stop_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, 15)
    process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="deliveries per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--doomed", type=int, default=1, help="events per delivery dooming a token")
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tw-okta-"))
    url, redis_process = start_redis(workdir)
    try:
        result = measure(url, workdir, options.rate, options.seconds, options.doomed)
        print(json.dumps(result, indent=2))
    finally:
        stop_redis(redis_process)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

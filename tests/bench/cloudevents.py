"""CloudEvents over HTTP: how many events a second one `tokenwarden serve` process accepts in
batches of 100 (`application/cloudevents-batch+json`), posted by a few client threads at once
for a while; against the same batches published with the Publisher directly (what `tokenwarden
emit --file` does, less its start-up), in the same run, so the ratio is what HTTP costs.

    .venv/bin/python -m tests.bench.cloudevents [--seconds 10] [--clients 4]

No worker runs: what is measured is the intake taking events into the queue (each batch one
message), not the workers deciding them (the pipeline benchmark). The client threads send
ready-made bodies over kept-alive connections; the CPU each side used is reported, to show the
server, not the client, was the bottleneck.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from tests.bench.common import start_redis, stop_redis, user_of
from tests.bench.serve import Serve, load_average, new_source
from worker.bootstrap import App
from worker.broker import EVENTS_QUEUE
from worker.config import Settings
from worker.crypto.sealing import generate_master_key
from worker.publish import Publisher
from worker.store import keys as k

BATCH = 100

#: Client threads posting at once: enough to keep one serve process busy (its CPU share is
#: reported; the clients' stays small).
CLIENTS = 4
BATCH_TYPE = "application/cloudevents-batch+json"
KINDS = ("tokenwarden.directory.password_changed", "tokenwarden.directory.user_left")

#: A fixed-width stand-in for the batch number in each event id: every batch's ids are unique
#: at the cost of one bytes.replace, not a JSON encoding, on the client.
PLACEHOLDER = b"BATCHNUMBER"


def batch_template() -> bytes:
    time_text = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    events = [
        {
            "specversion": "1.0",
            "id": f"ce-{PLACEHOLDER.decode()}-{j}",
            "source": "urn:bench:cloudevents",
            "type": KINDS[j % 2],
            "time": time_text,
            "datacontenttype": "application/json",
            "data": {"user": user_of(j)},
        }
        for j in range(BATCH)
    ]
    return json.dumps(events).encode()


def batch(template: bytes, number: int) -> bytes:
    return template.replace(PLACEHOLDER, b"%011d" % number)


class Clients:
    """`count` threads posting batches over kept-alive connections until `deadline`; each
    answer must be 202 with all the batch accepted, else the run fails."""

    def __init__(self, port: int, path: str, secret: str, count: int):
        self.port, self.path, self.count = port, path, count
        self.headers = {"authorization": f"Bearer {secret}", "content-type": BATCH_TYPE}
        self.template = batch_template()
        self.accepted = 0
        self.requests = 0
        self.failure: str | None = None
        self._numbers = iter(range(10**10))
        self._lock = threading.Lock()

    def run(self, seconds: float) -> float:
        """Posts for `seconds`; returns the seconds until the last answer."""
        deadline = time.monotonic() + seconds
        threads = [
            threading.Thread(target=self._post_until, args=(deadline,)) for _ in range(self.count)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.failure:
            raise RuntimeError(self.failure)
        return time.monotonic() - started

    def _post_until(self, deadline: float) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            while time.monotonic() < deadline and self.failure is None:
                with self._lock:
                    number = next(self._numbers)
                connection.request("POST", self.path, batch(self.template, number), self.headers)
                response = connection.getresponse()
                answer = response.read()
                if response.status != 202 or json.loads(answer) != {"accepted": BATCH}:
                    self.failure = f"batch {number}: HTTP {response.status} {answer[:300]!r}"
                    return
                with self._lock:
                    self.accepted += BATCH
                    self.requests += 1
        except Exception as exc:  # any failure to post fails the run, loudly
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            connection.close()


def publisher_baseline(app: App, template: bytes, batches: int) -> float:
    """Seconds for the Publisher to take the same batches: decode, validate, enqueue."""
    publisher = Publisher(app.broker, app.now)
    started = time.monotonic()
    for number in range(batches):
        publisher.publish(json.loads(batch(template, number)))
    return time.monotonic() - started


def measure(url: str, workdir: Path, seconds: float, clients: int = CLIENTS) -> dict:
    client = redis.Redis.from_url(url)
    client.flushdb()
    master_key = generate_master_key()
    app = App(Settings(redis_url=url, data_dir=workdir, master_key=master_key))
    queue = k.broker_queue(EVENTS_QUEUE)
    try:
        secret = new_source(app, "ce-bench", "cloudevents")
        with Serve(url, master_key, workdir) as serve:
            posting = Clients(serve.port, "/sources/ce-bench/events", secret, clients)
            load_before = load_average()
            serve_cpu, client_cpu = serve.cpu_s(), time.process_time()
            elapsed = posting.run(seconds)
            serve_cpu, client_cpu = serve.cpu_s() - serve_cpu, time.process_time() - client_cpu
            load = f"{load_before} before, {load_average()} after"
        if client.llen(queue) != posting.requests:  # one message per batch of 100
            raise RuntimeError(f"{client.llen(queue)} messages queued for {posting.requests}")
        client.delete(queue, f"{queue}.msgs")
        baseline_s = publisher_baseline(app, posting.template, posting.requests)
        if client.llen(queue) != posting.requests:
            raise RuntimeError(f"the Publisher queued {client.llen(queue)} of {posting.requests}")
    finally:
        app.close()
    http_rate = posting.accepted / elapsed
    baseline_rate = posting.accepted / baseline_s
    return {
        "events": posting.accepted,
        "batch": BATCH,
        "clients": clients,
        "seconds": round(elapsed, 1),
        "events_per_s": round(http_rate),
        "baseline_publisher_events_per_s": round(baseline_rate),
        "ratio_to_baseline": round(http_rate / baseline_rate, 2),
        "serve_cpu_share": round(serve_cpu / elapsed, 2),
        "client_cpu_share": round(client_cpu / elapsed, 2),
        "load_average": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--clients", type=int, default=CLIENTS, help="client threads posting at once"
    )
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tw-ce-"))
    url, redis_process = start_redis(workdir)
    try:
        print(json.dumps(measure(url, workdir, options.seconds, options.clients), indent=2))
    finally:
        stop_redis(redis_process)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The baseline: a no-op dramatiq actor on a RedisBroker with dramatiq's defaults.

Run by the pipeline benchmark as `dramatiq tests.bench.noop`; BENCH_REDIS_URL names the Redis.
"""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"], namespace="bench-noop")
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="noop", max_retries=0)
def noop(*args) -> None:
    """Does nothing: what dramatiq alone costs per message."""

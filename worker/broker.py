"""The dramatiq broker on Redis, and the middleware tokenwarden runs with.

Defaults are tuned for recovery and latency rather than dramatiq's own (a dead worker's messages
come back after a minute or more, an idle consumer polls once a second): a worker presumed dead
after TOKENWARDEN_HEARTBEAT_TIMEOUT seconds (8), queue maintenance on 2% of broker commands.
A worker's heartbeat is every broker call its consumer makes, at least every poll interval, and
our messages take milliseconds, so a live worker is never mistaken for a dead one.
"""

from __future__ import annotations

from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from dramatiq.middleware import CurrentMessage, Retries, TimeLimit

from worker.config import Settings
from worker.middleware.logging_context import LogContext
from worker.store.keys import BROKER_NAMESPACE
from worker.store.replication import ReplicaWait

#: The queue incoming events travel on.
EVENTS_QUEUE = "events"

#: Broker commands out of a million that also run queue maintenance (recovering the messages
#: of dead workers). dramatiq's default, 1000, can leave them stranded for minutes; at 2%, an
#: idle consumer polling every 50 ms runs it about once a second.
MAINTENANCE_CHANCE = 20_000

#: Longest one message may be handled before it is interrupted, in ms.
MESSAGE_TIME_LIMIT_MS = 5 * 60 * 1000

#: Retries of a message that failed for a reason other than bad input, and their back-off.
MAX_RETRIES = 8
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 5 * 60 * 1000


class ReplicatedRedisBroker(RedisBroker):
    """dramatiq's Redis broker, whose enqueue answers only once the replicas asked for hold the
    message (TOKENWARDEN_REDIS_WAIT_REPLICAS): WAIT goes in one pipeline with the enqueue, on
    its connection. The arguments are those dramatiq's own `do_enqueue` gives its script."""

    replica_wait = ReplicaWait()

    def do_enqueue(self, queue_name: str, *args: object) -> object:
        if not self.replica_wait.replicas:
            return self._dispatch("enqueue")(queue_name, *args)
        pipe = self.client.pipeline(transaction=False)
        self.scripts["dispatch"](
            keys=[self.namespace],
            args=[
                "enqueue",
                current_millis(),
                queue_name,
                self.broker_id,
                self.heartbeat_timeout,
                self.dead_message_ttl,
                self._should_do_maintenance("enqueue"),
                self._max_unpack_size(),
                *args,
            ],
            client=pipe,
        )
        self.replica_wait.queue(pipe)
        answer, reached = pipe.execute()
        self.replica_wait.check(reached, "event enqueued")
        return answer


def make_broker(settings: Settings) -> RedisBroker:
    from worker.bootstrap import redis_client  # bootstrap builds the broker: imported late

    broker = ReplicatedRedisBroker(
        # Made where every client is (redis:// or Sentinel alike); dramatiq reads bytes.
        client=redis_client(settings, decode_responses=False),
        namespace=BROKER_NAMESPACE,
        heartbeat_timeout=settings.heartbeat_timeout_s * 1000,
        maintenance_chance=MAINTENANCE_CHANCE,
        # Only middleware that acts on our messages. Of dramatiq's defaults, AgeLimit,
        # ShutdownNotifications, Callbacks and Pipelines act only on actors or messages that
        # ask for it (max_age, notify_shutdown, on_success/on_failure, pipe_target), and
        # tokenwarden's never do.
        middleware=[
            TimeLimit(time_limit=MESSAGE_TIME_LIMIT_MS),
            Retries(
                max_retries=MAX_RETRIES, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS
            ),
            CurrentMessage(),
            LogContext(),
        ],
    )
    broker.replica_wait = ReplicaWait.of(settings)
    broker.declare_queue(EVENTS_QUEUE)
    return broker

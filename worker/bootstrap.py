"""The one place that wires settings, Redis, the keyring and the store together.

Nothing is connected at import time; tests build an App with their own Redis URL and clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING

import redis
from dramatiq.brokers.redis import RedisBroker
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from worker.broker import make_broker
from worker.config import Settings
from worker.crypto.masterkey import LiveKeyring, load_keyring
from worker.crypto.sealing import Keyring
from worker.environment import SENTINEL_SCHEMES, SentinelUrl, parse_sentinel_url
from worker.handling import EventHandler
from worker.notify.deliver import Deliverer
from worker.store.delivery_store import DeliveryStore
from worker.store.estate_metrics import EstateMetricsStore
from worker.store.event_store import EventStore
from worker.store.keys import MASTER_KEY_IDS
from worker.store.listings import Listings
from worker.store.page_reads import PageReads
from worker.store.redis_store import RedisStore
from worker.store.replication import ReplicaWait
from worker.store.source_store import SourceStore
from worker.store.viewer_store import ViewerStore
from worker.timefmt import utc_now

if TYPE_CHECKING:
    from worker.apple.client import AppleClient
    from worker.services.apple_checks import AppleChecker
    from worker.services.directory_checks import DirectoryChecker

#: Seconds to wait for Redis to accept a connection before saying it is unreachable.
REDIS_CONNECT_TIMEOUT = 5.0

#: Seconds to wait for one Redis answer.
REDIS_SOCKET_TIMEOUT = 30.0


def redis_client(settings: Settings, *, decode_responses: bool = True) -> redis.Redis:
    """The one way a client of tokenwarden's Redis is made (the store's, and the broker's,
    which reads bytes). Behind Sentinel, each new connection asks the sentinels where the
    master is, and a connection to a master demoted since is dropped: after a failover, the
    next command after the one that failed goes to the new master, in every process."""
    options = {
        "decode_responses": decode_responses,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
        "socket_timeout": REDIS_SOCKET_TIMEOUT,
        "health_check_interval": 30,
    }
    if settings.redis_url.partition("://")[0].lower() not in SENTINEL_SCHEMES:
        return redis.Redis.from_url(settings.redis_url, **options)
    return _sentinel_client(parse_sentinel_url(settings.redis_url), options)


def _sentinel_client(url: SentinelUrl, options: dict) -> redis.Redis:
    tls = {"ssl": True} if url.tls else {}
    if url.tls and url.ssl_ca_certs:
        tls["ssl_ca_certs"] = url.ssl_ca_certs
    if url.tls and url.ssl_cert_reqs:
        tls["ssl_cert_reqs"] = url.ssl_cert_reqs
    sentinels = Sentinel(
        list(url.sentinels),
        sentinel_kwargs={
            "password": url.sentinel_password,
            "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
            "socket_timeout": REDIS_CONNECT_TIMEOUT,
            # One try each: a sentinel that does not answer is passed over for the next.
            "retry": Retry(NoBackoff(), 0),
            **tls,
        },
    )
    return sentinels.master_for(
        url.master, db=url.db, username=url.username, password=url.password, **tls, **options
    )


@dataclass
class App:
    settings: Settings
    clock: Callable[[], datetime] = utc_now
    _keyring: LiveKeyring | None = field(default=None, repr=False)
    _keyring_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis_client(self.settings)

    @cached_property
    def store(self) -> RedisStore:
        events = EventStore(self.redis, replica_wait=ReplicaWait.of(self.settings))
        return RedisStore(self.redis, self.keyring, events)

    @cached_property
    def estate_metrics(self) -> EstateMetricsStore:
        return EstateMetricsStore(self.redis)

    @cached_property
    def listings(self) -> Listings:
        return Listings(self.redis)

    @cached_property
    def page_reads(self) -> PageReads:
        return PageReads(self.redis)

    @cached_property
    def broker(self) -> RedisBroker:
        return make_broker(self.settings)

    @cached_property
    def handler(self) -> EventHandler:
        return EventHandler(self.store)

    @cached_property
    def deliveries(self) -> DeliveryStore:
        return DeliveryStore(self.redis, self.keyring)

    @cached_property
    def deliverer(self) -> Deliverer:
        # Deliveries run on the wall clock, even where the domain clock is injected: signatures,
        # timeouts and retry schedules are about when bytes move, not about token lifetimes.
        return Deliverer(self.deliveries, self.settings.notify, utc_now)

    @cached_property
    def sources(self) -> SourceStore:
        return SourceStore(self.redis, self.keyring)

    @cached_property
    def viewers(self) -> ViewerStore:
        """The viewers of the web pages (worker/ui/viewers.py)."""
        return ViewerStore(self.redis)

    @cached_property
    def apple(self) -> AppleClient:
        """The client of Apple's enrollment service (one connection pool, shared by threads).
        Imported here, not above: worker processes never ask Apple, and need not carry it."""
        from worker.apple.client import AppleClient

        return AppleClient(self.settings.apple)

    @cached_property
    def apple_checker(self) -> AppleChecker:
        from worker.services.apple_checks import AppleChecker

        return AppleChecker(self.store, self.apple, self.settings.apple)

    @cached_property
    def directory_checker(self) -> DirectoryChecker:
        """Rounds of the polling sources (imported here: worker processes never run one)."""
        from worker.directories.factory import client_for
        from worker.publish import Publisher
        from worker.services.directory_checks import DirectoryChecker

        publisher = Publisher(self.broker, self.now)
        return DirectoryChecker(
            self.store,
            self.sources,
            publisher.enqueue,
            self.settings.directories,
            self.now,
            client_for,
        )

    def keyring(self) -> LiveKeyring:
        """Loaded on first use, so commands that touch no secret never create a key file."""
        with self._keyring_lock:
            if self._keyring is None:
                self._keyring = LiveKeyring(self.settings, self._load_keyring)
            return self._keyring

    def _load_keyring(self) -> Keyring:
        keyring = load_keyring(self.settings, lambda: set(self.redis.smembers(MASTER_KEY_IDS)))
        self.redis.sadd(MASTER_KEY_IDS, keyring.primary.key_id)
        return keyring

    def reload_keyring(self) -> LiveKeyring:
        keyring = self.keyring()
        keyring.reload()
        return keyring

    def check_ready(self) -> LiveKeyring:
        """What a long-running part checks before it starts: Redis answers, and the master
        keys open what is stored (else ConfigError). A worker without them would take messages
        and deliveries from healthy workers only to fail each one."""
        self.store.ping()
        return self.keyring()

    def now(self) -> datetime:
        return self.clock()

    def close(self) -> None:
        if "apple" in self.__dict__:
            self.apple.close()
        if "broker" in self.__dict__:
            self.broker.close()
        if "redis" in self.__dict__:
            self.redis.close()

"""The leader's rounds of the polling sources: every DIRECTORY_TICK_S it starts, in a small
pool, a round of each source whose round is due, each under the source's own lease (a Redis
lock, renewed by the same tick while the round runs), so one replica asks a directory at a
time, and a round lost with its process is taken up again once its lease lapses.

A round that ends (well or not) puts the source's next round an interval ahead; one stopped
(the replica stops leading, or shuts down) leaves it due for the next leader.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import structlog
from redis.exceptions import LockError

from worker.bootstrap import App
from worker.services.directory_checks import RoundStopped

log = structlog.get_logger(__name__)

#: Seconds between two looks at which sources are due (and two renewals of the leases held).
DIRECTORY_TICK_S = 5

#: Life of a round's lease in seconds: renewed every tick, so only a dead process lets it lapse.
ROUND_LEASE_S = 60

#: Rounds run at once by one replica.
ROUNDS_AT_ONCE = 4


class DirectoryRounds:
    def __init__(self, app: App, leading: Callable[[], bool]):
        self._app = app
        self._leading = leading
        self._pool = ThreadPoolExecutor(ROUNDS_AT_ONCE, thread_name_prefix="directory-round")
        self._running: dict[str, object] = {}  # source name -> its lease (redis Lock)
        #: Rounds running here whose lease lapsed: another replica may run them now.
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def tick(self) -> None:
        """Renew the leases of the rounds running here; start the rounds due."""
        with self._lock:
            running = dict(self._running)
        for name, lease in running.items():
            try:
                lease.reacquire()
            except LockError:  # lapsed: another replica may run it now; ours stops at once
                log.warning("directory_round_lease_lost", source=name)
                with self._lock:
                    self._lost.add(name)
        if not self._leading() or self._stopping:
            return
        for name in self._app.sources.due(self._app.now()):
            with self._lock:
                if name in self._running or len(self._running) >= ROUNDS_AT_ONCE:
                    continue
                lease = self._app.sources.lock(name, ROUND_LEASE_S)
                if not lease.acquire(blocking=False):
                    continue  # another replica runs it
                self._running[name] = lease
            self._pool.submit(self._round, name, lease)

    def stop(self) -> None:
        self._stopping = True
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _round(self, name: str, lease) -> None:
        source = None
        try:
            source = self._app.sources.get(name)
            next_round = self._app.sources.next_round(name)
            if source is None or not source.polls or next_round is None:
                return
            if next_round > self._app.now():
                return  # another replica ran it between our look and our lease
            report = self._app.directory_checker.run_round(
                source, between_batches=lambda: self._check(name)
            )
            log.info(
                "directory_round_done",
                source=name,
                watched=report.watched,
                events=report.events,
                error=str(report.error) if report.error else None,
                requests=report.requests,
                seconds=round(report.seconds, 2),
            )
        except RoundStopped:
            source = None  # stays due: the next leader (or the lease's new holder) takes it up
            log.info("directory_round_stopped", source=name)
        except Exception:
            log.exception("directory_round_failed", source=name)
        finally:
            if source is not None and source.polls:
                at = self._app.now() + timedelta(seconds=source.interval_s)
                self._app.sources.schedule(name, at)
            self._release(name, lease)

    def _check(self, name: str) -> None:
        if self._stopping or not self._leading() or name in self._lost:
            raise RoundStopped()

    def _release(self, name: str, lease) -> None:
        with self._lock:
            self._running.pop(name, None)
            self._lost.discard(name)
        with contextlib.suppress(LockError):  # lapsed meanwhile
            lease.release()

"""Running dramatiq workers: threads in this process, or several processes supervised.

`tokenwarden worker` starts TOKENWARDEN_WORKER_PROCESSES processes of
TOKENWARDEN_WORKER_THREADS threads each; a process that dies is started again. SIGINT or
SIGTERM stops them all after their current messages (what is not acknowledged is redelivered).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field

import dramatiq
import structlog

from worker.actors import declare_actors
from worker.bootstrap import App
from worker.broker import EVENTS_QUEUE
from worker.config import Settings
from worker.errors import TokenwardenError
from worker.logs import configure_logging
from worker.notify.dispatcher import DeliveryLoop
from worker.signals import StopSignals
from worker.timefmt import utc_now

log = structlog.get_logger(__name__)

#: Longest a stopping worker waits for messages in hand to finish, in ms.
STOP_TIMEOUT_MS = 30_000

#: Pause before starting again a worker process that died, in seconds (doubles, up to a minute).
RESTART_DELAY_S = 1.0


#: Threads per process that make delivery attempts. They are apart from the threads that
#: decide events, so receivers that hang (each up to the webhook timeout) never slow decisions.
DELIVERY_THREADS = 8


@dataclass
class WorkerThreads:
    """The dramatiq worker that decides events inside this process (what `tokenwarden run`
    uses), and the delivery loop with its own threads for notifications."""

    app: App
    threads: int
    name: str = "worker"
    _worker: dramatiq.Worker | None = field(default=None, repr=False)
    _deliveries: DeliveryLoop | None = field(default=None, repr=False)

    def start(self) -> None:
        broker = self.app.broker
        declare_actors(broker, self.app.handler, self.app.now)
        broker.emit_after("process_boot")
        self._worker = dramatiq.Worker(
            broker,
            queues={EVENTS_QUEUE},
            worker_threads=self.threads,
            worker_timeout=self.app.settings.poll_interval_ms,
        )
        self._worker.start()
        self._deliveries = DeliveryLoop(
            self.app.deliveries, self.app.deliverer, utc_now, DELIVERY_THREADS
        )
        self._deliveries.start()
        log.info("worker_started", threads=self.threads, delivery_threads=DELIVERY_THREADS)

    def stop(self) -> None:
        if self._deliveries is not None:
            self._deliveries.stop()
            self._deliveries = None
        if self._worker is not None:
            self._worker.stop(timeout=STOP_TIMEOUT_MS)
            self._worker = None
            log.info("worker_stopped")


def _worker_process(settings: Settings, threads: int) -> None:
    configure_logging(settings.log_level, settings.log_format)
    stop = StopSignals()
    app = App(settings)
    app.check_ready()  # the supervisor checked too, but the key file may have gone since
    worker = WorkerThreads(app, threads)
    worker.start()
    try:
        stop.wait()
    finally:
        worker.stop()
        app.close()


def run_worker_processes(settings: Settings, processes: int, threads: int) -> None:
    """Start `processes` worker processes and keep them running until SIGINT/SIGTERM.

    Each is `python -m worker.workerproc`, given the environment `settings` were read from
    (so it reads the same settings): a fresh interpreter that imports only what a worker needs
    (not the CLI), which keeps each process small.
    """
    stop = StopSignals()

    # glibc gives each thread its own malloc arena; two are plenty for this work and keep a
    # worker process's memory down (some 3 MB each). An operator's own setting wins.
    env = {"MALLOC_ARENA_MAX": "2", **settings.environment}

    def spawn() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "worker.workerproc", str(threads)], env=env)

    children = [spawn() for _ in range(processes)]
    delays = [RESTART_DELAY_S] * processes
    log.info(
        "workers_started", processes=processes, threads=threads, pids=[c.pid for c in children]
    )
    try:
        while not stop.wait(0.5):
            for index, child in enumerate(children):
                if child.poll() is None:
                    continue
                log.error(
                    "worker_process_died",
                    pid=child.pid,
                    exitcode=child.returncode,
                    restart_in_s=delays[index],
                )
                if stop.wait(delays[index]):
                    break
                delays[index] = min(delays[index] * 2, 60.0)
                children[index] = spawn()
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()  # SIGTERM: the child stops its worker cleanly
        deadline = time.monotonic() + STOP_TIMEOUT_MS / 1000 + 5
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        log.info("workers_stopped")


def main() -> None:
    """A worker process, as `run_worker_processes` starts it: `python -m worker.workerproc N`."""
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else None
    try:
        settings = Settings.from_env()
        _worker_process(settings, threads or settings.worker_threads)
    except TokenwardenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()

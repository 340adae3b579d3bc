"""`tokenwarden scheduler`: the periodic expiry scan, run by whichever replica holds the lease.

APScheduler runs three jobs: every few seconds the lease is taken or renewed; every
TOKENWARDEN_SCAN_INTERVAL seconds (and at start-up, and whenever this replica becomes the
leader) the leader scans; every APPLE_TICK seconds the leader asks Apple about the tokens
whose check is due (each token once per TOKENWARDEN_APPLE_CHECK_INTERVAL, spread over it); and
every DIRECTORY_TICK_S it starts the rounds of the polling sources due (scheduler/directories.py).
Scans and checks are idempotent, so two overlapping never warn twice.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from scheduler.directories import DIRECTORY_TICK_S, DirectoryRounds
from scheduler.scan import Scanner
from worker.apple.verdicts import Verdict
from worker.bootstrap import App
from worker.store.lease import scheduler_lease

log = structlog.get_logger(__name__)

#: How often each replica takes or renews the lease, as a share of the lease's lifetime: a
#: leader renews three times a lease, so one slow renewal never lets a second leader in.
RENEW_SHARE = 1 / 3

#: Seconds between two looks at the Apple check schedule, at most (and a twentieth of the
#: interval when that is shorter): a check is due at most this late.
APPLE_TICK_S = 30


def apple_tick_s(interval_s: int) -> float:
    return max(1.0, min(APPLE_TICK_S, interval_s / 20))


class SchedulerService:
    name = "scheduler"

    def __init__(self, app: App):
        self.app = app
        self.settings = app.settings.scheduler
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.lease = scheduler_lease(app.redis, self.owner, self.settings.lease_ttl_s * 1000)
        self.scanner = Scanner(app.store, self.settings.thresholds)
        self.leader = False
        self._jobs = BackgroundScheduler(timezone=UTC)
        self.directories = DirectoryRounds(app, lambda: self.leader)

    def start(self) -> None:
        self._jobs.add_job(
            self._keep_lease,
            "interval",
            seconds=self.settings.lease_ttl_s * RENEW_SHARE,
            id="lease",
            max_instances=1,
            coalesce=True,
        )
        self._jobs.add_job(
            self.scan_if_leader,
            "interval",
            seconds=self.settings.scan_interval_s,
            id="scan",
            max_instances=1,
            coalesce=True,
        )
        if self.app.settings.apple.check_interval_s:
            self._jobs.add_job(
                self.check_apple_if_leader,
                "interval",
                seconds=apple_tick_s(self.app.settings.apple.check_interval_s),
                id="apple",
                max_instances=1,
                coalesce=True,
            )
        self._jobs.add_job(
            self.directories.tick,
            "interval",
            seconds=DIRECTORY_TICK_S,
            id="directories",
            max_instances=1,
            coalesce=True,
        )
        self._jobs.start()
        self._keep_lease()  # at start-up: take the lease if free, and scan if we got it
        log.info(
            "scheduler_started",
            owner=self.owner,
            leader=self.leader,
            thresholds=list(self.settings.thresholds),
            scan_interval_s=self.settings.scan_interval_s,
            apple_check_interval_s=self.app.settings.apple.check_interval_s,
        )

    def stop(self) -> None:
        # A round of checks with Apple stops between batches once this replica no longer
        # leads: without this, shutting down waits for every token due.
        leading, self.leader = self.leader, False
        # The rounds end at their next batch; the ticks keep renewing their leases meanwhile.
        self.directories.stop()
        self._jobs.shutdown(wait=True)
        if leading:
            self.lease.release()  # a clean stop hands over at once, not after the TTL
        log.info("scheduler_stopped", owner=self.owner)

    def _keep_lease(self) -> None:
        try:
            holding = self.lease.hold()
        except Exception as exc:  # Redis down: we cannot know, so we do not act
            log.warning("scheduler_lease_unavailable", error=str(exc))
            holding = False
        if holding and not self.leader:
            log.info("scheduler_leader", owner=self.owner)
            self.leader = True
            self._jobs.modify_job("scan", next_run_time=datetime.now(UTC))  # catch up at once
            if self.app.settings.apple.check_interval_s:
                self._jobs.modify_job("apple", next_run_time=datetime.now(UTC))
            self._jobs.modify_job("directories", next_run_time=datetime.now(UTC))
        elif self.leader and not holding:
            log.warning("scheduler_lease_lost", owner=self.owner, holder=self.lease.holder())
            self.leader = False

    def scan_if_leader(self) -> None:
        if not self.leader:
            return
        started = time.perf_counter()
        try:
            report = self.scanner.scan(self.app.now(), still_leader=lambda: self.leader)
            self.app.estate_metrics.record_scan(self.app.now())
        except Exception:
            log.exception("scan_failed")
            return
        log.info(
            "scan_done",
            examined=report.examined,
            warnings=len(report.warnings),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    def check_apple_if_leader(self) -> None:
        """Ask Apple about the tokens due (filling the schedule first with tokens installed
        before there was one), while this replica leads."""
        if not self.leader:
            return
        started = time.perf_counter()
        checker = self.app.apple_checker
        try:
            self.app.store.apple.backfill(self.app.now(), self.app.settings.apple.check_interval_s)
            checker.reconcile_interval(self.app.now())
            report = checker.run_due(self.app.now, still_leader=lambda: self.leader)
        except Exception:
            log.exception("apple_checks_failed")
            return
        if report.claimed:
            log.info(
                "apple_checks_done",
                checked=report.checked,
                skipped=report.skipped,
                rejected=report.count(Verdict.REJECTED),
                terms_not_accepted=report.count(Verdict.TERMS_NOT_ACCEPTED),
                unreachable=report.count(Verdict.UNREACHABLE),
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )


def component(app: App) -> SchedulerService:
    """What `tokenwarden run` starts beside the worker (the `tokenwarden.components` hook)."""
    return SchedulerService(app)

"""One expiry scan: every token whose next check is due gets its warning, if one is due, and
its next check (decided by scheduler/expiry.py, pure). Decisions are applied by the store as
the actors' are.

Cost grows with the tokens due, not with all tokens: the scan reads only the due head of the
next-check index (a sorted set) and the facts of those tokens, then one pipelined round trip
applies the batch's decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scheduler.expiry import Warning, decide_scan
from worker.store.protocol import Store

#: Tokens read and decided per round trip.
BATCH = 1000

#: Rounds of a scan at most (a batch whose decisions all lost races is read again).
MAX_ROUNDS = 10_000


@dataclass
class ScanReport:
    now: datetime
    dry_run: bool
    examined: int = 0
    warnings: list[Warning] = field(default_factory=list)


class Scanner:
    def __init__(self, store: Store, thresholds: Sequence[int], batch: int = BATCH):
        self._store = store
        self._thresholds = tuple(thresholds)
        self._batch = batch

    def scan(
        self,
        now: datetime,
        *,
        dry_run: bool = False,
        still_leader: Callable[[], bool] = lambda: True,
    ) -> ScanReport:
        """Warn about every token due by `now`. `still_leader` is asked between rounds: a
        scheduler that lost its lease stops (its decisions are guarded anyway)."""
        report = ScanReport(now=now, dry_run=dry_run)
        if not dry_run:
            self.reconcile_thresholds()
        offset = 0
        for _ in range(MAX_ROUNDS):
            if not still_leader():
                break
            read, tokens = self._store.tokens_due_for_check(
                now, self._batch, offset, tidy=not dry_run
            )
            if read == 0:
                break
            decided = [
                decide_scan(facts, now, self._thresholds)
                for facts in self._store.scan_facts(tokens)
            ]
            report.examined += len(tokens)
            if dry_run:
                report.warnings += [w for _, w in decided if w is not None]
                offset += read  # nothing moves in a dry run: page through
                if read < self._batch:
                    break
                continue
            applied = self._store.events.apply_many([decision for decision, _ in decided])
            report.warnings += [
                w
                for (_, w), a in zip(decided, applied, strict=True)
                if w is not None and a.outcome == "applied"
            ]
            # Decisions that lost a race leave their token due: the next round reads it afresh.
            if read < self._batch and all(a.outcome != "retry" for a in applied):
                break
        return report

    def reconcile_thresholds(self) -> None:
        """After the thresholds changed, no token may be checked later than the new largest
        threshold says (a next check computed under a smaller list would warn late)."""
        wanted = ",".join(str(t) for t in self._thresholds)
        recorded = self._store.scheduler_thresholds()
        if recorded == wanted:
            return
        if recorded is not None:  # the first scan ever has nothing computed to correct
            largest = timedelta(days=max(self._thresholds))
            self._store.bring_checks_forward(lambda token: token.expires_at - largest)
        self._store.set_scheduler_thresholds(wanted)

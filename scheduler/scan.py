"""One expiry scan: every token whose next check is due gets its warning, if one is due, and
its next check (decided by scheduler/expiry.py, pure). Decisions are applied by the store as
the actors' are.

Cost grows with the tokens due, not with all tokens: the scan reads only the due head of the
next-check index (a sorted set) and the facts of those tokens, then one pipelined round trip
applies the batch's decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from scheduler.expiry import Warning, decide_scan
from worker.registry import key_offer
from worker.rules import policy
from worker.rules.decision import Decision
from worker.rules.facts import ScanFacts
from worker.rules.policy import DEFAULT_RENEW_BEFORE_DAYS, EMPTY_LAYER
from worker.store.protocol import Store

#: Tokens read and decided per round trip.
BATCH = 1000

#: Rounds of a scan at most (a batch whose decisions all lost races is read again).
MAX_ROUNDS = 10_000

#: New key pairs one scan makes at most, for renewals whose policy rotates keys (each takes
#: tens of milliseconds of CPU): the renewals beyond wait a few minutes for the next scan, so
#: turning rotation on across a large estate spreads the work instead of stalling the scan.
MAX_KEYS_PER_SCAN = 200

#: Written beside the thresholds: the next checks count renewal moments too (scans before
#: rotation policies computed them from the thresholds alone).
CHECKS_MARK = "renewal"


@dataclass
class ScanReport:
    now: datetime
    dry_run: bool
    examined: int = 0
    warnings: list[Warning] = field(default_factory=list)
    #: Renewals opened (a dry run: that would open), and the new key pairs staged with them.
    renewals: int = 0
    keys_staged: int = 0

    def count(self, decision: Decision) -> None:
        self.renewals += len(decision.renewals) or (1 if decision.keys_wanted else 0)
        self.keys_staged += len(decision.staged_keys)


class Scanner:
    def __init__(
        self,
        store: Store,
        thresholds: Sequence[int],
        batch: int = BATCH,
        max_keys: int = MAX_KEYS_PER_SCAN,
    ):
        self._store = store
        self._thresholds = tuple(thresholds)
        self._batch = batch
        self._max_keys = max_keys

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
            reconcile_policies(self._store, now)
        keys = None if dry_run else KeyBudget(self._max_keys)
        offset = 0
        for _ in range(MAX_ROUNDS):
            if not still_leader():
                break
            read, tokens = self._store.tokens_due_for_check(
                now, self._batch, offset, tidy=not dry_run
            )
            if read == 0:
                break
            decided = [self._decide(facts, now, keys) for facts in self._store.scan_facts(tokens)]
            report.examined += len(tokens)
            if dry_run:
                report.warnings += [w for _, w in decided if w is not None]
                for decision, _ in decided:
                    report.count(decision)
                offset += read  # nothing moves in a dry run: page through
                if read < self._batch:
                    break
                continue
            applied = self._store.events.apply_many([decision for decision, _ in decided])
            for (decision, warning), a in zip(decided, applied, strict=True):
                if a.outcome == "applied":
                    report.warnings += [warning] if warning is not None else []
                    report.count(decision)
            # Decisions that lost a race leave their token due: the next round reads it afresh.
            if read < self._batch and all(a.outcome != "retry" for a in applied):
                break
        return report

    def _decide(
        self, facts: ScanFacts, now: datetime, keys: KeyBudget | None
    ) -> tuple[Decision, Warning | None]:
        """decide_scan, and again with a new key pair when the policy wants one: for a
        renewal while the scan's budget of new keys lasts (the rest wait); for an expired
        token always (its warning and replacement go out now, once). None: a dry run."""
        decided = decide_scan(facts, now, self._thresholds)
        if keys is None or facts.server is None or not decided[0].keys_wanted:
            return decided
        if facts.token.expires_at > now and not keys.take():
            return decided
        offer = key_offer(self._store, facts.server, now)
        return decide_scan(replace(facts, key_offer=offer), now, self._thresholds)

    def reconcile_thresholds(self) -> None:
        """After the thresholds changed, no token may be checked later than the new largest
        threshold says (a next check computed under a smaller list would warn late)."""
        wanted = ",".join(str(t) for t in self._thresholds) + f";{CHECKS_MARK}"
        recorded = self._store.scheduler_thresholds()
        if recorded == wanted:
            return
        if recorded is not None:  # the first scan ever has nothing computed to correct
            days = max(*self._thresholds, DEFAULT_RENEW_BEFORE_DAYS)
            largest = timedelta(days=days)
            self._store.bring_checks_forward(lambda token: token.expires_at - largest)
        self._store.set_scheduler_thresholds(wanted)


class KeyBudget:
    def __init__(self, left: int):
        self.left = left

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def reconcile_policies(store: Store, now: datetime) -> int:
    """After policies changed, no token may be checked later than its renewal moment under
    them: a server's token is brought forward to it; for an organization's or the global
    layer, every token to the earliest renewal moment the layer can set (a check too early
    only decides nothing). Returns how many checks moved."""
    changes = store.policies.changes()
    if not changes:
        return 0
    moved = 0
    widest = 0
    for scope in changes:
        kind, _, ident = scope.partition(":")
        if kind == policy.SERVER:
            moved += _bring_server_forward(store, ident)
        else:
            widest = max(widest, _widest_renewal(store, scope))
    if widest:
        ahead = timedelta(days=widest)
        moved += store.bring_checks_forward(lambda token: token.expires_at - ahead)
    store.policies.forget_changes(changes)
    return moved


def _bring_server_forward(store: Store, server_id: str) -> int:
    server = store.get_server(server_id)
    token = store.get_token(server.token_id) if server and server.token_id else None
    if server is None or token is None:
        return 0
    rule = store.policies.effective_for([server])[server.id]
    store.bring_check_forward(token.id, rule.renewal_at(token.expires_at))
    return 1


def _widest_renewal(store: Store, scope: str) -> int:
    """The renew-before in force for a server with no layer of its own under `scope`."""
    default = store.policies.layer(policy.GLOBAL)[0]
    org = store.policies.layer(scope)[0] if scope != policy.GLOBAL else EMPTY_LAYER
    return policy.effective(EMPTY_LAYER, org, default).renew_before_days

"""Asking Apple about tokens: on demand (`tokens check`) and, by the scheduler's leader, every
token once an interval, spread over it, a few at once.

Each answer is decided by worker/rules/apple.py and applied as a decision (guarded, so a
check that lost a race is decided again on fresh facts, and an alarm is raised once).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from worker.apple.verdicts import AppleAccount, CheckResult, Verdict
from worker.config import DEFAULT_APPLE_CHECK_INTERVAL_S, AppleSettings
from worker.crypto.payload import TokenCredentials
from worker.errors import NotFound
from worker.names import user_key
from worker.records import Token
from worker.rules.apple import decide_apple_check
from worker.store.protocol import Store

log = structlog.get_logger(__name__)

#: Times an answer whose decision lost a race is decided again on fresh facts.
DECIDE_ATTEMPTS = 5

#: Tokens claimed per round of scheduled checks, per check allowed at once.
CLAIM_PER_WORKER = 8

#: Longest a claimed check may take before another round may take the token again.
CLAIM_LEASE = timedelta(minutes=10)

#: Share of the interval by which each next check comes early, at random: tokens installed
#: together drift apart instead of being asked about together for ever.
RESCHEDULE_JITTER = 0.1

#: A token Apple confirmed this recently (a share of the interval) is not asked about again
#: when it comes due (say, it was installed with a check, and then came due at once); one
#: installed while Apple could not be reached is asked about at the next round.
FRESH_SHARE = 0.5


class AppleAsker(Protocol):
    def check(self, credentials: TokenCredentials) -> CheckResult: ...

    def account(self, credentials: TokenCredentials) -> AppleAccount: ...


@dataclass(frozen=True)
class TokenVerdict:
    token: Token
    result: CheckResult
    #: Whether the answer's decision was applied (False: the token changed meanwhile).
    applied: bool


@dataclass
class RoundReport:
    """What a round of scheduled checks did: counts only (a round may check a million)."""

    claimed: int = 0
    skipped: int = 0
    verdicts: Counter[Verdict] = field(default_factory=Counter)
    #: Apple's codes (or what went wrong) of the checks not accepted: a few distinct values.
    codes: Counter[str] = field(default_factory=Counter)
    #: Checks whose answer was not recorded (the token stopped being current meanwhile).
    not_applied: int = 0
    #: The round stopped early: a whole batch found Apple unreachable.
    stopped_unreachable: bool = False

    def add(self, verdicts: list[TokenVerdict]) -> None:
        for verdict in verdicts:
            self.verdicts[verdict.result.verdict] += 1
            if verdict.result.verdict is not Verdict.ACCEPTED:
                self.codes[verdict.result.code or "-"] += 1
            self.not_applied += not verdict.applied

    @property
    def checked(self) -> int:
        return self.verdicts.total()

    def count(self, verdict: Verdict) -> int:
        return self.verdicts[verdict]


def token_credentials(store: Store, token: Token) -> TokenCredentials:
    """A current token's credentials, opened for the one request that needs them."""
    return TokenCredentials(**store.open_credentials(token), access_token_expiry=token.expires_at)


class AppleChecker:
    def __init__(
        self,
        store: Store,
        apple: AppleAsker,
        settings: AppleSettings,
        *,
        jitter: Callable[[], float] = random.random,
    ):
        self._store = store
        self._apple = apple
        self._settings = settings
        self._jitter = jitter

    def check_tokens(
        self, tokens: Iterable[Token], now: Callable[[], datetime]
    ) -> list[TokenVerdict]:
        """Ask Apple about each token, at most `concurrency` at once, and apply each answer."""
        tokens = list(tokens)
        if not tokens:
            return []
        workers = min(self._settings.concurrency, len(tokens))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="apple-check") as pool:
            return list(pool.map(lambda token: self._check_one(token, now), tokens))

    def _check_one(self, token: Token, now: Callable[[], datetime]) -> TokenVerdict:
        if token.expires_at <= now():
            # Dead by age, which the expiry scan has said already: asking Apple would only
            # raise a second alarm (token_expired) for it.
            expired = CheckResult(Verdict.REJECTED, code="expired", detail="the token expired")
            return TokenVerdict(token, expired, False)
        try:
            credentials = token_credentials(self._store, token)
            result = self._apple.check(credentials)
        except NotFound:  # superseded between the read and now: nothing to ask about
            return TokenVerdict(token, CheckResult(Verdict.MALFORMED, code="gone"), False)
        except Exception as exc:  # one token's surprise must not end the round for the others
            log.exception("apple_check_failed", token_id=token.id, error=type(exc).__name__)
            result = CheckResult(Verdict.MALFORMED, code="error", detail=type(exc).__name__)
        applied = self.record(token, result, now())
        # A million tokens are checked four times a day: only news is worth an info line.
        level = log.debug if result.verdict is Verdict.ACCEPTED else log.info
        level(
            "apple_checked",
            token_id=token.id,
            verdict=result.verdict.value,
            code=result.code,
            applied=applied,
        )
        return TokenVerdict(token, result, applied)

    def record(self, token: Token, result: CheckResult, now: datetime) -> bool:
        """Decide and apply what `result` means for the token; False when the token is gone
        or stopped being current."""
        token_id, named = token.id, _named(token, result)
        for _ in range(DECIDE_ATTEMPTS):
            facts = self._store.apple.facts([token_id], named)
            if not facts:
                return False
            decision = decide_apple_check(facts[0], result, now)
            if not decision.apple:
                return False
            outcome = self._store.events.apply(decision).outcome
            if outcome != "retry":
                return outcome == "applied"
        log.warning("apple_check_not_recorded", token_id=token_id, reason="kept changing")
        return False

    # ---- the scheduled rounds ----------------------------------------------------------------

    def run_due(
        self, now: Callable[[], datetime], still_leader: Callable[[], bool] = lambda: True
    ) -> RoundReport:
        """Check every token due by now, batch after batch, while this replica leads."""
        report = RoundReport()
        batch = self._settings.concurrency * CLAIM_PER_WORKER
        started = now()  # due by the start: what a round puts back (later) is the next round's
        while still_leader():
            moment = now()
            claimed = self._store.apple.claim_due(started, batch, moment + CLAIM_LEASE)
            if not claimed:
                break
            report.claimed += len(claimed)
            due = self._due_tokens(claimed, moment, report)
            verdicts = self.check_tokens(due, now)
            report.add(verdicts)
            self._store.apple.reschedule({t.id: self._next_check(now()) for t in due})
            if verdicts and all(v.result.verdict is Verdict.UNREACHABLE for v in verdicts):
                # Apple is down (or unreachable from here): every check would wait out its
                # retries. The next round tries again; the tokens not yet asked stay due.
                log.warning("apple_unreachable_round_stopped", checked=len(verdicts))
                report.stopped_unreachable = True
                break
        return report

    def reconcile_interval(self, now: datetime) -> int:
        """After the interval was shortened, no token waits longer than the new one for its
        check (a schedule made under a longer one would leave tokens unconfirmed, and shown
        as unknown, for hours). Returns how many checks moved."""
        wanted = self._settings.check_interval_s
        if not wanted or self._store.apple.interval() == wanted:
            return 0
        moved = self._store.apple.bring_forward(now, wanted)
        self._store.apple.set_interval(wanted)
        if moved:
            log.info("apple_checks_brought_forward", moved=moved, interval_s=wanted)
        return moved

    def _due_tokens(self, claimed: list[str], now: datetime, report: RoundReport) -> list[Token]:
        """The claimed tokens to ask about: current ones not checked a moment ago (those are
        put back an interval after their check; the others leave the schedule)."""
        current = self._store.apple.current_tokens(claimed)
        live = [t for t in current if t.expires_at > now]  # expired: the scan said so already
        self._store.apple.unschedule(sorted(set(claimed) - {t.id for t in live}))
        fresh = {
            t.id: t.apple.confirmed_at + self._interval
            for t in live
            if t.apple.confirmed_at and now - t.apple.confirmed_at < self._interval * FRESH_SHARE
        }
        self._store.apple.reschedule(fresh)
        report.skipped += len(current) - len(live) + len(fresh)
        return [t for t in live if t.id not in fresh]

    def _next_check(self, now: datetime) -> datetime:
        return now + self._interval * (1 - RESCHEDULE_JITTER * self._jitter())

    @property
    def _interval(self) -> timedelta:
        """The check interval (the default when scheduled checks are off and a round is run
        by hand)."""
        seconds = self._settings.check_interval_s or DEFAULT_APPLE_CHECK_INTERVAL_S
        return timedelta(seconds=seconds)


def _named(token: Token, result: CheckResult) -> dict[str, str]:
    """The user record to read besides: the one Apple names as the downloader, when that is
    not the one recorded (most checks: nothing more to read)."""
    admin = result.account.admin_id if result.account else None
    if not admin or user_key(admin) == user_key(token.downloaded_by):
        return {}
    return {token.id: user_key(admin)}

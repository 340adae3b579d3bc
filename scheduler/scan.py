"""One expiry scan: every token whose next check is due gets its warning, if one is due, and
its next check. Decisions go through the same atomic plans as the actors'.

Cost grows with the tokens due, not with all tokens: the scan reads only the due head of the
next-check index (a sorted set), then one pipelined round trip applies the batch's plans.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from events import catalog
from events.cloudevent import outgoing_event, stable_id
from scheduler.thresholds import EXPIRED, days_left, is_more_urgent, level_at, next_check_at
from worker import outgoing
from worker.records import TOKEN_CURRENT, Server, Token, to_ms
from worker.rules.replacement import Cause, ReplacementNeeded
from worker.store import keys as k
from worker.store.event_store import Guard, OpenReplacement, Plan, Write
from worker.store.redis_store import RedisStore
from worker.timefmt import format_rfc3339

#: Tokens read and decided per round trip.
BATCH = 1000

#: Rounds of a scan at most (a batch whose plans all lost races is read again).
MAX_ROUNDS = 10_000


@dataclass(frozen=True)
class Warning:
    server: str
    org: str
    token_id: str
    type: str
    level: int
    days_left: int
    expires_at: str
    downloaded_by: str

    def describe(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "org": self.org or None,
            "token_id": self.token_id,
            "type": self.type,
            "threshold_days": self.level or None,
            "days_left": self.days_left,
            "expires_at": self.expires_at,
            "downloaded_by": self.downloaded_by,
        }


@dataclass
class ScanReport:
    now: datetime
    dry_run: bool
    examined: int = 0
    warnings: list[Warning] = field(default_factory=list)


class Scanner:
    def __init__(self, store: RedisStore, thresholds: Sequence[int], batch: int = BATCH):
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
        scheduler that lost its lease stops (its plans are guarded anyway)."""
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
            servers = self._store.servers_by_id({t.server_id for t in tokens})
            decided = [self.decide(t, servers.get(t.server_id), now) for t in tokens]
            report.examined += len(tokens)
            if dry_run:
                report.warnings += [w for _, w in decided if w is not None]
                offset += read  # nothing moves in a dry run: page through
                if read < self._batch:
                    break
                continue
            applied = self._store.events.apply_many([plan for plan, _ in decided])
            report.warnings += [
                w
                for (_, w), a in zip(decided, applied, strict=True)
                if w is not None and a.outcome == "applied"
            ]
            # Plans that lost a race leave their token due: the next round reads it afresh.
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

    def decide(
        self, token: Token, server: Server | None, now: datetime
    ) -> tuple[Plan, Warning | None]:
        """The plan for one due token, and the warning it sends (if any)."""
        plan = Plan(now=now)
        if token.status != TOKEN_CURRENT or server is None:
            plan.writes.append(Write("zrem", k.TOKENS_NEXT_CHECK, member=token.id))
            return plan, None
        level = level_at(token.expires_at, now, self._thresholds)
        following = next_check_at(token.expires_at, level, self._thresholds)
        if following is None:
            plan.writes.append(Write("zrem", k.TOKENS_NEXT_CHECK, member=token.id))
        else:
            plan.writes.append(
                Write("zadd", k.TOKENS_NEXT_CHECK, member=token.id, score=to_ms(following))
            )
        if not is_more_urgent(level, token.warned):
            return plan, None
        assert level is not None
        # Sent once per (token, level), even by two schedulers at once: the guard.
        plan.guards += [
            Guard(k.token(token.id), "status", TOKEN_CURRENT),
            Guard(k.token(token.id), "warned", "" if token.warned is None else str(token.warned)),
        ]
        plan.writes.append(Write("hset", k.token(token.id), field="warned", value=str(level)))
        warning, event = self._warning(token, server, level, now)
        plan.emit.append(event)
        plan.audit_kind, plan.audit_event = "scan", warning.describe()
        if token.warned is None or level == EXPIRED:
            # The first warning, and expiry, are reasons the token must be replaced.
            crossed = token.expires_at - timedelta(days=level)
            cause = Cause(
                type=event["type"], id=event["id"], source=catalog.SOURCE_SCHEDULER, time=crossed
            )
            need = ReplacementNeeded(token=token, cause=cause)
            plan.open.append(
                OpenReplacement(
                    token_id=token.id,
                    server_id=server.id,
                    server_name=server.name,
                    reason=outgoing.reason(need),
                    outgoing=outgoing.replacement_required(need, server, now),
                )
            )
        return plan, warning

    def _warning(
        self, token: Token, server: Server, level: int, now: datetime
    ) -> tuple[Warning, dict[str, Any]]:
        event_type = catalog.EXPIRED if level == EXPIRED else catalog.EXPIRY_APPROACHING
        warning = Warning(
            server=server.name,
            org=server.org,
            token_id=token.id,
            type=event_type,
            level=level,
            days_left=days_left(token.expires_at, now),
            expires_at=format_rfc3339(token.expires_at),
            downloaded_by=token.downloaded_by,
        )
        data = {
            "server": server.name,
            "org": server.org or None,
            "server_id": server.id,
            "token_id": token.id,
            "expires_at": warning.expires_at,
            "days_left": warning.days_left,
            "threshold_days": level or None,
            "downloaded_by": token.downloaded_by,
            "downloaded_at": format_rfc3339(token.downloaded_at),
        }
        event = outgoing_event(
            event_type,
            event_id=stable_id(event_type, token.id, str(level)),
            subject=server.name,
            time=now,
            data=data,
            source=catalog.SOURCE_SCHEDULER,
        )
        return warning, event

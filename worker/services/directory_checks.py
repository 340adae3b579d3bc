"""Asking a directory about the people who downloaded current tokens: one round of a polling
source, on demand (`sources check`) or by the scheduler when it is due.

A round reads the source's watched users a batch at a time (worker/store/watched.py), asks the
directory about each batch, judges each answer (worker/rules/directory.py) and hands what
changed to the workers as incoming events, decided like any other. How the round went is
recorded for `sources list` and `status`; a source that fails is reported once
(tokenwarden.source.failing), and once it answers again, recovered.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from worker.config import DirectorySettings
from worker.directories.base import DirectoryClient, WatchedLogin
from worker.errors import DirectoryError, DirectoryUnreachable, NotFound, TokenwardenError
from worker.intake.sources import Source
from worker.rules import directory as rules
from worker.rules.directory import Finding, WatchedUser
from worker.services.source_reports import SourceReports
from worker.store.protocol import Store
from worker.store.source_store import SourceStore

log = structlog.get_logger(__name__)

#: Watched users asked about per step of a round (the step's events are sent before the next).
ROUND_BATCH = 200

#: A round whose directory says "no such user" for more than this share of the users it
#: answered about sends none of those departures (unless a person confirms them with `sources
#: check --confirm-departures`): a wrong --domain or --map-domain, or a directory emptied by
#: mistake, looks like that, not real departures.
SUSPICIOUS_NOT_FOUND_SHARE = 0.5

#: Findings a report keeps for `sources check` (the counts are always whole).
MAX_KEPT_FINDINGS = 100_000

ClientFactory = Callable[
    [Source, dict[str, Any], DirectorySettings, Callable[[], datetime]], DirectoryClient
]


class Misconfigured(DirectoryError):
    """The directory answered, but as if asked about the wrong people."""


class RoundStopped(TokenwardenError):
    """Raised by `between_batches` to end a round early (the scheduler stops leading, shuts
    down, or lost the round's lease): nothing is recorded, and the round stays due."""


@dataclass
class RoundReport:
    source: str
    kind: str
    counts: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    events: int = 0
    #: Departures of users the directory said it does not know, not sent (see Misconfigured).
    held_back: int = 0
    requests: int = 0
    seconds: float = 0.0
    error: DirectoryError | None = None
    #: Why the first user not observed was not (kept even when findings are not).
    first_unobserved: str | None = None

    @property
    def watched(self) -> int:
        return self.counts.total()

    @property
    def unreachable(self) -> bool:
        return isinstance(self.error, DirectoryUnreachable)

    @property
    def changed(self) -> bool:
        return self.events > 0

    def add(self, finding: Finding, keep: bool) -> None:
        self.counts[finding.outcome] += 1
        if finding.outcome == rules.UNOBSERVED and self.first_unobserved is None:
            self.first_unobserved = finding.detail
        if keep and len(self.findings) < MAX_KEPT_FINDINGS:
            self.findings.append(finding)


class DirectoryChecker:
    def __init__(
        self,
        store: Store,
        sources: SourceStore,
        publish: Callable[[list], int],
        settings: DirectorySettings,
        now: Callable[[], datetime],
        client_factory: ClientFactory,
    ):
        self._store = store
        self._sources = sources
        self._publish = publish
        self._settings = settings
        self._now = now
        self._client_factory = client_factory
        self._reports = SourceReports(store, sources)

    def run_round(
        self,
        source: Source,
        *,
        keep_findings: bool = False,
        between_batches: Callable[[], None] = lambda: None,
        confirm_departures: bool = False,
    ) -> RoundReport:
        """One round over the source's watched users; `between_batches` runs after each batch
        (the scheduler stops a round there). `confirm_departures`: a person confirmed that the
        people the directory does not know have left: send their departures however many."""
        started, now = time.monotonic(), self._now()
        report = RoundReport(source.name, source.kind)
        self._store.watched.backfill()
        try:
            credentials = self._sources.open_credentials(source.name)
            client = self._client_factory(source, credentials, self._settings, self._now)
        except NotFound:  # removed meanwhile
            report.error = DirectoryError(f"source {source.name!r} was removed")
            return report
        held: list[Finding] = []
        try:
            self._ask(client, source, report, held, keep_findings, between_batches)
        except RoundStopped:
            raise
        except DirectoryError as exc:
            report.error = exc
        except Exception as exc:  # a client's surprise is a failed round, reported as one
            log.exception("directory_round_error", source=source.name)
            report.error = DirectoryError(
                f"the round failed unexpectedly ({type(exc).__name__}); the log says where"
            )
        finally:
            report.requests = client.requests_made
            client.close()
        self._settle(report, held, confirm_departures)
        report.seconds = time.monotonic() - started
        if report.watched or report.error:
            self._reports.conclude(source, report.error, _summary(report), now)
        else:  # nobody to ask about: the credential was not even tried
            self._sources.record_idle_round(source.name, now)
        return report

    def _ask(
        self,
        client: DirectoryClient,
        source: Source,
        report: RoundReport,
        held: list[Finding],
        keep: bool,
        between_batches: Callable[[], None],
    ) -> None:
        uri = rules.source_uri(source.name)
        for users in self._store.watched.users(source.watched_domains(), ROUND_BATCH):
            answers = client.observe([_login(source, user) for user in users])
            now = self._now()
            findings = [
                rules.judge(user, answer, source=uri, now=now)
                for user, answer in zip(users, answers, strict=True)
            ]
            for finding in findings:
                report.add(finding, keep)
            held += [f for f in findings if f.outcome == rules.NOT_FOUND and f.changed]
            report.events += self._send([f for f in findings if f.outcome != rules.NOT_FOUND])
            between_batches()

    def _settle(self, report: RoundReport, held: list[Finding], confirmed: bool) -> None:
        """Send the not-found departures held back, unless the round looks misconfigured;
        a round that observed no one at all is an unreachable directory."""
        observed = report.watched - report.counts[rules.UNOBSERVED]
        if report.error is None and report.watched and not observed:
            why = report.first_unobserved or "no answer"
            report.error = DirectoryUnreachable(f"the directory answered about no one ({why})")
        not_found = report.counts[rules.NOT_FOUND]
        if held and not confirmed and not_found > SUSPICIOUS_NOT_FOUND_SHARE * observed:
            report.held_back = len(held)
            report.error = report.error or Misconfigured(
                f"{not_found} of the {observed} watched users the directory answered about "
                "are not found in it; no departure was sent. Check the source's --domain or "
                "--map-domain and that it asks the right directory; if they did leave, "
                f"`tokenwarden sources check {report.source} --confirm-departures` sends them"
            )
            return
        if report.error is None:  # a whole round: its "no such user" answers are believed
            report.events += self._send(held)

    def _send(self, findings: list[Finding]) -> int:
        events = [f.event for f in findings if f.event is not None]
        return self._publish(events) if events else 0


def _login(source: Source, user: WatchedUser) -> WatchedLogin:
    return WatchedLogin(source.directory_login(user.user), user.since)


def _summary(report: RoundReport) -> dict[str, int]:
    return {**report.counts, "events": report.events, "requests": report.requests}

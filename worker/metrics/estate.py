"""The estate's metrics, read from Redis at scrape time so every replica of `serve` reports
the same truth: `estate_families` turns what the store read (records.py) into Prometheus metric
families (pure: facts and `now` in, families out); EstateCollector reads and calls it.

Per-token series (labelled `server`, `org`) only while the estate holds at most `token_series`
current tokens (TOKENWARDEN_METRICS_TOKEN_SERIES; 0: never); counts by days left always.
A timestamp of the last good thing (a scan, a source's success) is 0 when it never happened;
one of a bad thing (a replacement open, terms waiting) is there only while it lasts.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from events import catalog
from worker.apple.verdicts import still_refused
from worker.metrics.records import EstateFacts, TokenFacts
from worker.records import to_ms

#: The days-left buckets of `tokenwarden_tokens`: (label, most days left), in order.
DAYS_LEFT_BUCKETS = (("0-7", 7), ("8-30", 30), ("31-60", 60), ("61-120", 120), ("121+", None))
EXPIRED = "expired"

#: Delivery statuses counted (each present, 0 included).
DELIVERY_STATUSES = ("pending", "parked", "failed")

#: Label values allowed for reasons and urgencies (anything else counts as "other"): labels
#: stay few whatever a stored record says.
REASONS = frozenset(t.rsplit(".", 1)[-1] for t in catalog.URGENCY_BY_TYPE)
URGENCIES = frozenset(u.name for u in catalog.URGENCY_BY_TYPE.values())
OTHER = "other"

_DAY_MS = 86_400_000
_TOKEN_LABELS = ("server", "org")


def days_left_bucket(expires_ms: int, now_ms: int) -> str:
    """The bucket of a token expiring at `expires_ms` (whole days left, rounded down)."""
    if now_ms >= expires_ms:
        return EXPIRED
    days = (expires_ms - now_ms) // _DAY_MS
    return next(label for label, most in DAYS_LEFT_BUCKETS if most is None or days <= most)


def reason_label(event_type: str) -> str:
    short = event_type.rsplit(".", 1)[-1]
    return short if short in REASONS else OTHER


def urgency_label(urgency: str) -> str:
    return urgency if urgency in URGENCIES else OTHER


def estate_families(
    facts: EstateFacts, now: datetime, token_series: int, scan_interval_s: int
) -> list[Metric]:
    """Every estate metric family for `facts` at `now`."""
    per_token = token_series > 0 and len(facts.tokens) <= token_series
    families = _token_counts(facts, to_ms(now))
    families.append(
        _gauge(
            "tokenwarden_token_series_limited",
            "1 when the per-token series are left out (more current tokens than "
            "TOKENWARDEN_METRICS_TOKEN_SERIES), else 0.",
            0 if per_token else 1,
        )
    )
    if per_token:
        families += _per_token(facts, to_ms(now))
    families += _replacements(facts)
    families += _operations(facts, scan_interval_s)
    return families


def _token_counts(facts: EstateFacts, now_ms: int) -> list[Metric]:
    buckets = Counter(days_left_bucket(t.expires_ms, now_ms) for t in facts.tokens)
    by_days = GaugeMetricFamily(
        "tokenwarden_tokens", "Current tokens by days left until expiry.", labels=("days_left",)
    )
    for label in (EXPIRED, *(label for label, _ in DAYS_LEFT_BUCKETS)):
        by_days.add_metric((label,), buckets[label])
    rejected = sum(1 for t in facts.tokens if _rejected(t))
    return [
        by_days,
        _gauge(
            "tokenwarden_tokens_apple_rejected",
            "Current tokens whose last answer from Apple rejected them.",
            rejected,
        ),
        _gauge(
            "tokenwarden_servers_terms_pending",
            "Servers whose new Apple terms wait to be accepted in the portal.",
            len(facts.terms_pending),
        ),
    ]


def _per_token(facts: EstateFacts, now_ms: int) -> list[Metric]:
    expiry = _token_gauge("expiry_timestamp_seconds", "When the current token expires.")
    downloaded = _token_gauge("downloaded_timestamp_seconds", "When the token was downloaded.")
    valid = _token_gauge(
        "valid", "1 while the token works; 0 once expired, a replacement is open or Apple "
        "rejected it."
    )  # fmt: skip
    confirmed = _token_gauge(
        "apple_confirmed_timestamp_seconds", "When Apple last answered about the token."
    )
    rejected = _token_gauge("apple_rejected", "1 when Apple's last answer rejected the token.")
    replacing = GaugeMetricFamily(
        "tokenwarden_token_replacement_open_timestamp_seconds",
        "When the token's open replacement opened (only tokens with one).",
        labels=(*_TOKEN_LABELS, "urgency"),
    )
    open_by_token = {r.token_id: r for r in facts.replacements}
    for token in facts.tokens:
        labels = (token.server, token.org)
        replacement = open_by_token.get(token.token_id)
        expiry.add_metric(labels, token.expires_ms / 1000)
        downloaded.add_metric(labels, token.downloaded_ms / 1000)
        works = replacement is None and not _rejected(token) and now_ms < token.expires_ms
        valid.add_metric(labels, 1 if works else 0)
        rejected.add_metric(labels, 1 if _rejected(token) else 0)
        if token.apple_confirmed_ms is not None:
            confirmed.add_metric(labels, token.apple_confirmed_ms / 1000)
        if replacement is not None:
            urgency = urgency_label(replacement.urgency)
            replacing.add_metric((*labels, urgency), replacement.opened_ms / 1000)
    terms = GaugeMetricFamily(
        "tokenwarden_server_terms_pending_timestamp_seconds",
        "Since when the server's new Apple terms wait to be accepted (only servers with terms "
        "waiting).",
        labels=_TOKEN_LABELS,
    )
    for waiting in facts.terms_pending:
        terms.add_metric((waiting.server, waiting.org), waiting.since_ms / 1000)
    return [expiry, downloaded, valid, confirmed, rejected, replacing, terms]


def _replacements(facts: EstateFacts) -> list[Metric]:
    counts: Counter[tuple[str, str]] = Counter()
    for replacement in facts.replacements:
        urgency = urgency_label(replacement.urgency)
        for reason in {reason_label(t) for t in replacement.reason_types}:
            counts[(urgency, reason)] += 1
    by_reason = GaugeMetricFamily(
        "tokenwarden_replacements_open",
        "Open replacements by urgency and by the type of each reason they hold.",
        labels=("urgency", "reason"),
    )
    for labels, count in sorted(counts.items()):
        by_reason.add_metric(labels, count)
    families: list[Metric] = [by_reason]
    if facts.replacements:
        oldest = min(r.opened_ms for r in facts.replacements)
        families.append(
            _gauge(
                "tokenwarden_replacement_oldest_open_timestamp_seconds",
                "When the oldest open replacement opened (only while one is open).",
                oldest / 1000,
            )
        )
    return families


def _operations(facts: EstateFacts, scan_interval_s: int) -> list[Metric]:
    dead = CounterMetricFamily(
        "tokenwarden_events_dead", "Events that could not be handled (dead letters), ever."
    )
    dead.add_metric((), facts.dead_total)
    deliveries = GaugeMetricFamily(
        "tokenwarden_deliveries", "Deliveries of outgoing events by status.", labels=("status",)
    )
    for status in DELIVERY_STATUSES:
        deliveries.add_metric((status,), facts.deliveries.get(status, 0))
    last_success = GaugeMetricFamily(
        "tokenwarden_source_last_success_timestamp_seconds",
        "When the directory source's last round succeeded (0: never).",
        labels=("source",),
    )
    failing = GaugeMetricFamily(
        "tokenwarden_source_failing", "1 while the directory source is failing.", labels=("source",)
    )
    for source in facts.sources:
        last_success.add_metric((source.name,), (source.last_success_ms or 0) / 1000)
        failing.add_metric((source.name,), 1 if source.failing else 0)
    return [
        dead,
        deliveries,
        _gauge(
            "tokenwarden_outbox_pending",
            "Outgoing events not yet turned into deliveries.",
            facts.outbox_pending,
        ),
        _gauge(
            "tokenwarden_scheduler_last_scan_timestamp_seconds",
            "When the latest expiry scan ran (0: never).",
            (facts.last_scan_ms or 0) / 1000,
        ),
        _gauge(
            "tokenwarden_scheduler_scan_interval_seconds",
            "Seconds between two expiry scans (TOKENWARDEN_SCAN_INTERVAL).",
            scan_interval_s,
        ),
        last_success,
        failing,
    ]


def _rejected(token: TokenFacts) -> bool:
    """As `status` reads it (worker.apple.verdicts.standing)."""
    return still_refused(token.apple_verdict, token.apple_confirmed_ms, token.apple_rejected_ms)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _token_gauge(suffix: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"tokenwarden_token_{suffix}", documentation, labels=_TOKEN_LABELS)


#: Seconds one reading of the estate serves scrapes for: several Prometheus servers, or one
#: scraping every replica, cost one read of Redis, not one each.
SNAPSHOT_S = 10.0


class EstateCollector:
    """A prometheus_client collector: a scrape reads the estate (`read`, the store's
    EstateMetricsStore.read) and yields its families. Scrapes at once share one reading (the
    others wait for it), and a reading serves the scrapes of the next SNAPSHOT_S seconds: the
    cost to Redis and to memory stays one reading whatever the number of scrapers. A store
    that cannot be read raises: the scrape fails rather than report a partial truth."""

    def __init__(
        self,
        read: Callable[[], EstateFacts],
        now: Callable[[], datetime],
        token_series: int,
        scan_interval_s: int,
        clock: Callable[[], float] = time.monotonic,
        snapshot_s: float = SNAPSHOT_S,
    ):
        self._read = read
        self._now = now
        self._token_series = token_series
        self._scan_interval_s = scan_interval_s
        self._clock = clock
        self._snapshot_s = snapshot_s
        self._lock = threading.Lock()
        self._snapshot: tuple[float, list[Metric]] | None = None

    def describe(self) -> list[Metric]:
        return []  # registering must not read Redis

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # one reading at a time; those waiting take its result
            taken = self._snapshot
            if taken is None or self._clock() - taken[0] >= self._snapshot_s:
                self._snapshot = None  # a failed reading leaves nothing stale behind
                families = estate_families(
                    self._read(), self._now(), self._token_series, self._scan_interval_s
                )
                taken = self._snapshot = (self._clock(), families)
        yield from taken[1]

"""The intake's Prometheus metrics, in a registry of its own (one per app, so tests and
several apps in one process never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

#: Request latency buckets, seconds: the intake must answer well inside 3 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class IntakeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tokenwarden_intake_requests",
            "HTTP requests to the intake, by source and outcome (HTTP status class).",
            ("source", "outcome"),
            registry=self.registry,
        )
        self.events_accepted = Counter(
            "tokenwarden_intake_events_accepted",
            "Events accepted and enqueued, by source.",
            ("source",),
            registry=self.registry,
        )
        self.events_ignored = Counter(
            "tokenwarden_intake_events_ignored",
            "Events acknowledged but meaning nothing for tokens, by source.",
            ("source",),
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "tokenwarden_intake_auth_failures",
            "Requests refused for a missing or wrong secret, by source.",
            ("source",),
            registry=self.registry,
        )
        self.latency = Histogram(
            "tokenwarden_intake_request_seconds",
            "Time from request to response, by route.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

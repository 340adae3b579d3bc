"""The benchmark keeps working: it runs at a tiny size (figures are not asserted, only that
every one is measured)."""

import json

from tests.bench.run import SMALL, run


def test_the_benchmark_measures_every_figure_at_a_tiny_size(tmp_path):
    out = tmp_path / "bench.json"
    figures = run(SMALL, out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(figures))
    assert figures["throughput"]["events_per_s"] > 0
    assert figures["throughput"]["baseline_noop_events_per_s"] > 0
    assert figures["throughput"]["worker_peak_rss_mb"] > 10
    assert figures["latency"]["p99_ms"] > 0
    assert figures["latency"]["single_after_silence_ms"] > 0
    assert [s["tokens"] for s in figures["scans"]] == [SMALL["scan_tokens"], SMALL["scan_large"]]
    assert figures["memory"]["bytes_per_token"] > 100
    assert figures["apple"]["tokens"] == SMALL["apple_tokens"]
    assert figures["apple"]["cpu_ms_per_check"] > 0
    assert figures["apple"]["baseline_concurrency_1"]["seconds"] > 0
    assert figures["okta"]["deliveries"] == SMALL["okta_rate"] * SMALL["okta_seconds"]
    assert figures["okta"]["answer_p99_ms"] > 0
    assert figures["okta"]["webhook_p99_ms"] > 0
    assert figures["cloudevents"]["events"] > 0
    assert figures["cloudevents"]["baseline_publisher_events_per_s"] > 0
    for kind in ("okta-api", "entra", "google"):
        measured = figures["directories"][kind]
        assert measured["watched"] == SMALL["directory_users"]
        assert measured["requests"] > 0 and measured["events"] > 0
    assert figures["metrics"]["series"]["tokens"] == SMALL["metrics_tokens"]
    assert figures["metrics"]["series"]["per_token_series"] is True
    assert figures["metrics"]["series"]["http_s"] > 0
    assert figures["metrics"]["buckets"]["tokens"] == SMALL["metrics_large"]
    assert figures["metrics"]["buckets"]["per_token_series"] is False
    assert figures["sentinel"]["events_per_s_wait_1"] > 0
    assert figures["sentinel"]["events_per_s_wait_off"] > 0
    assert figures["ui"]["tokens"] == SMALL["ui_tokens"]
    assert [p["median_s"] > 0 for p in figures["ui"]["pages"]] == [True] * 5
    assert len(figures["targets_met"]) == 21

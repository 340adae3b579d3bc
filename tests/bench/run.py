"""`make bench`: every figure of the performance issue, each beside its target and its baseline,
as a table and as JSON (var/bench.json).

    .venv/bin/python -m tests.bench.run            # the full run, about 11 minutes here
    .venv/bin/python -m tests.bench.run --small    # seconds; what the smoke test runs
    .venv/bin/python -m tests.bench.run --only apple   # one part (pipeline, scan, failover,
                                                       # apple, intake, directories,
                                                       # metrics, sentinel, ui)
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench import (
    apple,
    cloudevents,
    directories,
    failover,
    latency,
    metrics,
    okta,
    pipeline,
    scan,
    sentinel,
    ui,
)
from tests.bench.common import start_redis, stop_redis
from tests.bench.serve import load_average
from worker.config import DEFAULT_APPLE_CONCURRENCY

FULL = {
    "events": 10_000,
    "servers": 5_000,
    "rate": 50.0,
    "seconds": 30.0,
    "silence": 60.0,
    "scan_tokens": 100_000,
    "scan_large": 1_000_000,
    "scan_due": 1_000,
    "failover_events": 6_000,
    "apple_tokens": 1_000,
    "okta_rate": 20.0,
    "okta_seconds": 30.0,
    "ce_seconds": 10.0,
    "directory_users": 10_000,
    "metrics_tokens": 10_000,
    "metrics_large": 100_000,
    "sentinel_events": 5_000,
    "sentinel_kills": 3,
    "ui_tokens": 10_000,
}
SMALL = {
    "events": 300,
    "servers": 100,
    "rate": 50.0,
    "seconds": 2.0,
    "silence": 1.0,
    "scan_tokens": 2_000,
    "scan_large": 4_000,
    "scan_due": 20,
    "failover_events": 0,  # the failover figures take 30 s whatever the size: not in the smoke test
    "apple_tokens": 40,
    "okta_rate": 20.0,
    "okta_seconds": 2.0,
    "ce_seconds": 1.0,
    "directory_users": 100,
    "metrics_tokens": 200,
    "metrics_large": 1_000,
    "sentinel_events": 300,
    "sentinel_kills": 0,  # each failover takes some 20 s whatever the size: not in the smoke test
    "ui_tokens": 200,
}


def progress(what: str) -> None:
    print(f"... {what}", file=sys.stderr, flush=True)


def _pipeline(url: str, workdir: Path, sizes: dict) -> tuple[dict, list[tuple]]:
    progress("pipeline throughput and worker memory")
    throughput = pipeline.measure(url, workdir, sizes["events"], sizes["servers"])
    progress(
        f"latency: {sizes['seconds']:g} s at {sizes['rate']:g}/s, then "
        f"{sizes['silence']:g} s of silence"
    )
    latencies = latency.measure(url, workdir, sizes["rate"], sizes["seconds"], sizes["silence"])
    rows = [
        (
            "pipeline throughput",
            f"{throughput['events_per_s']} events/s",
            f"no-op dramatiq actor {throughput['baseline_noop_events_per_s']}/s",
            f"{throughput['ratio_to_baseline']}x",
            ">= 1.0x",
            throughput["ratio_to_baseline"] >= 1,
        ),
        (
            "latency p99 at 50/s",
            f"{latencies['p99_ms']} ms",
            f"median {latencies['median_ms']} ms",
            "",
            "<= 100 ms",
            latencies["p99_ms"] <= 100,
        ),
        (
            f"one event after {sizes['silence']:g} s idle",
            f"{latencies['single_after_silence_ms']} ms",
            "",
            "",
            "<= 1000 ms",
            latencies["single_after_silence_ms"] <= 1000,
        ),
        (
            "worker peak RSS (throughput run)",
            f"{throughput['worker_peak_rss_mb']} MB",
            "",
            "",
            "<= 60 MB",
            throughput["worker_peak_rss_mb"] <= 60,
        ),
    ]
    return {"throughput": throughput, "latency": latencies}, rows


def _scan(url: str, workdir: Path, sizes: dict) -> tuple[dict, list[tuple]]:
    progress("Redis memory per token")
    memory = scan.memory_per_token(url, workdir, min(scan.MEMORY_SAMPLE, sizes["scan_tokens"]))
    progress(
        f"expiry scans over {sizes['scan_tokens']:,} and {sizes['scan_large']:,} "
        "tokens (loading them takes most of the time)"
    )
    scans = [
        scan.time_scan(url, workdir, sizes["scan_tokens"], sizes["scan_due"]),
        scan.time_scan(url, workdir, sizes["scan_large"], sizes["scan_due"]),
    ]
    ratio = scans[1]["scan_s"] / scans[0]["scan_s"]
    rows = [
        (
            f"scan {scans[0]['tokens']:,} tokens ({sizes['scan_due']:,} due)",
            f"{scans[0]['scan_s']:.3f} s",
            "",
            "",
            "<= 0.25 s",
            scans[0]["scan_s"] <= 0.25,
        ),
        (
            f"scan {scans[1]['tokens']:,} tokens ({sizes['scan_due']:,} due)",
            f"{scans[1]['scan_s']:.3f} s",
            f"{scans[0]['tokens']:,}-token scan",
            f"{ratio:.2f}x",
            "<= 1.5x",
            ratio <= 1.5,
        ),
        (
            "Redis memory per token",
            f"{memory['bytes_per_token']} B",
            "indexes included",
            "",
            "<= 1536 B",
            memory["bytes_per_token"] <= 1536,
        ),
    ]
    return {"scans": scans, "scan_ratio": round(ratio, 2), "memory": memory}, rows


def _failover(url: str, workdir: Path, sizes: dict) -> tuple[dict, list[tuple]]:
    if not sizes["failover_events"]:
        return {"failover": {}}, []
    progress("failover: a worker and a scheduler leader killed with SIGKILL")
    try:
        failovers = failover.measure(url, workdir, sizes["failover_events"])
    except (TimeoutError, OSError, subprocess.SubprocessError) as exc:
        # The other figures still count: report this one as not measured.
        progress(f"failover not measured: {exc}")
        return {"failover": {}}, []
    rows = [
        (
            "worker killed: its messages handled",
            f"{failovers['recovered_s']} s",
            f"{failovers['held_at_kill']} messages held",
            "",
            "<= 20 s",
            failovers["recovered_s"] <= 20 and failovers["audited"] == failovers["events"],
        ),
        (
            "scheduler leader killed: replaced",
            f"{failovers['takeover_s']} s",
            "lease 15 s",
            "",
            "<= 30 s",
            failovers["takeover_s"] <= 30,
        ),
    ]
    return {"failover": failovers}, rows


def _apple(url: str, workdir: Path, sizes: dict) -> tuple[dict, list[tuple]]:
    progress(
        f"checks with Apple: {sizes['apple_tokens']:,} tokens against the fake, "
        f"{DEFAULT_APPLE_CONCURRENCY} at once, then one at a time"
    )
    checks = apple.measure(url, workdir, sizes["apple_tokens"])
    single = checks["baseline_concurrency_1"]
    rows = [
        (
            f"{checks['tokens']:,} Apple checks, {checks['concurrency']} at once (fake Apple)",
            f"{checks['seconds']:.2f} s",
            f"one at a time {single['seconds']:.2f} s",
            f"{checks['ratio_to_baseline']}x",
            "<= 20 s",
            checks["seconds"] <= 20,
        ),
        (
            "CPU per Apple check (checker; fake in own process)",
            f"{checks['cpu_ms_per_check']} ms",
            f"one at a time {single['cpu_ms_per_check']} ms; "
            f"fake {checks['fake_cpu_ms_per_check']} ms",
            "",
            "",
            None,  # no target: the figure to watch
        ),
    ]
    return {"apple": checks}, rows


def _intake(url: str, workdir: Path, sizes: dict) -> tuple[dict, list[tuple]]:
    progress(
        f"Okta deliveries of {okta.EVENTS_PER_DELIVERY} events at {sizes['okta_rate']:g}/s for "
        f"{sizes['okta_seconds']:g} s into `tokenwarden serve`, webhooks from `tokenwarden worker`"
    )
    hooks = okta.measure(url, workdir, sizes["okta_rate"], sizes["okta_seconds"], doomed=1)
    progress(
        f"CloudEvents batches of {cloudevents.BATCH} from {cloudevents.CLIENTS} client threads "
        f"for {sizes['ce_seconds']:g} s, then the Publisher directly"
    )
    batches = cloudevents.measure(url, workdir, sizes["ce_seconds"])
    rows = [
        (
            f"Okta delivery of {okta.EVENTS_PER_DELIVERY} events: POST to 200, p99",
            f"{hooks['answer_p99_ms']} ms",
            f"median {hooks['answer_median_ms']} ms",
            "",
            "<= 50 ms",
            hooks["answer_p99_ms"] <= 50,
        ),
        (
            "Okta delivery: POST to its webhook at the receiver, p99",
            f"{hooks['webhook_p99_ms']} ms",
            f"median {hooks['webhook_median_ms']} ms",
            "",
            "<= 300 ms",
            hooks["webhook_p99_ms"] <= 300,
        ),
        (
            f"CloudEvents batches of {cloudevents.BATCH}: accepted by one serve",
            f"{batches['events_per_s']:,} events/s",
            f"Publisher directly {batches['baseline_publisher_events_per_s']:,}/s",
            f"{batches['ratio_to_baseline']}x",
            ">= 5,000/s",
            batches["events_per_s"] >= 5_000,
        ),
    ]
    return {"okta": hooks, "cloudevents": batches}, rows


def _directories(url: str, workdir: Path, sizes: dict) -> tuple[dict, list[tuple]]:
    users = sizes["directory_users"]
    progress(f"directory checks: one round over {users:,} watched users against each fake")
    rounds = directories.measure(url, workdir, users)
    rows = []
    for kind, measured in rounds.items():
        rows.append(
            (
                f"{kind}: one round over {users:,} watched users",
                f"{measured['seconds']} s",
                f"{measured['requests']:,} requests",
                "",
                "<= 60 s" + (", <= 600 requests" if kind == "entra" else ""),
                measured["seconds"] <= 60
                and (kind != "entra" or measured["requests"] <= 600 * max(1, users // 10_000)),
            )
        )
    return {"directories": rounds}, rows


def _metrics(url: str, workdir: Path, sizes: dict) -> tuple[dict, list[tuple]]:
    tokens, large = sizes["metrics_tokens"], sizes["metrics_large"]
    progress(
        f"/metrics scrapes over {tokens:,} tokens (per-token series) and {large:,} (counts "
        "by days left); loading them takes most of the time"
    )
    scrapes = metrics.measure(url, workdir, tokens, large)
    series, buckets = scrapes["series"], scrapes["buckets"]
    rows = [
        (
            f"scrape /metrics over HTTP, {tokens:,} tokens (per-token series)",
            f"{series['http_s']:.3f} s",
            f"collector alone {series['collector_s']:.3f} s",
            "",
            "<= 1 s",
            series["http_s"] <= 1,
        ),
        (
            f"scrape the collector, {large:,} tokens (counts by days left)",
            f"{buckets['collector_s']:.3f} s",
            f"{buckets['bytes']:,} bytes",
            "",
            "",
            None,  # no target: the figure to watch
        ),
    ]
    return {"metrics": scrapes}, rows


def _sentinel(url: str, workdir: Path, sizes: dict) -> tuple[dict, list[tuple]]:
    events, kills = sizes["sentinel_events"], sizes["sentinel_kills"]
    progress(
        f"Sentinel: {events:,} events against a master with a replica, WAIT off and WAIT 1; "
        f"{kills} master kills each way"
    )
    measured = sentinel.measure(workdir, events, sizes["servers"], events, kills)
    rows = [
        (
            "pipeline with TOKENWARDEN_REDIS_WAIT_REPLICAS=1",
            f"{measured['events_per_s_wait_1']} events/s",
            f"WAIT off {measured['events_per_s_wait_off']}/s",
            f"{measured['wait_cost_ratio']}x",
            ">= 0.5x",
            measured["wait_cost_ratio"] >= 0.5,
        )
    ]
    for wait in (0, 1) if kills else ():
        runs = measured[f"failovers_wait_{wait}"]
        rows.append(
            (
                f"master killed, WAIT {'off' if wait == 0 else '1'}: decisions lost",
                f"{sum(r['missing_on_replica'] for r in runs)} over {kills} kills",
                f"acknowledged, never decided: {sum(r['never_decided'] for r in runs)}",
                "",
                "",
                None,  # no target: the figure to know
            )
        )
    return {"sentinel": measured}, rows


def _ui(url: str, workdir: Path, sizes: dict) -> tuple[dict, list[tuple]]:
    tokens = sizes["ui_tokens"]
    progress(f"the web pages over {tokens:,} tokens, each fetched {ui.VIEWS} times")
    measured = ui.measure(url, workdir, tokens)
    rows = [
        (
            f"page {page['path']}, {tokens:,} tokens",
            f"{page['median_s'] * 1000:.0f} ms",
            f"first view {page['first_s'] * 1000:.0f} ms",
            "",
            f"<= {ui.TARGET_S * 1000:.0f} ms",
            page["median_s"] <= ui.TARGET_S,
        )
        for page in measured["pages"]
    ]
    return {"ui": measured}, rows


#: The parts of the benchmark, in the order they run (`--only` picks one).
PARTS = {
    "pipeline": _pipeline,
    "scan": _scan,
    "failover": _failover,
    "apple": _apple,
    "intake": _intake,
    "directories": _directories,
    "metrics": _metrics,
    "sentinel": _sentinel,
    "ui": _ui,
}


def run(sizes: dict, out: Path, only: str | None = None) -> dict:
    """Every part (or those `only` names, separated by commas). A part that fails is one row
    saying so, and the others still run: one flaky drill must not cost the whole run."""
    wanted = set(only.split(",")) if only else set(PARTS)
    workdir = Path(tempfile.mkdtemp(prefix="tw-bench-"))
    url, redis_process = start_redis(workdir)
    started, load_before = time.monotonic(), load_average()
    figures: dict = {"sizes": sizes}
    rows: list[tuple] = []
    try:
        for name, part in PARTS.items():
            if name not in wanted:
                continue
            try:
                measured, part_rows = part(url, workdir, sizes)
            except Exception as exc:  # the part's own figures are lost, not the others'
                print(f"... {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                figures[f"{name}_failed"] = f"{type(exc).__name__}: {exc}"
                rows.append((f"{name}: the part failed", type(exc).__name__, "", "", "", False))
                continue
            figures |= measured
            rows += part_rows
    finally:
        stop_redis(redis_process)
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"tokenwarden benchmark on {platform.node()} ({platform.machine()}, "
        f"{platform.python_version()}), {time.monotonic() - started:.0f} s; load average "
        f"{load_before} before, {load_average()} after (other work on the machine slows it)"
    )
    print_table(rows)
    figures["targets_met"] = {row[0]: bool(row[5]) for row in rows if row[5] is not None}
    figures["seconds"] = round(time.monotonic() - started)
    figures["load_average"] = {"before": load_before, "after": load_average()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {out}")
    return figures


def print_table(rows: list[tuple]) -> None:
    """Figure, value, baseline, ratio, target, and whether it is met (None: no target)."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)] if rows else []
    for row in rows:
        cells = [str(c).ljust(w) for c, w in zip(row[:5], widths, strict=True)]
        verdict = "" if row[5] is None else "met" if row[5] else "NOT MET"
        print("  ".join(cells), verdict)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--out", default="var/bench.json")
    parser.add_argument(
        "--only", help=f"measure only these parts, separated by commas ({', '.join(PARTS)})"
    )
    options = parser.parse_args()
    unknown = set(options.only.split(",")) - set(PARTS) if options.only else set()
    if unknown:
        parser.error(f"no such part: {', '.join(sorted(unknown))}; parts: {', '.join(PARTS)}")
    apple.log_as_the_scheduler_does()
    run(SMALL if options.small else FULL, Path(options.out), options.only)


if __name__ == "__main__":
    main()

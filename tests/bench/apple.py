"""Scheduled checks with Apple's enrollment service: N tokens, every one due, checked by
AppleChecker.run_due against the fake of Apple (tests/apple_fake.py) running in a process of its
own, with the default concurrency and, as the baseline, one at a time. Each run reports seconds
in total and the CPU per check of the checking process alone (the fake's CPU is measured
apart, to tell whether the fake was the bottleneck).

    .venv/bin/python -m tests.bench.apple [--tokens 1000]

Tokens are bulk loaded as the scan benchmark loads them (servers, token records and indexes
through queue_token_writes, credentials sealed with the keyring), with seeded credentials the
fake enrolls too. Every check must come back accepted and applied, else it raises.

The fake answers at once, so here a check costs only CPU, and the checker's threads share one
interpreter lock: expect little gain from concurrency in this figure (its `cpu_share` near
1.0 says so). Against Apple, where each request waits on the network, the threads overlap the
waiting; that is what the concurrency is for.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import redis

from tests.bench.common import load_tokens, seeded_credentials, start_redis, stop_redis
from worker.apple.client import AppleClient
from worker.apple.verdicts import Verdict
from worker.bootstrap import App
from worker.config import DEFAULT_APPLE_CONCURRENCY, AppleSettings, Settings
from worker.crypto.sealing import generate_master_key
from worker.logs import configure_logging
from worker.records import Token
from worker.services.apple_checks import AppleChecker, RoundReport
from worker.store import keys as k

SEED = 11
#: Checks made, untimed, before the timed rounds.
WARM_UP = 50


class ChecksFailed(RuntimeError):
    """Not every check came back accepted and applied: the figures would measure errors."""


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (from /proc: another process's)."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(after_name[11]), int(after_name[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def redis_cpu_seconds(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


@contextmanager
def fake_apple(tokens: int, seed: int = SEED) -> Iterator[tuple[str, int]]:
    """The fake in its own process, tokens 0..tokens-1 enrolled: (its URL, its pid)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.apple_fake_server",
            "--tokens",
            str(tokens),
            "--seed",
            str(seed),
        ],
        cwd=Path(__file__).resolve().parents[2],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().strip()  # empty if it died first
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the fake of Apple did not start (exit {process.poll()})")
        yield url, process.pid
    finally:
        process.stdin.close()  # it serves until its stdin closes
        process.stdout.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def time_checks(
    url: str, workdir: Path, fake: tuple[str, int], tokens: int, concurrency: int
) -> dict:
    """One round of scheduled checks over `tokens` tokens, every one due, timed."""
    redis.Redis.from_url(url).flushdb()
    app = App(Settings(redis_url=url, data_dir=workdir, master_key=generate_master_key()))
    load_tokens(
        app, tokens, due=tokens, credentials=functools.partial(seeded_credentials, seed=SEED)
    )
    fake_url, fake_pid = fake
    settings = AppleSettings(url=fake_url, concurrency=concurrency)
    try:
        with AppleClient(settings) as apple:
            checker = AppleChecker(app.store, apple, settings)
            fake_cpu, redis_cpu = cpu_seconds(fake_pid), redis_cpu_seconds(app.redis)
            cpu, started = time.process_time(), time.perf_counter()
            report = checker.run_due(lambda: datetime.now(UTC))
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu
            fake_cpu = cpu_seconds(fake_pid) - fake_cpu
            redis_cpu = redis_cpu_seconds(app.redis) - redis_cpu
        require_all_accepted(app, report, tokens)
    finally:
        app.close()
    return {
        "tokens": tokens,
        "concurrency": concurrency,
        "seconds": round(seconds, 2),
        "cpu_ms_per_check": round(cpu * 1000 / tokens, 2),
        "fake_cpu_ms_per_check": round(fake_cpu * 1000 / tokens, 2),
        "redis_cpu_ms_per_check": round(redis_cpu * 1000 / tokens, 2),
        # Shares of one core each process used: a Python process near 1.0 is bound by its
        # GIL, so the bottleneck is the checker's when its share is the highest, the fake's
        # when the fake's is.
        "cpu_share": round(cpu / seconds, 2),
        "fake_cpu_share": round(fake_cpu / seconds, 2),
        "redis_cpu_share": round(redis_cpu / seconds, 2),
    }


def require_all_accepted(app: App, report: RoundReport, tokens: int) -> None:
    """Every token was claimed, checked, accepted, and the answer applied and stored: a
    benchmark of errors measures nothing."""
    verdicts = {verdict.value: count for verdict, count in report.verdicts.items()}
    codes = dict(report.codes)
    applied = report.checked - report.not_applied
    accepted = verdicts.get(Verdict.ACCEPTED.value, 0)
    if (report.claimed, accepted, applied) != (tokens, tokens, tokens):
        raise ChecksFailed(
            f"{tokens} tokens due: {report.claimed} claimed, {report.skipped} skipped, "
            f"verdicts {verdicts} (codes {codes}), {applied} applied"
        )
    pipe = app.redis.pipeline(transaction=False)
    for i in range(tokens):
        pipe.hgetall(k.token(f"tok_{i:016x}"))
    stored = Counter(Token.from_hash(fields).apple.verdict for fields in pipe.execute())
    if stored != {Verdict.ACCEPTED.value: tokens}:
        raise ChecksFailed(f"{tokens} tokens checked, the store holds verdicts {dict(stored)}")
    if app.store.apple.due_count(datetime.now(UTC)):
        raise ChecksFailed("tokens are still due after the round of checks")


def measure(url: str, workdir: Path, tokens: int) -> dict:
    """The default concurrency, and one at a time as the baseline, against the same fake (one
    Apple client each, so each check opens a session and then asks for the account)."""
    with fake_apple(tokens) as fake:
        # Untimed: the first checks of a process pay for connections and first-use imports.
        time_checks(url, workdir, fake, min(tokens, WARM_UP), DEFAULT_APPLE_CONCURRENCY)
        default = time_checks(url, workdir, fake, tokens, DEFAULT_APPLE_CONCURRENCY)
        single = time_checks(url, workdir, fake, tokens, 1)
    return {
        **default,
        "baseline_concurrency_1": single,
        "ratio_to_baseline": round(single["seconds"] / default["seconds"], 2),
    }


def log_as_the_scheduler_does() -> None:
    """Logs at info, as JSON, as the scheduler writes them (one line per check is part of
    its cost), into /dev/null rather than over the figures."""
    configure_logging("info", "json", stream=open(os.devnull, "w"))  # noqa: SIM115


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    options = parser.parse_args()
    log_as_the_scheduler_does()
    workdir = Path(tempfile.mkdtemp(prefix="tw-apple-"))
    url, redis_process = start_redis(workdir)
    try:
        print(json.dumps(measure(url, workdir, options.tokens), indent=2))
    finally:
        stop_redis(redis_process)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

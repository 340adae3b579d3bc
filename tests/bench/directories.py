"""Directory checks: one round of a source over N watched users (each the downloader of one
current token), against each kind's fake on loopback (in this process), with the default
concurrency. Reports, per kind, the seconds and HTTP requests of the round (token requests
included), and the events it sent: a hundredth of the users changed their password after
their download, which the round must find (else it raises).

    .venv/bin/python -m tests.bench.directories [--users 10000] [--only okta-api]

Tokens are bulk loaded as the scan benchmark loads them (queue_token_writes, which indexes
each downloader among the watched users).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import redis

from tests.bench.common import NOW, load_tokens, start_redis, stop_redis, user_of
from worker.bootstrap import App
from worker.config import Settings
from worker.crypto.sealing import generate_master_key
from worker.logs import configure_logging
from worker.rules import directory as rules
from worker.services import sources as service

#: Every how many users one changed their password after the download.
CHANGED_EVERY = 100


class RoundFailed(RuntimeError):
    """The round did not find what was changed: its figures would measure errors."""


@contextlib.contextmanager
def okta_fake(workdir: Path) -> Iterator[object]:
    from tests.helpers import serving
    from tests.okta_api_fake import FakeOktaOrg

    fake = FakeOktaOrg()
    with serving(fake.app()) as url:
        fake.url = url
        yield fake


@contextlib.contextmanager
def entra_fake(workdir: Path) -> Iterator[object]:
    from tests.entra_fake import running_fake_entra

    with running_fake_entra(workdir) as fake:
        yield fake


@contextlib.contextmanager
def google_fake(workdir: Path) -> Iterator[object]:
    from tests.google_fake import running_fake_google

    with running_fake_google(workdir) as fake:
        yield fake


FAKES: dict[str, Callable[[Path], contextlib.AbstractContextManager]] = {
    "okta-api": okta_fake,
    "entra": entra_fake,
    "google": google_fake,
}


def credentials_for(fake, workdir: Path) -> dict:
    given = fake.credentials()
    if "service_account" in given:
        return {"service_account_text": json.dumps(given["service_account"])}
    return given


def time_round(url: str, workdir: Path, kind: str, users: int) -> dict:
    redis.Redis.from_url(url).flushdb()
    with FAKES[kind](workdir) as fake:
        base = Settings(redis_url=url, data_dir=workdir, master_key=generate_master_key())
        app = App(replace(base, directories=fake.directory_settings()))
        try:
            load_tokens(app, users)
            for i in range(users):
                # load_tokens: token i expires 200 + i % 100 days from NOW, downloaded a year
                # before that.
                downloaded = NOW + timedelta(days=200 + i % 100) - timedelta(days=365)
                changed = downloaded + timedelta(days=1) if i % CHANGED_EVERY == 0 else None
                fake.add_user(user_of(i), password_changed_at=changed)
            source = service.add_directory(
                app.sources, "bench", kind, now=NOW, options=fake.source_options(),
                credentials=credentials_for(fake, workdir),
                domains=tuple(sorted({user_of(i).split("@")[1] for i in range(users)})),
            )  # fmt: skip
            started = time.perf_counter()
            report = app.directory_checker.run_round(source)
            seconds = time.perf_counter() - started
        finally:
            app.close()
    expected = len(range(0, users, CHANGED_EVERY))
    if report.error or report.counts[rules.PASSWORD_CHANGED] != expected:
        raise RoundFailed(f"{kind}: {report.error or dict(report.counts)}")
    return {
        "kind": kind,
        "watched": report.watched,
        "seconds": round(seconds, 2),
        "requests": report.requests,
        "requests_per_user": round(report.requests / users, 3),
        "events": report.events,
    }


def measure(url: str, workdir: Path, users: int, kinds: tuple[str, ...] = tuple(FAKES)) -> dict:
    return {kind: time_round(url, workdir, kind, users) for kind in kinds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--only", choices=tuple(FAKES), default=None)
    args = parser.parse_args()
    configure_logging("warning", "console")
    workdir = Path(tempfile.mkdtemp(prefix="tw-bench-dir-"))
    url, process = start_redis(workdir)
    try:
        kinds = (args.only,) if args.only else tuple(FAKES)
        json.dump(measure(url, workdir, args.users, kinds), sys.stdout, indent=2)
        print()
    finally:
        stop_redis(process)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

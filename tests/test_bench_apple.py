"""The Apple checks benchmark measures checks that succeeded, or nothing: a round in which
some tokens are unknown to the fake (Apple refuses them) stops it loudly."""

import pytest

from tests.bench.apple import ChecksFailed, fake_apple, time_checks
from tests.bench.common import start_redis, stop_redis


@pytest.fixture
def bench_redis(tmp_path):
    url, process = start_redis(tmp_path)  # its own: the benchmark flushes it
    yield url
    stop_redis(process)


def test_a_round_with_refused_tokens_fails_loudly(bench_redis, tmp_path):
    with fake_apple(tokens=3) as fake, pytest.raises(ChecksFailed) as failed:
        time_checks(bench_redis, tmp_path, fake, tokens=5, concurrency=2)
    assert "'rejected': 2" in str(failed.value)


def test_a_round_where_the_fake_knows_every_token_is_measured(bench_redis, tmp_path):
    with fake_apple(tokens=5) as fake:
        figures = time_checks(bench_redis, tmp_path, fake, tokens=5, concurrency=2)
    assert figures["tokens"] == 5
    assert figures["cpu_ms_per_check"] > 0

"""REDIS_URL behind Sentinel is read, checked and redacted; waiting for replicas never undoes
a write. (The failover itself: tests/test_sentinel_drill.py.)"""

import os
import subprocess
from dataclasses import replace

import pytest

from tests.helpers import TOKENWARDEN
from worker.bootstrap import App
from worker.config import Settings
from worker.environment import parse_sentinel_url, redact_url
from worker.rules.decision import AuditEntry, Decision
from worker.store import keys as k

SECRET = "s3cr3t-pa55"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://a:26379,b:26380/mymaster/0",
            {"sentinels": (("a", 26379), ("b", 26380)), "master": "mymaster", "db": 0},
        ),
        ("redis+sentinel://a,b/m", {"sentinels": (("a", 26379), ("b", 26379)), "db": 0}),
        ("redis+sentinel://[::1]:5000/m/3", {"sentinels": (("::1", 5000),), "db": 3}),
        (
            f"redis+sentinel://:{SECRET}@a/m/0",
            {"password": SECRET, "sentinel_password": SECRET, "tls": False},
        ),
        (
            f"redis+sentinel://:{SECRET}@a/m/0?sentinel_password=other",
            {"password": SECRET, "sentinel_password": "other"},
        ),
        (
            f"redis+sentinel://:{SECRET}@a/m/0?sentinel_password=",
            {"password": SECRET, "sentinel_password": None},
        ),
        (
            "rediss+sentinel://user:p%40ss@a/m?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem",
            {"tls": True, "username": "user", "password": "p@ss", "ssl_cert_reqs": "none"},
        ),
    ],
)
def test_a_sentinel_url_names_the_sentinels_the_master_and_how_to_speak_to_them(url, expected):
    parsed = parse_sentinel_url(url)
    assert {name: getattr(parsed, name) for name in expected} == expected
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(
    "url",
    [
        f"redis+sentinel://:{SECRET}?x@127.0.0.1:1/m/0",
        f"redis+sentinel://:{SECRET}/x@a,b/m/0",
        f"redis+sentinel://:pw@a/m/0?sentinel_password=ab#{SECRET}",
        f"redis+sentinel://:p@ss{SECRET}@a,b/m/0",
        f"redis+sentinel://:{SECRET}@a,b",
    ],
)
def test_a_password_is_hidden_however_it_is_written(url):
    assert SECRET not in redact_url(url)


def test_a_password_with_an_unencoded_at_sign_is_read_whole():
    from worker.environment import parse_sentinel_url

    parsed = parse_sentinel_url(f"redis+sentinel://:p@ss{SECRET}@a,b/mymaster/0")
    assert parsed.password == f"p@ss{SECRET}" and parsed.master == "mymaster"
    assert [host for host, _ in parsed.sentinels] == ["a", "b"]


def test_every_password_of_a_sentinel_url_is_redacted():
    url = f"rediss+sentinel://u:{SECRET}@a:1,b:2/m/0?sentinel_password={SECRET}"
    shown = redact_url(url)
    assert shown == "rediss+sentinel://u:***@a:1,b:2/m/0?sentinel_password=***"
    assert SECRET not in repr(Settings.from_env({"REDIS_URL": url}))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"redis+sentinel://:{SECRET}@a,b", "does not name the master"),
        (f"redis+sentinel://:{SECRET}@a,b/", "does not name the master"),
        (f"redis+sentinel://:{SECRET}@a:99999/m", "where a sentinel's host[:port] belongs"),
        (f"redis+sentinel://:{SECRET}@a,,b/m", "where a sentinel's host[:port] belongs"),
        (f"redis+sentinel://:{SECRET}@a/m/x", "names database 'x'"),
        (f"redis+sentinel://:{SECRET}@a/m?password={SECRET}", "has 'password'"),
        (f"rediss+sentinel://:{SECRET}@a/m?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
        # A password written without percent-encoding: refused, never repeated.
        (f"redis+sentinel://:{SECRET}?x@a/m/0", "percent-encode them"),
        (f"redis+sentinel://:{SECRET}/x@a,b/m/0", "percent-encode them"),
        (f"redis+sentinel://:{SECRET}#x@a/m/0", "percent-encode them"),
        (f"redis+sentinel://:pw@a/m/0?sentinel_password=ab#{SECRET}", "fragment"),
    ],
)
def test_a_bad_sentinel_url_stops_every_command_with_one_line_and_exit_2(url, message, tmp_path):
    result = subprocess.run(
        [TOKENWARDEN, "servers", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "REDIS_URL": url, "TOKENWARDEN_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "redis+sentinel://" in result.stderr
    assert SECRET not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TOKENWARDEN_REDIS_WAIT_REPLICAS", "-1"),
        ("TOKENWARDEN_REDIS_WAIT_REPLICAS", "many"),
        ("TOKENWARDEN_REDIS_WAIT_TIMEOUT_MS", "0"),
    ],
)
def test_a_bad_wait_setting_is_refused(variable, value):
    from worker.errors import ConfigError

    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_a_wait_no_replica_confirms_is_a_warning_and_the_decisions_stand(
    settings, redis_client, clock, caplog
):
    # Given a Redis without replicas, and tokenwarden asked to wait for one, briefly
    app = App(replace(settings, redis_wait_replicas=1, redis_wait_timeout_ms=20), clock=clock)
    decisions = [
        Decision(now=clock.now, audit=AuditEntry("ignored", {"id": f"x-{i}"}), note="drill")
        for i in range(3)
    ]
    try:
        # When a batch of decisions, and one alone, are applied
        applied = app.store.events.apply_many(decisions[:2])
        applied.append(app.store.events.apply(decisions[2]))
        # and an event that cannot be handled is kept as a dead letter
        app.store.events.record_dead({"id": "bad"}, "not an event", clock.now)
    finally:
        app.close()
    # Then they are written, and a warning says what the missing replica means
    assert [a.outcome for a in applied] == ["applied"] * 3
    assert redis_client.xlen(k.AUDIT) == 3
    warnings = [r for r in caplog.records if "redis_replicas_behind" in r.getMessage()]
    assert redis_client.xlen(k.DEAD) == 1
    assert len(warnings) == 3
    assert "a dead letter" in warnings[2].getMessage()
    assert "a failover before a replica catches up loses it" in warnings[0].getMessage()

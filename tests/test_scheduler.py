"""The scheduler against a real Redis: warnings at each threshold, exactly once, even with
two schedulers; a leader killed with SIGKILL replaced; `scan` and `status` as a user runs them."""

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest

from events import catalog
from scheduler.scan import Scanner
from scheduler.service import SchedulerService
from tests.helpers import TOKENWARDEN, wait_until
from tests.helpers import install as install_token
from worker.config import SchedulerSettings
from worker.store import keys as k

DEFAULT = SchedulerSettings().thresholds


def install(cli, clock, tmp_path, server, days_left, user="admin@school.edu", consumer=None):
    """A token for `server` (added if new) with `days_left`, downloaded a year before expiry."""
    if cli("servers", "show", server).exit_code != 0:
        assert cli("servers", "add", server).exit_code == 0
    return install_token(
        cli,
        clock,
        tmp_path,
        server,
        user,
        clock.now - timedelta(days=365 - days_left),
        days_left=days_left,
        consumer=consumer or "CK_" + "a" * 96,
    )


def sent(app, event_type=None):
    return [e for e in app.store.events.outbox(limit=100_000) if event_type in (None, e["type"])]


def scan(app, clock, **options):
    return Scanner(app.store, DEFAULT).scan(clock.now, **options)


def test_a_token_installed_with_ten_days_left_gets_the_fourteen_day_warning_once(
    cli, app, clock, tmp_path
):
    install(cli, clock, tmp_path, "Lab", days_left=10)
    report = scan(app, clock)
    [warning] = report.warnings
    assert (warning.type, warning.level, warning.days_left) == (catalog.EXPIRY_APPROACHING, 14, 10)
    [event] = sent(app, catalog.EXPIRY_APPROACHING)
    assert event["subject"] == "Lab"
    assert event["source"] == catalog.SOURCE_SCHEDULER
    assert {
        key: event["data"][key]
        for key in ("server", "days_left", "threshold_days", "downloaded_by")
    } == {
        "server": "Lab",
        "days_left": 10,
        "threshold_days": 14,
        "downloaded_by": "admin@school.edu",
    }
    # inside renew-before (30 days by default): the renewal opens, through the same path as
    # the actors
    [opened] = json.loads(cli("replacements", "list", "--json").stdout)
    assert opened["reasons"][0]["type"] == catalog.SCHEDULED_RENEWAL
    assert opened["urgency"] == "planned"
    # and a second scan at the same moment sends nothing
    assert scan(app, clock).warnings == []
    assert len(sent(app, catalog.EXPIRY_APPROACHING)) == 1


def test_each_threshold_warns_once_then_expiry_once(cli, app, clock, tmp_path):
    install(cli, clock, tmp_path, "Lab", days_left=200)
    start = clock.now
    seen = []
    for day in range(0, 205):
        clock.now = start + timedelta(days=day, hours=1)
        seen += [(w.type, w.level) for w in scan(app, clock).warnings]
    assert seen == [(catalog.EXPIRY_APPROACHING, t) for t in DEFAULT] + [(catalog.EXPIRED, 0)]
    # the renewal opened 30 days before; expiry adds a reason: the token no longer works
    [opened] = json.loads(cli("replacements", "list", "--json").stdout)
    assert [r["type"] for r in opened["reasons"]] == [catalog.SCHEDULED_RENEWAL, catalog.EXPIRED]
    assert opened["urgency"] == "immediate"
    assert app.redis.zcard(k.TOKENS_NEXT_CHECK) == 0


def test_after_a_long_gap_only_the_most_urgent_threshold_crossed_is_sent(cli, app, clock, tmp_path):
    install(cli, clock, tmp_path, "Lab", days_left=200)
    assert scan(app, clock).warnings == []
    clock.now += timedelta(days=198)  # the scheduler was down for months: 2 days left
    assert [(w.level, w.days_left) for w in scan(app, clock).warnings] == [(3, 2)]


def test_a_replaced_token_is_no_longer_warned_about(cli, app, clock, tmp_path):
    install(cli, clock, tmp_path, "Lab", days_left=20)
    assert [w.level for w in scan(app, clock).warnings] == [30]
    install(cli, clock, tmp_path, "Lab", days_left=365)
    clock.now += timedelta(days=21)
    assert scan(app, clock).warnings == []
    assert [e["data"]["server"] for e in sent(app, catalog.EXPIRY_APPROACHING)] == ["Lab"]
    assert json.loads(cli("replacements", "list", "--json").stdout) == []


def test_two_scans_racing_send_each_warning_once(cli, app, clock, tmp_path, settings):
    from worker.bootstrap import App

    for i in range(30):
        install(
            cli, clock, tmp_path, f"Room {i}", days_left=5 + i % 3, consumer="CK_" + f"{i:02d}" * 48
        )
    other = App(settings, clock=clock)
    reports = []
    threads = [
        threading.Thread(
            target=lambda a=a: reports.append(Scanner(a.store, DEFAULT, batch=7).scan(clock.now))
        )
        for a in (app, other)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    warned = [w.token_id for r in reports for w in r.warnings]
    assert len(warned) == len(set(warned)) == 30
    assert len(sent(app, catalog.EXPIRY_APPROACHING)) == 30
    assert len({e["id"] for e in sent(app, catalog.EXPIRY_APPROACHING)}) == 30


def test_two_schedulers_started_together_warn_once(cli, app, clock, tmp_path, settings):
    from worker.bootstrap import App

    for i in range(5):
        install(cli, clock, tmp_path, f"Room {i}", days_left=10, consumer="CK_" + f"{i:02d}" * 48)
    quick = SchedulerSettings(scan_interval_s=1, lease_ttl_s=3)
    quick_settings = replace(settings, scheduler=quick)
    services = [SchedulerService(App(quick_settings, clock=clock)) for _ in range(2)]
    for service in services:
        service.start()
    try:
        wait_until(lambda: len(sent(app, catalog.EXPIRY_APPROACHING)) == 5, 30, "5 warnings")
        # more scans come and go: each replica scans again (only the leader acts)
        for service in services * 3:
            service.scan_if_leader()
        assert sum(s.leader for s in services) == 1
    finally:
        for service in services:
            service.stop()
    assert len(sent(app, catalog.EXPIRY_APPROACHING)) == 5
    assert app.redis.get(k.SCHEDULER_LEADER) is None, "a clean stop hands the lease back"


@pytest.mark.slow
def test_a_leader_killed_with_sigkill_is_replaced_by_another_replica(
    settings, redis_client, cli, app, clock, tmp_path
):
    # Given two replicas with the default lease
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "TOKENWARDEN_MASTER_KEY": settings.master_key,
        "TOKENWARDEN_DATA_DIR": str(tmp_path / "var"),
        "TOKENWARDEN_LOG_LEVEL": "warning",
    }
    replicas = [
        subprocess.Popen(
            [TOKENWARDEN, "scheduler"],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        wait_until(
            lambda: redis_client.get(k.SCHEDULER_LEADER) is not None, 30, "a replica to lead"
        )
        leader = redis_client.get(k.SCHEDULER_LEADER)
        victim = next(p for p in replicas if p.pid == int(leader.split("-")[-2]))
        # When the leader is killed with SIGKILL, and a token becomes due meanwhile
        os.killpg(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        install(cli, clock, tmp_path, "Lab", days_left=2)
        # Then the other takes the lease, and scans at once (how fast: `make bench`)
        wait_until(
            lambda: redis_client.get(k.SCHEDULER_LEADER) not in (None, leader), 60, "a takeover"
        )
        took_over = time.monotonic() - killed_at
        # (the replicas run on the wall clock: to them the token has expired)
        wait_until(
            lambda: sent(app, catalog.EXPIRED) or sent(app, catalog.EXPIRY_APPROACHING),
            30,
            "the new leader to scan",
        )
        print(f"taken over in {took_over:.1f} s")
    finally:
        for process in replicas:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)


def test_scan_dry_run_previews_a_date_and_changes_nothing(cli, app, clock, tmp_path, snapshot):
    install(cli, clock, tmp_path, "Lab", days_left=100)
    before = snapshot()
    result = cli(
        "scan",
        "--dry-run",
        "--now",
        (clock.now + timedelta(days=95)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--json",
    )
    assert result.exit_code == 0, result.output
    preview = json.loads(result.stdout)
    assert [(w["type"], w["threshold_days"], w["days_left"]) for w in preview["warnings"]] == [
        (catalog.EXPIRY_APPROACHING, 7, 5)
    ]
    assert snapshot() == before
    table = cli(
        "scan",
        "--dry-run",
        "--now",
        (clock.now + timedelta(days=95)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    assert "would send 1 warnings" in table.stdout


def test_scan_sends_and_reports(cli, app, clock, tmp_path):
    install(cli, clock, tmp_path, "Lab", days_left=25)
    result = cli("scan")
    assert result.exit_code == 0
    assert "sent 1 warnings" in result.stdout
    assert "no warning to send" in cli("scan").stdout


@pytest.mark.parametrize(
    ("variables", "args", "message"),
    [
        ({"TOKENWARDEN_EXPIRY_THRESHOLDS": ""}, ("scan",), "TOKENWARDEN_EXPIRY_THRESHOLDS"),
        ({"TOKENWARDEN_EXPIRY_THRESHOLDS": "30,-1"}, ("scheduler",), "1 to 366 days"),
        ({"TOKENWARDEN_EXPIRY_THRESHOLDS": "thirty"}, ("status",), "not a whole number"),
        ({"TOKENWARDEN_SCAN_INTERVAL": "often"}, ("scheduler",), "TOKENWARDEN_SCAN_INTERVAL"),
        ({}, ("scan", "--now", "next week"), "not an RFC 3339 time"),
    ],
)
def test_bad_scheduler_settings_are_one_line_at_start_up(
    settings, redis_client, tmp_path, variables, args, message
):
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "TOKENWARDEN_MASTER_KEY": settings.master_key,
        "TOKENWARDEN_DATA_DIR": str(tmp_path),
        **variables,
    }
    result = subprocess.run(
        [TOKENWARDEN, *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


def test_status_orders_by_urgency_and_exits_for_monitoring(cli, app, clock, tmp_path):
    assert cli("status").exit_code == 0  # nothing yet is fine
    install(cli, clock, tmp_path, "Fine", days_left=300)
    assert cli("status").exit_code == 0
    install(cli, clock, tmp_path, "Soon", days_left=100, consumer="CK_" + "b" * 96)
    assert cli("status").exit_code == 0  # warned about, but renewal is not due yet
    assert cli("servers", "policy", "Soon", "--renew-before", "120").exit_code == 0
    assert cli("status").exit_code == 1
    install(
        cli, clock, tmp_path, "Dead", days_left=2, user="gone@school.edu", consumer="CK_" + "c" * 96
    )
    clock.now += timedelta(days=3)
    result = cli("status", "--json")
    assert result.exit_code == 2
    rows = json.loads(result.stdout)
    assert [(r["server"], r["state"]) for r in rows] == [
        ("Dead", "expired"),
        ("Soon", "due"),
        ("Fine", "ok"),
    ]
    assert rows[0]["days_left"] == 0
    table = cli("status").stdout
    assert table.index("Dead") < table.index("Soon") < table.index("Fine")


def test_status_counts_a_token_that_no_longer_works_as_expired(cli, app, clock, tmp_path):
    install(cli, clock, tmp_path, "Lab", days_left=300)
    handler = app.handler
    from events.cloudevent import new_event

    handler.handle(
        new_event(catalog.USER_LEFT, {"user": "admin@school.edu"}, source="t"),
        received_at=clock.now,
        now=clock.now,
    )
    result = cli("status", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)[0]["state"] == "replace now"


def test_run_starts_the_worker_and_the_scheduler(settings, redis_client, tmp_path):
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "TOKENWARDEN_MASTER_KEY": settings.master_key,
        "TOKENWARDEN_DATA_DIR": str(tmp_path),
    }
    process = subprocess.Popen(
        [TOKENWARDEN, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        lines = []
        while not any("scheduler_started" in line for line in lines):
            assert time.monotonic() < deadline
            lines.append(process.stderr.readline())
        started = next(line for line in lines if "tokenwarden_started" in line)
        assert '"components": ["worker", "intake", "scheduler"]' in started
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0
    assert "scheduler_stopped" in rest and "worker_stopped" in rest
    assert "intake_stopped" in rest


def test_raising_the_thresholds_brings_next_checks_forward(cli, app, clock, tmp_path):
    install(cli, clock, tmp_path, "Lab", days_left=170)
    assert scan(app, clock).warnings == []  # next check at 120 days left
    wider = Scanner(app.store, (180, 90, 30))
    assert [w.level for w in wider.scan(clock.now).warnings] == [180]


def test_a_vanished_token_in_the_index_does_not_end_the_scan_early(cli, app, clock, tmp_path):
    for i in range(5):
        install(cli, clock, tmp_path, f"Room {i}", days_left=10, consumer="CK_" + f"{i:02d}" * 48)
    app.redis.zadd(k.TOKENS_NEXT_CHECK, {"tok_gone": 0})
    preview = Scanner(app.store, DEFAULT, batch=3).scan(clock.now, dry_run=True)
    assert len(preview.warnings) == 5
    assert app.redis.zscore(k.TOKENS_NEXT_CHECK, "tok_gone") == 0, "a dry run changed nothing"
    assert len(Scanner(app.store, DEFAULT, batch=3).scan(clock.now).warnings) == 5
    assert app.redis.zscore(k.TOKENS_NEXT_CHECK, "tok_gone") is None


def test_a_scheduler_that_lost_its_lease_stops_scanning(cli, app, clock, tmp_path):
    for i in range(4):
        install(cli, clock, tmp_path, f"Room {i}", days_left=10, consumer="CK_" + f"{i:02d}" * 48)
    asked = []

    def leader_once():
        asked.append(1)
        return len(asked) == 1

    report = Scanner(app.store, DEFAULT, batch=2).scan(clock.now, still_leader=leader_once)
    assert len(report.warnings) == 2  # the first round, then it stepped back

"""One settings object, read once (issue 10, item 4): every variable through the parser for
its kind, as tables; a wrong value is one line naming the variable; nothing reads the
environment after start-up."""

import ast
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from worker.bootstrap import App
from worker.config import Settings
from worker.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-value"


def setting(settings: Settings, path: str):
    """`notify.smtp.port` -> settings.notify.smtp.port."""
    value = settings
    for name in path.split("."):
        value = getattr(value, name)
    return value


@pytest.mark.parametrize(
    ("variables", "path", "expected"),
    [
        ({}, "redis_url", "redis://127.0.0.1:6379/0"),
        ({"REDIS_URL": " rediss://h:6380/2 "}, "redis_url", "rediss://h:6380/2"),
        ({"REDIS_URL": "unix:///run/redis.sock"}, "redis_url", "unix:///run/redis.sock"),
        ({"TOKENWARDEN_DATA_DIR": "/srv/tw"}, "data_dir", Path("/srv/tw")),
        ({"TOKENWARDEN_MASTER_KEY": ""}, "master_key", None),
        ({"TOKENWARDEN_LOG_LEVEL": "DEBUG"}, "log_level", "debug"),
        ({"TOKENWARDEN_LOG_LEVEL": "  "}, "log_level", "info"),
        ({"TOKENWARDEN_LOG_FORMAT": "json"}, "log_format", "json"),
        ({"TOKENWARDEN_WORKER_PROCESSES": "64"}, "worker_processes", 64),
        ({"TOKENWARDEN_WORKER_THREADS": " 3 "}, "worker_threads", 3),
        ({"TOKENWARDEN_POLL_INTERVAL_MS": ""}, "poll_interval_ms", 50),
        ({"TOKENWARDEN_HEARTBEAT_TIMEOUT": "2"}, "heartbeat_timeout_s", 2),
        ({"TOKENWARDEN_WEBHOOK_TIMEOUT": "0.5"}, "notify.webhook_timeout_s", 0.5),
        ({"TOKENWARDEN_WEBHOOK_RETRY_SCHEDULE": "2, 4"}, "notify.retry_schedule_s", (2, 4)),
        ({"TOKENWARDEN_WEBHOOK_RETRY_SCHEDULE": "9,9"}, "notify.retry_schedule_s", (9, 9)),
        ({}, "notify.retry_schedule_s", (5, 300, 1800, 7200, 18000, 36000, 36000)),
        ({"TOKENWARDEN_WEBHOOK_RETRY_JITTER": "0"}, "notify.retry_jitter", 0.0),
        ({}, "notify.smtp", None),
        ({"TOKENWARDEN_SMTP_HOST": "mail"}, "notify.smtp.port", 587),
        ({"TOKENWARDEN_SMTP_HOST": "mail"}, "notify.smtp.starttls", True),
        (
            {"TOKENWARDEN_SMTP_HOST": "mail", "TOKENWARDEN_SMTP_STARTTLS": "No"},
            "notify.smtp.port",
            25,
        ),
        (
            {"TOKENWARDEN_SMTP_HOST": "mail", "TOKENWARDEN_SMTP_PORT": "2525"},
            "notify.smtp.port",
            2525,
        ),
        (
            {"TOKENWARDEN_SMTP_HOST": "mail", "TOKENWARDEN_SMTP_PASSWORD": " p w "},
            "notify.smtp.password",
            " p w ",
        ),
        (
            {"TOKENWARDEN_SMTP_HOST": "mail"},
            "notify.smtp.sender",
            f"tokenwarden@{socket.getfqdn()}",
        ),
        ({}, "scheduler.thresholds", (120, 60, 30, 14, 7, 3, 1)),
        ({"TOKENWARDEN_EXPIRY_THRESHOLDS": "120,60,30"}, "scheduler.thresholds", (120, 60, 30)),
        ({"TOKENWARDEN_EXPIRY_THRESHOLDS": " 7, 30 ,30, 1"}, "scheduler.thresholds", (30, 7, 1)),
        ({"TOKENWARDEN_EXPIRY_THRESHOLDS": "1"}, "scheduler.thresholds", (1,)),
        ({"TOKENWARDEN_SCAN_INTERVAL": "60"}, "scheduler.scan_interval_s", 60),
        ({"TOKENWARDEN_SCHEDULER_LEASE_TTL": "3"}, "scheduler.lease_ttl_s", 3),
    ],
)
def test_each_setting_is_read_by_the_parser_for_its_kind(variables, path, expected):
    assert setting(Settings.from_env(variables), path) == expected


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL 'http://localhost' is not a redis://"),
        ({"REDIS_URL": f"redis://:{SECRET}@h:x/0"}, "REDIS_URL has an invalid host or port"),
        ({"REDIS_URL": f"redis://:{SECRET}@h/db"}, "a Redis database is a number"),
        ({"TOKENWARDEN_MASTER_KEY": SECRET}, "TOKENWARDEN_MASTER_KEY is not 32 bytes"),
        ({"TOKENWARDEN_LOG_LEVEL": "loud"}, "TOKENWARDEN_LOG_LEVEL 'loud' is not one of debug"),
        ({"TOKENWARDEN_LOG_FORMAT": "xml"}, "TOKENWARDEN_LOG_FORMAT 'xml' is not one of auto"),
        ({"TOKENWARDEN_WORKER_PROCESSES": "65"}, "TOKENWARDEN_WORKER_PROCESSES '65' is not a"),
        ({"TOKENWARDEN_WORKER_THREADS": "0"}, "is not a whole number from 1 to 256"),
        ({"TOKENWARDEN_POLL_INTERVAL_MS": "fast"}, "TOKENWARDEN_POLL_INTERVAL_MS 'fast'"),
        ({"TOKENWARDEN_HEARTBEAT_TIMEOUT": "1.5"}, "TOKENWARDEN_HEARTBEAT_TIMEOUT '1.5'"),
        ({"TOKENWARDEN_WEBHOOK_TIMEOUT": "0"}, "is not a number from 0.1 to 300"),
        ({"TOKENWARDEN_WEBHOOK_TIMEOUT": "nan"}, "TOKENWARDEN_WEBHOOK_TIMEOUT 'nan'"),
        ({"TOKENWARDEN_WEBHOOK_RETRY_JITTER": "0.9"}, "TOKENWARDEN_WEBHOOK_RETRY_JITTER"),
        ({"TOKENWARDEN_WEBHOOK_RETRY_SCHEDULE": "5,soon"}, "not a whole number of seconds"),
        ({"TOKENWARDEN_WEBHOOK_RETRY_SCHEDULE": "5,0"}, "each must be 1 to 604800 seconds"),
        ({"TOKENWARDEN_WEBHOOK_RETRY_SCHEDULE": "5,,30"}, "TOKENWARDEN_WEBHOOK_RETRY_SCHEDULE"),
        (
            {"TOKENWARDEN_SMTP_HOST": "mail", "TOKENWARDEN_SMTP_STARTTLS": "maybe"},
            "TOKENWARDEN_SMTP_STARTTLS 'maybe' is not true or false",
        ),
        (
            {"TOKENWARDEN_SMTP_HOST": "mail", "TOKENWARDEN_SMTP_PORT": "70000"},
            "TOKENWARDEN_SMTP_PORT '70000' is not a whole number from 1 to 65535",
        ),
        ({"TOKENWARDEN_EXPIRY_THRESHOLDS": ""}, "is not a list of days"),
        ({"TOKENWARDEN_EXPIRY_THRESHOLDS": " "}, "is not a list of days"),
        ({"TOKENWARDEN_EXPIRY_THRESHOLDS": "30,,7"}, "is not a list of days"),
        ({"TOKENWARDEN_EXPIRY_THRESHOLDS": "30,-7"}, "each must be 1 to 366 days"),
        ({"TOKENWARDEN_EXPIRY_THRESHOLDS": "0"}, "each must be 1 to 366 days"),
        ({"TOKENWARDEN_EXPIRY_THRESHOLDS": "400"}, "each must be 1 to 366 days"),
        ({"TOKENWARDEN_EXPIRY_THRESHOLDS": "thirty"}, "not a whole number of days"),
        ({"TOKENWARDEN_EXPIRY_THRESHOLDS": "7.5"}, "not a whole number of days"),
        ({"TOKENWARDEN_SCAN_INTERVAL": "often"}, "TOKENWARDEN_SCAN_INTERVAL 'often' is not a"),
        ({"TOKENWARDEN_SCHEDULER_LEASE_TTL": "2"}, "whole number of seconds from 3 to 600"),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_variable(variables, message):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(variables)
    text = str(refused.value)
    assert message in text
    assert list(variables)[-1] in text  # the variable that is wrong
    assert "\n" not in text
    assert SECRET not in text


def test_settings_keep_the_environment_they_were_read_from_but_never_show_it():
    # Given settings read from variables that hold secrets
    variables = {
        "TOKENWARDEN_SMTP_HOST": "mail",
        "TOKENWARDEN_SMTP_PASSWORD": SECRET,
        "REDIS_URL": f"redis://:{SECRET}@h:6379/0",
        "PATH": "/usr/bin",
    }
    settings = Settings.from_env(variables)
    # Then worker processes can be handed the same variables
    assert settings.environment == variables
    # And neither they nor the password show in the settings' text
    assert SECRET not in repr(settings)
    assert settings.redis_url_display == "redis://:***@h:6379/0"


def test_only_the_settings_module_reads_the_environment():
    readers = []
    for package in ("events", "worker", "scheduler"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}:
                    readers.append(str(path.relative_to(ROOT)))
    assert readers == ["worker/config.py"]


def test_scan_and_status_use_the_thresholds_read_at_start_up(cli, monkeypatch):
    # Given a process started with valid settings, whose environment changes afterwards
    monkeypatch.setenv("TOKENWARDEN_EXPIRY_THRESHOLDS", "not,days")
    # When the scheduler's commands run
    scan = cli("scan", "--dry-run")
    status = cli("status")
    # Then they use the settings the App carries, not the environment
    assert scan.exit_code == 0, scan.output
    assert status.exit_code == 0, status.output


def test_an_unreachable_redis_names_the_url_the_app_was_started_with(settings, clock, monkeypatch):
    from click.testing import CliRunner

    from worker.cli.main import cli as command

    # Given an App started for a Redis where nothing listens, and another URL in the
    # environment afterwards
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = App(replace(settings, redis_url=f"redis://127.0.0.1:{port}/0"), clock=clock)
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere.example:6379/0")
    # When a command needs Redis
    result = CliRunner().invoke(command, ["servers", "list"], obj=app)
    # Then the one line names the Redis the App was given
    assert result.exit_code == 3
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in result.stderr
    assert "elsewhere" not in result.stderr

"""The installed `tokenwarden` command as a user runs it: real process, real environment."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

TOKENWARDEN = str(Path(sys.executable).parent / "tokenwarden")


def run(*args, env=None, timeout=60):
    return subprocess.run(
        [TOKENWARDEN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def env(redis_url, redis_client, tmp_path):
    return {
        "REDIS_URL": redis_url,
        "TOKENWARDEN_DATA_DIR": str(tmp_path / "var"),
        "TOKENWARDEN_MASTER_KEY": "",
    }


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_redis_is_one_line_naming_where_it_looked(tmp_path):
    port = closed_port()
    result = run(
        "servers",
        "list",
        env={
            "REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}/0",
            "TOKENWARDEN_DATA_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0" in result.stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"TOKENWARDEN_MASTER_KEY": "not-a-key"}, "TOKENWARDEN_MASTER_KEY is not 32 bytes"),
        ({"REDIS_URL": "http://localhost"}, "is not a redis://"),
        ({"TOKENWARDEN_LOG_LEVEL": "loud"}, "TOKENWARDEN_LOG_LEVEL 'loud'"),
    ],
)
def test_a_bad_setting_is_one_line(env, variables, message, tmp_path):
    (tmp_path / "t.p7m").write_text("x")
    assert run("servers", "add", "Lab", env=env).returncode == 0
    result = run(
        "tokens",
        "install",
        "Lab",
        str(tmp_path / "t.p7m"),
        "--downloaded-by",
        "a",
        env={**env, **variables},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert "not-a-key" not in result.stderr


def test_the_cli_in_another_terminal_uses_the_same_data_dir_and_key_file(env, fixture_files):
    # The master key file made by one command is the one the next command reads.
    first = run(
        "servers",
        "add",
        "Main",
        "--cert",
        str(fixture_files / "server-cert.pem"),
        "--key",
        str(fixture_files / "server-key.pem"),
        env=env,
    )
    assert first.returncode == 0, first.stderr
    assert "master_key_created" in first.stderr
    shown = run("secrets", "status", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert '"tw1' not in shown.stdout and "master_key_created" not in shown.stderr


def test_run_starts_and_stops_cleanly_on_sigint_and_sigterm(env):
    for signum in (signal.SIGINT, signal.SIGTERM):
        process = subprocess.Popen(
            [TOKENWARDEN, "run"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        line = ""
        while "tokenwarden_started" not in line and time.monotonic() < deadline:
            line = process.stderr.readline()
        assert "tokenwarden_started" in line
        process.send_signal(signum)
        _, rest = process.communicate(timeout=30)
        assert process.returncode == 0, rest
        assert "tokenwarden_stopped" in rest
        assert "Traceback" not in rest


def test_run_without_redis_fails_in_one_line(tmp_path):
    result = run(
        "run",
        env={
            "REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0",
            "TOKENWARDEN_DATA_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot reach Redis")
    assert "Traceback" not in result.stderr

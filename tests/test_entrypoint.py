"""The installed `tokenwarden` command as a user runs it: real process, real environment."""

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from tests.helpers import TOKENWARDEN


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
        ({"REDIS_URL": "redis://u:pw@localhost:notaport/0"}, "REDIS_URL has an invalid"),
        ({"TOKENWARDEN_WORKER_THREADS": "0"}, "TOKENWARDEN_WORKER_THREADS '0' is not a whole"),
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
        "--offline",
        "--downloaded-by",
        "a",
        env={**env, **variables},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    for secret in ("not-a-key", "u:pw", "pw@"):  # what the rows above pass as secrets
        assert secret not in result.stderr


def test_the_cli_in_another_terminal_uses_the_key_file_of_the_folder_it_runs_in(
    redis_url, redis_client, fixture_files, tmp_path
):
    # Given `make run` and a second terminal in the same folder, with no TOKENWARDEN_* set
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    repo.mkdir()
    elsewhere.mkdir()
    bare = {
        key: value for key, value in os.environ.items() if not key.startswith("TOKENWARDEN_")
    } | {"REDIS_URL": redis_url}

    def run_in(folder, *args):
        return subprocess.run(
            [TOKENWARDEN, *args], capture_output=True, text=True, timeout=60, cwd=folder, env=bare
        )

    first = run_in(
        repo,
        "servers",
        "add",
        "Main",
        "--cert",
        str(fixture_files / "server-cert.pem"),
        "--key",
        str(fixture_files / "server-key.pem"),
    )
    assert first.returncode == 0, first.stderr
    assert "master_key_created" in first.stderr
    assert (repo / "var" / "master.key").exists()
    # Then the second command finds the same key and opens what the first sealed
    status = run_in(repo, "secrets", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert "master_key_created" not in status.stderr
    sealed = json.loads(status.stdout)["sealed_values_by_key_id"]
    assert list(sealed.values()) == [1]
    # And from another folder it refuses to make a second key beside the stored secrets
    stray = run_in(elsewhere, "servers", "add", "Stray")
    assert stray.returncode == 2
    assert "no master key file at" in stray.stderr
    assert stray.stderr.count("\n") == 1
    assert not (elsewhere / "var" / "master.key").exists()
    assert run_in(repo, "servers", "show", "Stray").returncode == 1


def test_a_master_key_that_sealed_nothing_here_is_refused(env):
    from worker.crypto.sealing import generate_master_key

    assert (
        run(
            "servers", "add", "Lab", env={**env, "TOKENWARDEN_MASTER_KEY": generate_master_key()}
        ).returncode
        == 0
    )
    wrong = run(
        "servers", "add", "Gym", env={**env, "TOKENWARDEN_MASTER_KEY": generate_master_key()}
    )
    assert wrong.returncode == 2
    assert "holds none of the master keys that sealed the stored secrets" in wrong.stderr


def test_run_starts_and_stops_cleanly_on_sigint_and_sigterm(env):
    for signum in (signal.SIGINT, signal.SIGTERM):
        process = subprocess.Popen(
            [TOKENWARDEN, "run"],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            line = ""
            while "worker_started" not in line and time.monotonic() < deadline:
                line = process.stderr.readline()
            assert "worker_started" in line
            process.send_signal(signum)
            _, rest = process.communicate(timeout=30)
        finally:
            process.kill()
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

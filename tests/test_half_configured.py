"""Refusing to run half-configured: a worker without the master key that sealed what Redis
holds does not start, and a real scan is never run "in the future"."""

import os
import signal
import subprocess
from datetime import timedelta

import pytest

from tests.helpers import TOKENWARDEN, assert_refused, install
from worker.crypto.sealing import generate_master_key


def at(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("master_key", "message"),
    [
        (None, "there is no master key file at"),
        (generate_master_key(), "holds none of the master keys that sealed the stored secrets"),
    ],
    ids=["no key file", "another key"],
)
def test_a_worker_without_the_master_key_of_the_stored_secrets_refuses_to_start(
    cli, settings, tmp_path, snapshot, master_key, message
):
    # Given a private key sealed in Redis under this installation's master key
    assert cli("servers", "add", "Lab").exit_code == 0
    # When a worker starts with no key file and no TOKENWARDEN_MASTER_KEY, or with another key
    empty = tmp_path / "elsewhere"
    env = {k: v for k, v in os.environ.items() if k != "TOKENWARDEN_MASTER_KEY"}
    env |= {"REDIS_URL": settings.redis_url, "TOKENWARDEN_DATA_DIR": str(empty)}
    if master_key:
        env["TOKENWARDEN_MASTER_KEY"] = master_key
    before = snapshot()
    worker = subprocess.Popen(
        [TOKENWARDEN, "worker", "--processes", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = worker.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)  # it started: its worker processes go too
        worker.wait()
        pytest.fail("the worker started instead of refusing")
    # Then it exits 2 with one line saying what is wrong, having taken and changed nothing
    assert worker.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert snapshot() == before
    assert not (empty / "master.key").exists()


def test_a_scan_with_a_future_now_needs_dry_run_and_changes_nothing(cli, clock, tmp_path, snapshot):
    assert cli("servers", "add", "Lab").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "a@example.org", clock.now, days_left=100)
    future = at(clock.now + timedelta(days=95))
    refused = assert_refused(cli, snapshot, ("scan", "--now", future), "add --dry-run", code=2)
    assert f"--now {future} is in the future" in refused
    assert cli("scan", "--now", future, "--dry-run").exit_code == 0


@pytest.mark.parametrize("days_ago", [0, 1], ids=["present", "past"])
def test_a_scan_with_a_past_or_present_now_still_runs(cli, clock, tmp_path, days_ago):
    assert cli("servers", "add", "Lab").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "a@example.org", clock.now, days_left=25)
    result = cli("scan", "--now", at(clock.now - timedelta(days=days_ago)))
    assert result.exit_code == 0, result.output
    assert "error" not in result.output

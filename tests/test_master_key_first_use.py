"""Many tokenwarden commands started at once on a machine with no master key yet: one key file
is made, and every command uses it (none sees a missing or half-written file)."""

import json
import os
import subprocess

import pytest

from tests.helpers import TOKENWARDEN
from worker.store.keys import MASTER_KEY_IDS

#: Commands started together, as a script or a cron burst would.
PARALLEL = 8

#: Rounds with a fresh data folder and an empty Redis each (the race is in the first moments).
ROUNDS = 4


def first_use_env(redis_url, data_dir):
    env = {k: v for k, v in os.environ.items() if k != "TOKENWARDEN_MASTER_KEY"}
    return {
        **env,
        "REDIS_URL": redis_url,
        "TOKENWARDEN_DATA_DIR": str(data_dir),
        "TOKENWARDEN_LOG_LEVEL": "error",
    }


@pytest.mark.parametrize("round_number", range(ROUNDS))
def test_parallel_first_use_commands_all_succeed_with_one_key(
    redis_url, redis_client, tmp_path, round_number
):
    # Given an empty Redis and a data folder with no master key in it
    env = first_use_env(redis_url, tmp_path / "var")
    # When 8 commands that need the master key start at once
    commands = [
        subprocess.Popen(
            [TOKENWARDEN, "secrets", "status", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PARALLEL)
    ]
    finished = [(c.communicate(timeout=120), c.returncode) for c in commands]
    # Then every one succeeds, and all use the one key the file holds
    assert [(code, stderr) for (_, stderr), code in finished] == [(0, "")] * PARALLEL
    primaries = {json.loads(stdout)["primary_key_id"] for (stdout, _), _ in finished}
    assert len(primaries) == 1
    assert redis_client.smembers(MASTER_KEY_IDS) == primaries

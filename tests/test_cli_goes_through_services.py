"""The CLI goes through services (worker/services, registry, handling, scan): no command
reaches into a store or Redis itself."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [*sorted((ROOT / "worker" / "cli").glob("*.py")), ROOT / "scheduler" / "cli.py"]
#: A call on a store (passing one to a service is how commands use them), or Redis at all.
REACHING_IN = re.compile(r"\bapp\.(?:(?:store|deliveries|listings)(?:\.\w+)+\(|redis\b)")


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_command_calls_a_store_or_redis_itself(path):
    assert REACHING_IN.findall(path.read_text()) == []

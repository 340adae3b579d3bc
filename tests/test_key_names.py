"""Only worker/store/keys.py spells a Redis key name: no module elsewhere in worker/ or
scheduler/, and no Lua script (a script receives its keys in KEYS)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Scripts of the decision side, rewritten to take their keys in KEYS by the decision-core
#: change of issue 10: drop each from here when that lands.
NOT_YET: set[str] = set()


def sources():
    for folder in ("worker", "scheduler"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".lua") and path.name not in NOT_YET:
                yield path


@pytest.mark.parametrize("path", list(sources()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_key_name_is_spelled_outside_keys_py(path):
    if path == ROOT / "worker" / "store" / "keys.py":
        return
    text = path.read_text()
    assert '"tw:' not in text and "'tw:" not in text

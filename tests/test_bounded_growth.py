"""Bounded growth: one cause repeated under new ids (a directory re-sending a change, or anyone
who can publish) must not grow Redis, a replacement or the outgoing events without limit.
Real Redis, a real dramatiq worker, a real webhook receiver."""

import json
import time
from datetime import timedelta

import pytest

from events import catalog
from tests.helpers import DOWNLOADED, install, replacements
from worker.store import keys as k
from worker.store.delivery_store import DISPATCH_GROUP

#: Password changes sent for the one token.
EVENTS = 5000

#: Lines per `emit --file` call.
LINES_PER_FILE = 1000

#: What Redis may grow by for all of them (the audit trail and the de-duplication markers
#: hold one small entry per event, both capped or expiring), in bytes.
GROWTH_ALLOWED = 5 * 1024 * 1024

#: Largest outgoing event allowed, in bytes.
LARGEST_EVENT = 4096


@pytest.fixture
def lab(cli, clock, tmp_path):
    assert cli("servers", "add", "Lab", "--org", "School").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "Teacher@School.edu", DOWNLOADED, days_left=345)
    return "Lab"


def password_change_lines(first: int, count: int) -> list[str]:
    """Password changes of the downloader with distinct ids, one second apart, all after the
    download."""
    start = DOWNLOADED + timedelta(days=1)
    return [
        json.dumps(
            {
                "specversion": "1.0",
                "id": f"hr-{n}",
                "source": "urn:test:hr",
                "type": catalog.PASSWORD_CHANGED,
                "time": (start + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "data": {"user": "teacher@school.edu"},
            }
        )
        for n in range(first, first + count)
    ]


def used_memory(app) -> int:
    return app.redis.info("memory")["used_memory"]


def wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def outbox_dispatched(app) -> bool:
    """Every outgoing event was read and acknowledged by the dispatcher."""
    [group] = [g for g in app.redis.xinfo_groups(k.OUTBOX) if g["name"] == DISPATCH_GROUP]
    return group["pending"] == 0 and group["lag"] == 0


def every_delivery_delivered(cli) -> bool:
    listed = json.loads(cli("deliveries", "list", "--json").stdout)
    return bool(listed) and all(d["status"] == "delivered" for d in listed)


def test_5000_password_changes_for_one_token_merge_into_one_reason_and_redis_stays_small(
    cli, app, lab, receiver, worker, tmp_path
):
    # Given one token, a webhook subscription and a running worker
    assert cli("subscriptions", "add", receiver.url).exit_code == 0
    before = used_memory(app)
    # When its downloader's password change arrives 5,000 times under distinct ids
    for first in range(0, EVENTS, LINES_PER_FILE):
        path = tmp_path / f"events-{first}.jsonl"
        path.write_text("\n".join(password_change_lines(first, LINES_PER_FILE)) + "\n")
        result = cli("emit", "--file", str(path))
        assert result.exit_code == 0, result.output
    worker.drain(timeout_s=300)
    wait_until(lambda: outbox_dispatched(app) and every_delivery_delivered(cli))
    # Then the replacement holds one reason that counts them all, first and last
    [opened] = replacements(cli)
    [reason] = opened["reasons"]
    assert reason["type"] == catalog.PASSWORD_CHANGED
    assert reason["count"] == EVENTS
    assert (reason["id"], reason["last"]["id"]) == ("hr-0", f"hr-{EVENTS - 1}")
    # And the user was told once, in a small event
    sent = app.store.events.outbox(limit=EVENTS + 10)
    assert [e["type"] for e in sent] == [catalog.REPLACEMENT_REQUIRED]
    assert all(len(json.dumps(e)) < LARGEST_EVENT for e in sent)
    assert [len(r.body) < LARGEST_EVENT for r in receiver.received] == [True]
    # And Redis grew by what the audit trail and the de-duplication markers need, no more
    grown = used_memory(app) - before
    assert grown < GROWTH_ALLOWED, f"Redis grew by {grown:,} bytes"

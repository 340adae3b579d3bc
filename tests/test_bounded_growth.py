"""Bounded growth: one cause repeated under new ids (a directory re-sending a change, or anyone
who can publish) must not grow Redis, a replacement or the outgoing events without limit.
Real Redis, a real dramatiq worker, a real webhook receiver."""

import json
from datetime import timedelta

import pytest

from events import catalog
from tests.helpers import DOWNLOADED, emit, install, replacements, wait_until
from worker.names import user_key
from worker.rules.install import LONGEST_TOKEN_LIFE
from worker.store import keys as k
from worker.store.delivery_store import DISPATCH_GROUP

#: Password changes sent for the one token.
EVENTS = 5000

#: Lines per `emit --file` call.
LINES_PER_FILE = 1000

#: What Redis may grow by for all of them (the audit trail and the de-duplication markers
#: hold one small entry per event, both capped or expiring), in bytes.
GROWTH_ALLOWED = 5 * 1024 * 1024

#: The sign counts are written with in tables ("password changed", the sign, 3).
TIMES = "\N{MULTIPLICATION SIGN}"

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
    wait_until(lambda: outbox_dispatched(app) and every_delivery_delivered(cli), 60)
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


def required(app) -> list[dict]:
    return [e for e in app.store.events.outbox() if e["type"] == catalog.REPLACEMENT_REQUIRED]


def test_more_causes_of_a_kind_already_told_send_nothing_and_a_new_kind_is_told(
    cli, app, lab, worker, tmp_path
):
    # Given the downloader's password changed three times (three ids, three times)
    path = tmp_path / "changes.jsonl"
    path.write_text("\n".join(password_change_lines(0, 3)) + "\n")
    assert cli("emit", "--file", str(path)).exit_code == 0
    worker.drain()
    # Then they were told once, about the first
    [told] = required(app)
    assert told["data"]["reason"]["id"] == "hr-0"
    # When they leave
    emit_id = cli("emit", "user-left", "--user", "Teacher@School.edu").stdout.split()[-1]
    worker.drain()
    # Then they are told again, about the departure, with the totals
    [_, again] = required(app)
    assert again["data"]["reason"]["type"] == catalog.USER_LEFT
    assert again["data"]["reason"]["id"] == emit_id
    assert [(r["type"], r["count"]) for r in again["data"]["reasons"]] == [
        (catalog.PASSWORD_CHANGED, 3),
        (catalog.USER_LEFT, 1),
    ]
    assert (again["data"]["reason_count"], again["data"]["event_count"]) == (2, 4)
    assert again["data"]["omitted_events"] == 0
    # And the audit trail says why the repeats sent nothing
    actions = [e["decisions"][0]["action"] for e in app.store.events.audit() if e["decisions"]]
    assert actions.count("reason merged (nothing new to tell)") == 2


def test_a_new_key_staged_again_is_told_again_with_its_certificate(cli, app, lab, worker):
    first = cli("keys", "rotate", "Lab")
    worker.drain()
    second = cli("keys", "rotate", "Lab", "--replace-staged")
    assert second.exit_code == 0, second.output
    worker.drain()
    sent = required(app)
    assert [e["data"]["certificate"] for e in sent] == [first.stdout, second.stdout]
    assert sent[1]["data"]["reason"]["count"] == 2


def test_merged_reasons_read_as_counts_with_first_and_last_in_lists_and_status(
    cli, app, lab, worker, tmp_path
):
    path = tmp_path / "changes.jsonl"
    path.write_text("\n".join(password_change_lines(0, 3)) + "\n")
    assert cli("emit", "--file", str(path)).exit_code == 0
    worker.drain()
    listed = cli("replacements", "list").stdout
    assert (
        f"password changed {TIMES}3 (first 2025-02-10T09:00:00Z, last 2025-02-10T09:00:02Z)"
        in listed
    )
    [opened] = replacements(cli)
    assert (opened["event_count"], opened["omitted_events"]) == (3, 0)
    assert f"password changed {TIMES}3" in cli("status").stdout
    [row] = json.loads(cli("status", "--json").stdout)
    assert (row["replacement"]["because"], row["replacement"]["event_count"]) == (
        f"password changed {TIMES}3",
        3,
    )


def legacy_reasons(count: int) -> list[dict]:
    """A replacement's reasons as recorded before they were merged: one per event."""
    return [
        {
            "type": catalog.PASSWORD_CHANGED,
            "id": f"old-{n}",
            "source": "urn:test:hr",
            "time": f"2025-02-10T10:{n // 60:02d}:{n % 60:02d}Z",
            "urgency": "immediate",
            "rank": 30,
        }
        for n in range(count)
    ]


def test_a_replacement_recorded_one_reason_per_event_is_merged_when_next_read(
    cli, app, lab, worker, clock, tmp_path
):
    # Given a replacement stored before reasons were merged, with 3,000 of them
    emit(cli, "password-changed", "--user", "Teacher@School.edu")
    worker.drain()
    [opened] = replacements(cli)
    key = k.replacement(opened["token_id"])
    app.redis.hset(key, "reasons", json.dumps(legacy_reasons(3000)))
    app.redis.hdel(key, "omitted")
    # Then it reads as one reason
    [reason] = replacements(cli)[0]["reasons"]
    assert (reason["count"], reason["id"], reason["last"]["id"]) == (3000, "old-0", "old-2999")
    # And one more cause of that kind stores it merged
    emit(cli, "password-changed", "--user", "Teacher@School.edu")
    worker.drain()
    assert [r["count"] for r in json.loads(app.redis.hget(key, "reasons"))] == [3001]
    # And the notice that the token was replaced carries it merged
    install(cli, clock, tmp_path, "Lab", "other@school.edu", clock.now, days_left=365)
    [replaced] = [e for e in app.store.events.outbox() if e["type"] == catalog.REPLACED]
    closed = replaced["data"]["closed_replacement"]
    assert [r["count"] for r in closed["reasons"]] == [3001]
    assert (closed["reason_count"], closed["event_count"]) == (1, 3001)


def test_an_audit_entry_keeps_at_most_a_few_kib_of_a_large_event(cli, app, lab, worker, tmp_path):
    # Given an event padded to 60 KB with fields tokenwarden ignores
    event = json.loads(password_change_lines(0, 1)[0])
    event["data"]["notes"] = ["x" * 200] * 300
    path = tmp_path / "large.jsonl"
    path.write_text(json.dumps(event) + "\n")
    assert cli("emit", "--file", str(path)).exit_code == 0
    worker.drain()
    # Then its audit entry keeps what was read from it, in a few KiB
    [stored] = [f["event"] for _, f in app.redis.xrange(k.AUDIT) if f["kind"] == "event"]
    assert len(stored) < LARGEST_EVENT
    [audited] = [e["event"] for e in app.store.events.audit() if e["kind"] == "event"]
    assert (audited["id"], audited["data"]) == ("hr-0", {"user": "teacher@school.edu"})


def test_an_email_says_how_often_and_when_first_and_last():
    from worker.notify.email import compose

    first = {"id": "hr-0", "source": "urn:test:hr", "time": "2025-02-10T09:00:00Z"}
    event = {
        "id": "e1",
        "type": catalog.REPLACEMENT_REQUIRED,
        "data": {
            "server": "Lab",
            "downloaded_by": "Teacher@School.edu",
            "urgency": "immediate",
            "reasons": [
                {
                    "type": catalog.PASSWORD_CHANGED,
                    **first,
                    "count": 3000,
                    "last": {**first, "id": "hr-2999", "time": "2025-02-11T08:00:00Z"},
                },
                {"type": catalog.USER_LEFT, **first, "count": 1, "last": first},
            ],
            "omitted_events": 7,
        },
    }
    text = compose(event, "tw@school.example", "it@school.example").get_content()
    assert (
        "Why: the password of Teacher@School.edu, who downloaded it, changed, 3000 times "
        "(first 2025-02-10T09:00:00Z, last 2025-02-11T08:00:00Z); Teacher@School.edu, who "
        "downloaded it, left the organization (2025-02-10T09:00:00Z); 7 more causes (not "
        "listed)." in " ".join(text.split())
    )


def test_a_user_known_only_from_events_is_forgotten_in_time_and_kept_once_they_hold_a_token(
    cli, app, lab, worker, clock, tmp_path
):
    # Given password changes for a user with no token and for the downloader of one
    emit(cli, "password-changed", "--user", "Nobody@School.edu")
    emit(cli, "password-changed", "--user", "Teacher@School.edu")
    worker.drain()
    # Then the one with no token is forgotten once no token it dooms could be installed
    nobody = k.user(user_key("Nobody@School.edu"))
    assert 0 < app.redis.ttl(nobody) <= LONGEST_TOKEN_LIFE.total_seconds()
    assert app.redis.ttl(k.user(user_key("Teacher@School.edu"))) == -1
    # And once they hold a token, their record stays (their token is listed there)
    assert cli("servers", "add", "Gym").exit_code == 0
    install(cli, clock, tmp_path, "Gym", "nobody@school.edu", DOWNLOADED, days_left=345)
    assert app.redis.ttl(nobody) == -1
    assert sorted(r["server"] for r in replacements(cli)) == ["Gym", "Lab"]

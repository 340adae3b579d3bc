"""Publishing: the `emit` commands and the Python API validate, then enqueue; never decide."""

import json

import pytest

from events import catalog
from tests.helpers import FIXTURE_NOW
from worker.api import Client
from worker.broker import EVENTS_QUEUE
from worker.errors import InvalidEvent
from worker.store import keys as k

GOOD = {
    "specversion": "1.0",
    "id": "e-1",
    "source": "urn:test",
    "type": catalog.USER_LEFT,
    "time": "2025-02-01T10:00:00Z",
    "data": {"user": "a@school.edu"},
}


def queued(app) -> list[dict]:
    """The events waiting in the queue, in order, without handling them."""
    queue = k.broker_queue(EVENTS_QUEUE)
    ids = app.redis.lrange(queue, 0, -1)
    messages = [json.loads(app.redis.hget(f"{queue}.msgs", i)) for i in ids]
    return [event for message in messages for event in message["args"][0]]


def test_emit_names_publish_one_event_each_with_the_given_id_and_time(cli, app):
    result = cli(
        "emit",
        "password-changed",
        "--user",
        "Teacher@School.edu",
        "--id",
        "hr-1",
        "--at",
        "2025-02-28T08:00:00+01:00",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"published {catalog.PASSWORD_CHANGED} hr-1\n"
    [event] = queued(app)
    assert event["data"] == {"user": "Teacher@School.edu"}
    assert event["time"] == "2025-02-28T07:00:00Z"
    assert event["source"] == catalog.SOURCE_CLI
    cli("emit", "token-generated", "--server", "Lab", "--org", "School")
    assert queued(app)[1]["data"] == {"server": "Lab", "org": "School"}


def test_emit_without_time_leaves_it_to_the_receiver(cli, app):
    cli("emit", "user-left", "--user", "a@x")
    assert "time" not in queued(app)[0]


def test_a_file_of_thousands_of_events_is_published_in_few_messages(cli, app, tmp_path):
    lines = [json.dumps({**GOOD, "id": f"e-{i}"}) for i in range(2500)]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n\n")
    result = cli("emit", "--file", str(path))
    assert result.stdout == "published 2500 events\n"
    assert app.redis.hlen(k.broker_messages(EVENTS_QUEUE)) == 25
    assert [e["id"] for e in queued(app)] == [f"e-{i}" for i in range(2500)]


def test_stdin_works_as_a_file(cli, app):
    result = cli("emit", "--file", "-", input=json.dumps(GOOD) + "\n")
    assert result.exit_code == 0, result.output
    assert [e["id"] for e in queued(app)] == ["e-1"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: the event is not JSON"),
        (json.dumps({**GOOD, "type": "com.example.other"}), "line 2: unknown event type"),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "source"}),
            "line 2: field 'source' is missing",
        ),
        (
            json.dumps({**GOOD, "data": {}}),
            "line 2: tokenwarden.directory.user_left event 'e-1': field 'data.user' is missing",
        ),
        (json.dumps({**GOOD, "time": "last tuesday"}), "line 2: field 'time' is not an RFC"),
        (
            json.dumps({**GOOD, "time": "2031-01-01T00:00:00Z"}),
            "line 2: event 'e-1' has a time in the future",
        ),
        (json.dumps({**GOOD, "specversion": "0.3"}), "line 2: field 'specversion'"),
    ],
    ids=["json", "type", "source", "user", "time", "future", "specversion"],
)
def test_a_bad_line_refuses_the_whole_file_naming_the_line(cli, app, tmp_path, line, message):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n" + json.dumps(GOOD) + "\n")
    result = cli("emit", "--file", str(path))
    assert result.exit_code == 1
    assert message in result.stderr
    assert "nothing was published" in result.stderr
    assert result.stderr.count("\n") == 1
    assert queued(app) == []


def test_skip_invalid_publishes_the_good_lines_and_reports_the_rest(cli, app, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([json.dumps(GOOD), "garbage", json.dumps({**GOOD, "id": "e-2"})]))
    result = cli("emit", "--file", str(path), "--skip-invalid")
    assert result.exit_code == 0
    assert "skipped line 2: the event is not JSON" in result.stderr
    assert result.stdout == "published 2 events, skipped 1\n"
    assert [e["id"] for e in queued(app)] == ["e-1", "e-2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("emit", "password-changed", "--user", "  "), "field 'data.user' is invalid"),
        (("emit", "user-left", "--user", "a", "--at", "soon"), "not an RFC 3339 time"),
        (("emit", "user-left", "--user", "a", "--id", ""), "field 'id' is invalid"),
        (("emit", "key-regenerated", "--server", "x" * 300), "at most 256 characters"),
        (("emit",), "give an event name"),
        (("emit", "--file", "/nonexistent/events.jsonl"), "does not exist"),
    ],
)
def test_bad_emits_are_one_line_and_publish_nothing(cli, app, args, message):
    result = cli(*args)
    assert result.exit_code != 0
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert queued(app) == []


def test_the_python_api_publishes_the_same_events(app, settings):
    with Client(settings, clock=lambda: FIXTURE_NOW) as client:
        event = client.user_left("a@school.edu", event_id="api-1")
        assert event.source == catalog.SOURCE_API
        assert client.publish([GOOD, json.dumps({**GOOD, "id": "e-2"})]) == 2
        with pytest.raises(InvalidEvent, match="event 2: field 'id' is missing"):
            client.publish([GOOD, {k: v for k, v in GOOD.items() if k != "id"}])
    assert [e["id"] for e in queued(app)] == ["api-1", "e-1", "e-2"]


def test_an_absurd_time_is_one_clear_line_not_a_traceback(cli, app, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({**GOOD, "time": "9999-12-31T23:59:59-01:00"}) + "\n")
    result = cli("emit", "--file", str(path))
    assert result.exit_code == 1
    assert "field 'time' is out of range" in result.stderr
    assert queued(app) == []

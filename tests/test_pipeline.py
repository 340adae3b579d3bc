"""Events in, decisions out, through a real dramatiq worker on a real Redis."""

from datetime import timedelta

import pytest

from events import catalog
from tests.helpers import DOWNLOADED, emit, install, replacements
from tests.tokenfiles import credentials, encrypt_to


@pytest.fixture
def lab(cli, clock, tmp_path):
    """Server Lab with a token downloaded by Teacher@School.edu 20 days ago."""
    assert cli("servers", "add", "Lab", "--org", "School").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "Teacher@School.edu", DOWNLOADED, days_left=345)
    return "Lab"


def outbox(app, event_type=None):
    return [e for e in app.store.events.outbox() if event_type in (None, e["type"])]


def test_a_password_change_after_the_download_opens_a_replacement(cli, app, worker, lab):
    # When the downloader's password changes (typed in another case)
    event_id = emit(cli, "password-changed", "--user", "teacher@SCHOOL.edu")
    worker.drain()
    # Then the token must be replaced, with the reason
    [opened] = replacements(cli)
    assert opened["server"] == "Lab"
    assert opened["status"] == "open"
    assert opened["urgency"] == "immediate"
    assert [(r["type"], r["id"]) for r in opened["reasons"]] == [
        (catalog.PASSWORD_CHANGED, event_id)
    ]
    assert opened["reasons"][0]["time"] == "2025-03-01T09:00:00Z"
    # And one replacement_required event is in the outbox, with what a receiver needs
    [sent] = outbox(app, catalog.REPLACEMENT_REQUIRED)
    assert sent["specversion"] == "1.0"
    assert sent["subject"] == "Lab"
    assert sent["data"]["server"] == "Lab"
    assert sent["data"]["downloaded_by"] == "Teacher@School.edu"
    assert sent["data"]["expires_at"].endswith("Z")
    assert [r["id"] for r in sent["data"]["reasons"]] == [event_id]
    # And the audit trail shows what was received and decided
    [entry] = [e for e in app.store.events.audit() if e["kind"] == "event"]
    assert entry["event"]["id"] == event_id
    assert entry["decisions"][0]["action"] == "opened"


def test_a_password_change_before_the_download_does_not_touch_the_token(cli, app, worker, lab):
    before = (DOWNLOADED - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    event_id = emit(cli, "password-changed", "--user", "Teacher@School.edu", "--at", before)
    worker.drain()
    assert replacements(cli) == []
    assert outbox(app, catalog.REPLACEMENT_REQUIRED) == []
    # (decided: the user's token was found, and left alone)
    [entry] = [e for e in app.store.events.audit() if e["kind"] == "event"]
    assert (entry["event"]["id"], entry["decisions"], entry["note"]) == (event_id, [], None)


def test_an_unknown_user_affects_nothing_and_is_not_an_error(cli, app, worker, lab):
    emit(cli, "user-left", "--user", "nobody@school.edu")
    worker.drain()
    assert replacements(cli) == []
    assert app.store.events.dead_letters() == []
    [entry] = [e for e in app.store.events.audit() if e["kind"] == "event"]
    assert entry["note"] == "no current token was downloaded by this user"


def test_the_same_event_twice_counts_once(cli, app, worker, lab):
    emit(cli, "user-left", "--user", "Teacher@School.edu", "--id", "hr-4711")
    emit(cli, "user-left", "--user", "Teacher@School.edu", "--id", "hr-4711")
    worker.drain()
    [opened] = replacements(cli)
    assert len(opened["reasons"]) == 1
    assert len(outbox(app, catalog.REPLACEMENT_REQUIRED)) == 1
    assert len([e for e in app.store.events.audit() if e["kind"] == "event"]) == 1


def test_later_causes_add_reasons_to_the_one_open_replacement(cli, app, worker, lab):
    first = emit(cli, "key-regenerated", "--server", "Lab")
    worker.drain()
    second = emit(cli, "user-left", "--user", "Teacher@School.edu")
    worker.drain()
    [opened] = replacements(cli)
    assert [r["id"] for r in opened["reasons"]] == [first, second]
    assert opened["urgency"] == "immediate"  # a departure outranks a new key
    sent = outbox(app, catalog.REPLACEMENT_REQUIRED)
    assert [len(e["data"]["reasons"]) for e in sent] == [1, 2]
    assert sent[0]["id"] != sent[1]["id"]
    assert [e["data"]["urgency"] for e in sent] == ["soon", "immediate"]


def test_keys_rotate_publishes_the_new_key_and_the_notice_carries_its_certificate(
    cli, app, worker, lab
):
    rotated = cli("keys", "rotate", "Lab")
    assert rotated.exit_code == 0, rotated.output
    worker.drain()
    [sent] = outbox(app, catalog.REPLACEMENT_REQUIRED)
    assert sent["data"]["certificate"] == rotated.stdout
    assert sent["data"]["reasons"][0]["type"] == catalog.KEY_REGENERATED
    assert sent["data"]["urgency"] == "soon"


def test_a_new_token_generated_in_the_portal_is_urgent(cli, app, worker, lab):
    emit(cli, "token-generated", "--server", "lab", "--org", "school")
    worker.drain()
    [opened] = replacements(cli)
    assert opened["urgency"] == "immediate"
    assert outbox(app, catalog.REPLACEMENT_REQUIRED)[0]["data"]["certificate"] is None


def test_installing_a_newer_token_closes_the_replacement(cli, app, worker, lab, clock, tmp_path):
    emit(cli, "password-changed", "--user", "Teacher@School.edu")
    worker.drain()
    install(cli, clock, tmp_path, "Lab", "other@school.edu", clock.now, days_left=365)
    assert replacements(cli) == []
    [resolved] = replacements(cli, "--all")
    assert resolved["status"] == "resolved"
    assert resolved["resolved_at"] == "2025-03-01T09:00:00Z"
    [replaced] = outbox(app, catalog.REPLACED)
    assert replaced["data"]["closed_replacement"]["reasons"][0]["type"] == catalog.PASSWORD_CHANGED
    assert replaced["data"]["new_downloaded_by"] == "other@school.edu"


def test_an_event_about_a_token_already_replaced_changes_nothing(
    cli, app, worker, lab, clock, tmp_path
):
    # Given the token was replaced by one downloaded after the password change
    change = clock.now - timedelta(days=2)
    install(
        cli,
        clock,
        tmp_path,
        "Lab",
        "Teacher@School.edu",
        clock.now - timedelta(days=1),
        days_left=364,
    )
    # When the password change arrives late
    emit(
        cli,
        "password-changed",
        "--user",
        "Teacher@School.edu",
        "--at",
        change.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    worker.drain()
    assert replacements(cli, "--all") == []
    assert outbox(app, catalog.REPLACEMENT_REQUIRED) == []
    [entry] = [e for e in app.store.events.audit() if e["kind"] == "event"]
    assert (entry["decisions"], entry["note"]) == ([], None)


def test_a_token_installed_after_its_downloader_changed_password_is_doomed_at_once(
    cli, app, worker, clock, tmp_path
):
    # Given the password change was handled before the token was installed
    assert cli("servers", "add", "Gym").exit_code == 0
    emit(cli, "password-changed", "--user", "coach@school.edu")
    worker.drain()
    # When a token downloaded before the change is installed
    result = install(
        cli, clock, tmp_path, "Gym", "Coach@School.edu", clock.now - timedelta(hours=2)
    )
    # Then it must be replaced from the start
    assert "already doomed" in result.stdout
    [opened] = replacements(cli)
    assert opened["server"] == "Gym"
    assert opened["reasons"][0]["type"] == catalog.PASSWORD_CHANGED


def test_an_event_for_an_unknown_server_is_recorded_with_no_effect(cli, app, worker, lab):
    emit(cli, "token-generated", "--server", "Nowhere")
    worker.drain()
    assert replacements(cli) == []
    [entry] = [e for e in app.store.events.audit() if e["kind"] == "event"]
    assert entry["note"] == "no server named 'Nowhere'"


def test_malformed_events_written_straight_to_the_queue_are_kept_and_skipped(cli, app, worker, lab):
    import dramatiq

    from worker.actors import HANDLE_EVENTS
    from worker.broker import EVENTS_QUEUE

    good = {
        "specversion": "1.0",
        "id": "ok-1",
        "source": "test",
        "type": catalog.USER_LEFT,
        "data": {"user": "Teacher@School.edu"},
    }
    for args in (
        (["not json at all", {"specversion": "1.0", "type": catalog.USER_LEFT}, good], None),
        ("a string, not a list", None),
    ):
        app.broker.enqueue(
            dramatiq.Message(
                queue_name=EVENTS_QUEUE, actor_name=HANDLE_EVENTS, args=args, kwargs={}, options={}
            )
        )
    worker.drain()
    reasons = sorted(d["reason"] for d in app.store.events.dead_letters())
    assert reasons == [
        "field 'id' is missing",
        "the event is not JSON (line 1, column 1)",
        "the message is not a list of events",
    ]
    [opened] = replacements(cli)  # the good event in the same batch was handled
    assert opened["reasons"][0]["id"] == "ok-1"
    shown = cli("events", "dead")
    assert "field 'id' is missing" in shown.stdout


def test_events_that_slip_past_validation_are_dead_lettered_without_holding_the_batch(
    cli, app, worker, lab
):
    import dramatiq

    from worker.actors import HANDLE_EVENTS
    from worker.broker import EVENTS_QUEUE

    base = {
        "specversion": "1.0",
        "source": "test",
        "type": catalog.USER_LEFT,
        "data": {"user": "Teacher@School.edu"},
    }
    batch = [
        {**base, "id": "ancient", "time": "0001-01-01T00:00:00+01:00"},
        {**base, "id": "surrogate", "data": {"user": "Teacher@School.edu", "note": "\ud800"}},
        {**base, "id": "future", "time": "2031-01-01T00:00:00Z"},
        {**base, "id": "numeric-time", "time": 1700000000},
        {**base, "id": "good"},
    ]
    app.broker.enqueue(
        dramatiq.Message(
            queue_name=EVENTS_QUEUE,
            actor_name=HANDLE_EVENTS,
            args=(batch, 10**20),
            kwargs={},
            options={},
        )
    )
    worker.drain()
    reasons = [d["reason"] for d in app.store.events.dead_letters()]
    assert len(reasons) == 4
    assert any("out of range" in r for r in reasons)
    assert any("not valid Unicode" in r for r in reasons)
    assert any("in the future" in r for r in reasons)
    assert any("not an RFC 3339 time" in r for r in reasons)
    [opened] = replacements(cli)
    assert [r["id"] for r in opened["reasons"]] == ["good"]


def test_a_token_downloaded_moments_before_its_token_generated_event_is_that_token(
    cli, app, worker, clock, tmp_path
):
    # Given the portal reported a new token at 09:00:00
    assert cli("servers", "add", "Gym").exit_code == 0
    emit(cli, "token-generated", "--server", "Gym", "--at", "2025-03-01T09:00:00Z")
    worker.drain()
    [entry] = [e for e in app.store.events.audit() if e["kind"] == "event"]
    assert entry["note"] == "the server has no token installed"  # recorded for the install
    # When the token downloaded at 08:59:40 (its file name) is installed
    cert = cli("keys", "export", "Gym").stdout
    path = tmp_path / "Gym_Token_2025-03-01T08-59-40Z_smime.p7m"
    path.write_bytes(encrypt_to(cert, credentials(clock.now + timedelta(days=364))))
    result = cli("tokens", "install", "Gym", str(path), "--offline", "--downloaded-by", "coach@x")
    # Then it is not doomed: it is the token the event announced
    assert result.exit_code == 0, result.output
    assert "doomed" not in result.stdout
    assert replacements(cli) == []


def test_the_certificate_to_upload_stays_with_the_replacement_when_reasons_are_added(
    cli, app, worker, lab
):
    rotated = cli("keys", "rotate", "Lab")
    worker.drain()
    emit(cli, "user-left", "--user", "Teacher@School.edu")
    worker.drain()
    sent = outbox(app, catalog.REPLACEMENT_REQUIRED)
    assert [e["data"]["certificate"] for e in sent] == [rotated.stdout, rotated.stdout]


def test_a_decision_made_just_before_a_newer_token_is_installed_is_made_again(
    cli, app, lab, clock, tmp_path
):
    from events.cloudevent import new_event

    # Given a decision made while the old token was current
    event = new_event(
        catalog.PASSWORD_CHANGED,
        {"user": "Teacher@School.edu"},
        source="t",
        time=clock.now - timedelta(days=2),
    )
    decision = app.handler.decide(event, received_at=clock.now, now=clock.now)
    assert len(decision.replacements) == 1
    # When a token downloaded after the change is installed before the decision applies
    install(
        cli,
        clock,
        tmp_path,
        "Lab",
        "Teacher@School.edu",
        clock.now - timedelta(days=1),
        days_left=364,
    )
    # Then the stale decision is refused, and deciding again changes nothing
    assert app.store.events.apply(decision).outcome == "retry"
    outcome = app.handler.handle(event, received_at=clock.now, now=clock.now)
    assert (outcome.outcome, outcome.decisions) == ("applied", [])
    assert replacements(cli, "--all") == []


def test_a_message_given_up_after_its_retries_is_kept_as_a_dead_letter(app, clock):
    import dramatiq

    from worker.actors import HANDLE_EVENTS
    from worker.middleware.dead_letters import DeadLetterWhenGivenUp

    message = dramatiq.broker.MessageProxy(
        dramatiq.Message(
            queue_name="events",
            actor_name=HANDLE_EVENTS,
            args=([{"id": "x"}], None),
            kwargs={},
            options={"traceback": "Traceback...\nConnectionError: Redis went away"},
        )
    )
    DeadLetterWhenGivenUp(app.store.events, app.now, HANDLE_EVENTS).after_nack(app.broker, message)
    [dead] = app.store.events.dead_letters()
    assert "gave up after its retries (ConnectionError: Redis went away)" in dead["reason"]
    assert '"id": "x"' in dead["payload"]

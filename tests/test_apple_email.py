"""What the e-mail says when Apple refuses a token or waits for new terms: which server, why,
and what to do (a new token for a rejection; accepting the terms, not a new token, for terms)."""

from datetime import UTC, datetime

from events import catalog
from events.cloudevent import outgoing_event
from worker.notify.email import compose


def notice(event_type, **data):
    event = outgoing_event(
        event_type,
        event_id="e-1",
        subject="Lab",
        time=datetime(2026, 11, 27, tzinfo=UTC),
        data={"server": "Lab", "org": "North", **data},
    )
    return compose(event, "tw@example.org", "it@example.org")


def test_a_rejected_token_says_download_and_install_a_new_one():
    message = notice(
        catalog.TOKEN_REJECTED, apple_code="token_rejected", first_seen_at="2026-11-27T06:00:00Z"
    )
    text = message.get_content()
    assert message["Subject"] == "Apple rejected the server token of Lab: replace it now"
    assert "(token_rejected), first at 2026-11-27T06:00:00Z" in text
    assert "download a new server token" in text
    assert 'tokenwarden tokens install "Lab"' in text


def test_terms_waiting_say_accept_them_and_that_a_new_token_does_not_help():
    message = notice(catalog.TERMS_NOT_ACCEPTED, since="2026-11-27T06:00:00Z")
    text = message.get_content()
    assert message["Subject"] == "New Apple terms wait to be accepted for Lab"
    assert "Administrator role" in text and "accepts the new terms" in text
    assert "A new token does not help" in text
    assert "since 2026-11-27T06:00:00Z" in text


def test_terms_accepted_say_nothing_more_to_do():
    message = notice(catalog.TERMS_ACCEPTED, since="2026-11-27T06:00:00Z")
    assert message["Subject"] == "Apple terms accepted for Lab"
    assert "Nothing more to do" in message.get_content()

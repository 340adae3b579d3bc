"""The pure rules deciding which tokens a cause dooms."""

from datetime import UTC, datetime, timedelta

import pytest

from events import catalog
from worker.records import TOKEN_SUPERSEDED, Token
from worker.rules.replacement import Cause, for_new_token, for_server_cause, for_user_cause

T = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def token(
    token_id="tok_a",
    user="Admin@School.edu",
    downloaded_at=T - timedelta(days=10),
    status="current",
):
    return Token(
        id=token_id,
        server_id="srv_1",
        consumer_id="c",
        fingerprint=token_id,
        downloaded_by=user,
        downloaded_at=downloaded_at,
        expires_at=downloaded_at + timedelta(days=365),
        installed_at=downloaded_at,
        key_id="key_1",
        status=status,
    )


def cause(event_type=catalog.PASSWORD_CHANGED, at=T, event_id="e1"):
    return Cause(type=event_type, id=event_id, source="test", time=at)


@pytest.mark.parametrize("event_type", sorted(catalog.USER_EVENTS))
def test_a_user_cause_dooms_their_tokens_downloaded_before_it(event_type):
    tokens = [
        token("tok_before", downloaded_at=T - timedelta(seconds=1)),
        token("tok_after", downloaded_at=T + timedelta(seconds=1)),
        token("tok_same_moment", downloaded_at=T),
    ]
    needs = for_user_cause(cause(event_type), "admin@school.EDU", tokens)
    assert [n.token.id for n in needs] == ["tok_before"]


def test_a_user_cause_leaves_other_users_and_superseded_tokens_alone():
    tokens = [token("tok_other", user="someone@else"), token("tok_old", status=TOKEN_SUPERSEDED)]
    assert for_user_cause(cause(), "admin@school.edu", tokens) == []


def test_an_unknown_user_affects_nothing():
    tokens = [token("tok_a", user="admin@school.edu"), token("tok_b", user="teacher@school.edu")]
    assert for_user_cause(cause(), "nobody@nowhere", tokens) == []


def test_a_new_key_dooms_the_current_token_and_carries_the_certificate_to_upload():
    needs = for_server_cause(cause(catalog.KEY_REGENERATED), token(), "-----BEGIN CERT")
    assert [(n.token.id, n.certificate) for n in needs] == [("tok_a", "-----BEGIN CERT")]


def test_a_new_token_in_the_portal_dooms_the_installed_one_immediately():
    needs = for_server_cause(cause(catalog.TOKEN_GENERATED), token(), "-----BEGIN CERT")
    assert needs[0].certificate is None
    assert needs[0].cause.urgency is catalog.IMMEDIATE


def test_a_server_cause_before_the_download_or_without_token_dooms_nothing():
    assert (
        for_server_cause(cause(catalog.TOKEN_GENERATED, at=T - timedelta(days=30)), token(), None)
        == []
    )
    assert for_server_cause(cause(catalog.TOKEN_GENERATED), None, None) == []


def test_a_token_installed_after_a_cause_it_predates_is_doomed_from_the_start():
    new = token(downloaded_at=T - timedelta(hours=1))
    recorded = [
        cause(catalog.PASSWORD_CHANGED, at=T, event_id="pw"),
        cause(catalog.USER_LEFT, at=T - timedelta(days=1), event_id="left-earlier"),
    ]
    assert [n.cause.id for n in for_new_token(new, recorded)] == ["pw"]


def test_urgency_ranks_put_dead_tokens_before_doomed_ones():
    assert catalog.IMMEDIATE.rank > catalog.SOON.rank
    assert cause(catalog.KEY_REGENERATED).urgency is catalog.SOON

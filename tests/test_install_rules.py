"""The pure rule deciding whether a token may be installed."""

from datetime import UTC, datetime, timedelta

import pytest

from worker.errors import ConsumerKeyChanged, InvalidTime, StaleToken, TokenExpired
from worker.records import Token
from worker.rules.install import InstallOutcome, NewToken, check_install

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def installed(expires_at, consumer="c1", fingerprint="f1"):
    return Token(
        id="tok_1",
        server_id="srv_1",
        consumer_id=consumer,
        fingerprint=fingerprint,
        downloaded_by="a@x",
        downloaded_at=expires_at - timedelta(days=365),
        expires_at=expires_at,
        installed_at=NOW - timedelta(days=30),
        key_id="key_1",
    )


def new(expires_at, consumer="c1", fingerprint="f2", downloaded_at=None):
    return NewToken(
        consumer_id=consumer,
        fingerprint=fingerprint,
        expires_at=expires_at,
        downloaded_at=downloaded_at or expires_at - timedelta(days=365),
    )


def decide(candidate, current, allow=False):
    return check_install(candidate, current, now=NOW, allow_consumer_change=allow, source="f")


def test_a_first_token_is_installed():
    assert decide(new(NOW + timedelta(days=300)), None) is InstallOutcome.INSTALL


def test_a_newer_token_supersedes_the_installed_one():
    assert (
        decide(new(NOW + timedelta(days=365)), installed(NOW + timedelta(days=100)))
        is InstallOutcome.INSTALL
    )


def test_the_same_token_again_is_already_installed_even_after_it_expired():
    current = installed(NOW - timedelta(days=1), fingerprint="same")
    assert (
        decide(new(NOW - timedelta(days=1), fingerprint="same"), current)
        is InstallOutcome.ALREADY_INSTALLED
    )


@pytest.mark.parametrize("days", [0, -1, -400])
def test_an_expired_token_is_refused_saying_when_it_expired(days):
    with pytest.raises(TokenExpired, match="expired at 20"):
        decide(new(NOW + timedelta(days=days)), None)


@pytest.mark.parametrize("delta", [timedelta(days=-1), timedelta(0)])
def test_a_token_not_newer_than_the_installed_one_is_stale(delta):
    current = installed(NOW + timedelta(days=200))
    with pytest.raises(StaleToken, match="older than the installed token"):
        decide(new(current.expires_at + delta), current)


def test_a_token_from_another_consumer_needs_the_flag():
    current = installed(NOW + timedelta(days=100), consumer="c1")
    candidate = new(NOW + timedelta(days=365), consumer="c2")
    with pytest.raises(ConsumerKeyChanged, match="--allow-server-change"):
        decide(candidate, current)
    assert decide(candidate, current, allow=True) is InstallOutcome.INSTALL


@pytest.mark.parametrize(
    ("downloaded_at", "message"),
    [
        (NOW + timedelta(hours=1), "in the future"),
        (NOW + timedelta(days=400), "in the future"),
        (NOW - timedelta(days=400), "more than a year before"),
    ],
)
def test_implausible_download_times_are_refused(downloaded_at, message):
    candidate = new(NOW + timedelta(days=300), downloaded_at=downloaded_at)
    with pytest.raises(InvalidTime, match=message):
        decide(candidate, None)


def test_a_download_a_leap_year_before_expiry_is_plausible():
    expires = datetime(2028, 2, 29, 12, 0, tzinfo=UTC)
    candidate = new(expires, downloaded_at=datetime(2027, 2, 28, 12, 0, tzinfo=UTC))
    assert (
        check_install(
            candidate,
            None,
            now=datetime(2027, 3, 1, tzinfo=UTC),
            allow_consumer_change=False,
            source="f",
        )
        is InstallOutcome.INSTALL
    )

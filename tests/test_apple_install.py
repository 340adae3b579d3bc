"""`tokens install` asks Apple first: who downloaded the token, which server entry it belongs
to, whether Apple refuses it. Against the signature-checking fake of Apple's service
(tests/apple_fake.py), through the real CLI and Redis."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.helpers import FIXTURE_NOW, assert_refused
from tests.tokenfiles import credentials, encrypt_to
from worker.store import keys as k


@pytest.fixture
def settings(settings, apple):
    """The app's Apple is the fake."""
    return replace(settings, apple=replace(settings.apple, url=apple.url))


@pytest.fixture
def lab(cli):
    assert cli("servers", "add", "Lab", "--org", "School").exit_code == 0
    return "Lab"


def token_file(cli, tmp_path, server="Lab", *, days=300, consumer=None, name="token"):
    """A token file for the server's current key, and its credentials (to enroll at Apple)."""
    creds = credentials(FIXTURE_NOW + timedelta(days=days), consumer)
    path = tmp_path / f"{name}.p7m"
    path.write_bytes(encrypt_to(cli("keys", "export", server).stdout, creds))
    return path, creds


def listed(cli) -> dict:
    [token] = json.loads(cli("tokens", "list", "--json").stdout)
    return token


def test_apple_names_the_downloader_and_the_server(cli, lab, apple, tmp_path):
    path, creds = token_file(cli, tmp_path)
    account = apple.enroll(
        creds, admin_id="Admin@School.example", server_name="Lab MDM", org_name="Example School"
    )

    result = cli("tokens", "install", "Lab", str(path))

    assert result.exit_code == 0, result.output
    assert "downloaded by Admin@School.example" in result.stdout
    assert result.stderr == ""
    token = listed(cli)
    assert token["downloaded_by"] == "Admin@School.example"
    assert token["apple"]["verdict"] == "accepted"
    assert token["apple"]["server_uuid"] == account["server_uuid"]
    assert token["apple"]["server_name"] == "Lab MDM"
    assert token["apple"]["org_name"] == "Example School"
    assert token["apple"]["last_confirmed_at"] == "2025-03-01T09:00:00Z"
    shown = cli("servers", "show", "Lab").stdout
    assert "apple:        accepted, last confirmed 2025-03-01T09:00:00Z" in shown
    assert account["server_uuid"] in shown
    # Apple was asked with a session, as its protocol wants
    assert apple.paths() == ["/session", "/account"]


def test_when_the_person_installing_names_someone_else_apple_wins_with_one_warning(
    cli, lab, apple, tmp_path
):
    path, creds = token_file(cli, tmp_path)
    apple.enroll(creds, admin_id="admin@school.example")

    result = cli("tokens", "install", "Lab", str(path), "--downloaded-by", "typo@school.example")

    assert result.exit_code == 0, result.output
    [line] = result.stderr.strip().splitlines()
    assert "admin@school.example" in line and "typo@school.example" in line
    assert listed(cli)["downloaded_by"] == "admin@school.example"


def test_the_same_downloader_written_differently_is_no_warning(cli, lab, apple, tmp_path):
    path, creds = token_file(cli, tmp_path)
    apple.enroll(creds, admin_id="admin@school.example")
    result = cli("tokens", "install", "Lab", str(path), "--downloaded-by", "ADMIN@School.example")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_a_token_apple_refuses_is_not_installed(cli, lab, apple, tmp_path, snapshot):
    path, creds = token_file(cli, tmp_path)
    apple.enroll(creds)
    apple.revoke(creds["consumer_key"], "token_rejected")
    line = assert_refused(
        cli, snapshot, ("tokens", "install", "Lab", str(path)), "was refused by Apple"
    )
    assert "token_rejected" in line
    for secret in creds.values():
        assert secret not in line


def test_a_token_apple_never_issued_is_refused_as_rejected(cli, lab, apple, tmp_path, snapshot):
    path, _ = token_file(cli, tmp_path)  # never enrolled: Apple does not know its consumer
    assert_refused(cli, snapshot, ("tokens", "install", "Lab", str(path)), "consumer_key_rejected")


def test_apple_unreachable_needs_the_downloader_and_says_so(cli, lab, apple, tmp_path, snapshot):
    path, creds = token_file(cli, tmp_path)
    apple.enroll(creds)
    apple.then(503, 503, 503)
    line = assert_refused(cli, snapshot, ("tokens", "install", "Lab", str(path)), "--downloaded-by")
    assert "Apple could not be asked" in line and "503" in line


def test_apple_unreachable_installs_with_the_downloader_given_and_checks_later(
    cli, lab, apple, tmp_path, redis_client
):
    path, creds = token_file(cli, tmp_path)
    apple.enroll(creds)
    apple.then(503, 503, 503)

    result = cli("tokens", "install", "Lab", str(path), "--downloaded-by", "teacher@school.edu")

    assert result.exit_code == 0, result.output
    assert "Apple could not be asked" in result.stderr
    assert "checked at the next check" in result.stderr
    token = listed(cli)
    assert token["downloaded_by"] == "teacher@school.edu"
    assert token["apple"]["verdict"] == "unknown"
    assert token["apple"]["last_answer"] == "unreachable"
    assert token["apple"]["last_confirmed_at"] is None
    # it is due for a check at once
    assert redis_client.zscore(k.APPLE_NEXT_CHECK, token["token_id"]) is not None


def test_offline_needs_the_downloader(cli, lab, apple, tmp_path, snapshot):
    path, creds = token_file(cli, tmp_path)
    apple.enroll(creds)
    line = assert_refused(
        cli, snapshot, ("tokens", "install", "Lab", str(path), "--offline"), "--downloaded-by"
    )
    assert "--offline" in line
    assert apple.requests == []


def test_offline_asks_apple_nothing(cli, lab, apple, tmp_path):
    path, creds = token_file(cli, tmp_path)
    apple.enroll(creds)
    result = cli("tokens", "install", "Lab", str(path), "--offline", "--downloaded-by", "a@x.edu")
    assert result.exit_code == 0, result.output
    assert apple.requests == []
    assert listed(cli)["apple"]["verdict"] == "unknown"


def test_terms_waiting_at_install_still_install_with_a_warning(cli, lab, apple, tmp_path):
    path, creds = token_file(cli, tmp_path)
    apple.enroll(creds)
    apple.terms(creds["consumer_key"], signed=False)
    result = cli("tokens", "install", "Lab", str(path), "--downloaded-by", "a@x.edu")
    assert result.exit_code == 0, result.output
    assert "accept" in result.stderr
    assert listed(cli)["apple"]["last_answer"] == "terms_not_accepted"


def test_apple_server_entry_decides_whether_a_new_token_is_for_the_same_server(
    cli, lab, apple, tmp_path, snapshot
):
    first, first_creds = token_file(cli, tmp_path, days=300, name="first")
    uuid = apple.enroll(first_creds)["server_uuid"]
    assert cli("tokens", "install", "Lab", str(first)).exit_code == 0
    # Another consumer key, but Apple says: the same server entry. No flag needed.
    second, second_creds = token_file(cli, tmp_path, days=310, name="second")
    apple.enroll(second_creds, server_uuid=uuid)
    again = cli("tokens", "install", "Lab", str(second))
    assert again.exit_code == 0, again.output
    assert "supersedes" in again.stdout
    # A token of another server entry is refused, naming both entries...
    third, third_creds = token_file(cli, tmp_path, days=320, name="third")
    other = apple.enroll(third_creds)["server_uuid"]
    line = assert_refused(
        cli, snapshot, ("tokens", "install", "Lab", str(third)), "different MDM server entry"
    )
    assert uuid in line and other in line and "--allow-server-change" in line
    # ...unless the admin says the server was re-created.
    confirmed = cli("tokens", "install", "Lab", str(third), "--allow-server-change")
    assert confirmed.exit_code == 0, confirmed.output
    assert listed(cli)["apple"]["server_uuid"] == other


def test_installing_the_same_token_again_asks_apple_nothing(cli, lab, apple, tmp_path):
    path, creds = token_file(cli, tmp_path)
    apple.enroll(creds)
    assert cli("tokens", "install", "Lab", str(path)).exit_code == 0
    asked = len(apple.requests)
    again = cli("tokens", "install", "Lab", str(path))
    assert again.exit_code == 0
    assert "already installed" in again.stdout
    assert len(apple.requests) == asked


def test_an_older_download_is_refused_for_what_it_is_before_apple_is_asked(
    cli, lab, apple, tmp_path, snapshot
):
    newer, newer_creds = token_file(cli, tmp_path, days=320, name="newer")
    apple.enroll(newer_creds)
    assert cli("tokens", "install", "Lab", str(newer)).exit_code == 0
    older, older_creds = token_file(cli, tmp_path, days=300, name="older")
    apple.enroll(older_creds)
    apple.revoke(older_creds["consumer_key"])  # as Apple does once a newer one is downloaded
    asked = len(apple.requests)
    assert_refused(
        cli, snapshot, ("tokens", "install", "Lab", str(older)), "older than the installed token"
    )
    assert len(apple.requests) == asked

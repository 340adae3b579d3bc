"""`keys rotate` is one step (issue 9, item 5): the staged key and the key_regenerated decision
(the replacement, the notice with the certificate to upload) are written in one transaction,
so a broker that fails, or a crash after staging, cannot leave a key staged that nobody is
told to upload."""

import json
from datetime import timedelta

from events import catalog
from tests.helpers import DOWNLOADED, install, replacements
from tests.tokenfiles import credentials, encrypt_to
from worker.broker import EVENTS_QUEUE
from worker.store import keys as k


def test_keys_rotate_with_the_broker_failing_still_records_the_replacement(
    cli, app, clock, tmp_path, redis_client
):
    # Given a server with an installed token, and a broker queue no message can be put on
    # (a key of the wrong type where the events queue lives: every enqueue is refused)
    cli("servers", "add", "Lab")
    install(cli, clock, tmp_path, "Lab", "a@x.org", DOWNLOADED)
    redis_client.set(k.broker_queue(EVENTS_QUEUE), "not a list")
    # When a new key is staged, with no worker running
    rotated = cli("keys", "rotate", "Lab")
    # Then the rotation succeeded, and its key change is decided already
    assert rotated.exit_code == 0, rotated.output
    server = json.loads(cli("servers", "show", "Lab", "--json").stdout)
    assert server["staged_key"] is not None
    [replacement] = replacements(cli)
    assert [r["type"] for r in replacement["reasons"]] == [catalog.KEY_REGENERATED]
    # and the notice that tells people to upload the new certificate is in the outbox
    [notice] = [
        json.loads(fields["event"])
        for _, fields in redis_client.xrange(k.OUTBOX)
        if fields["type"] == catalog.REPLACEMENT_REQUIRED
    ]
    assert notice["data"]["certificate"].strip() == rotated.stdout.strip()
    # and the audit trail holds the key_regenerated event the rotation recorded
    [entry] = [e for e in app.store.events.audit() if e["kind"] == "event"]
    assert entry["event"]["type"] == catalog.KEY_REGENERATED
    assert entry["outcome"] == "applied"
    assert f"recorded {catalog.KEY_REGENERATED} {entry['event']['id']}" in rotated.stderr


def test_a_key_staged_before_the_token_is_installed_dooms_that_token_at_install(
    cli, clock, tmp_path
):
    # Given a server whose key was rotated before any token was installed
    cli("servers", "add", "Lab")
    old_certificate = cli("keys", "export", "Lab").stdout
    assert cli("keys", "rotate", "Lab").exit_code == 0
    assert replacements(cli) == []
    # When a token encrypted to the old (still current) key, downloaded earlier, is installed
    path = tmp_path / "old.p7m"
    path.write_bytes(encrypt_to(old_certificate, credentials(clock.now + timedelta(days=300))))
    installed = cli(
        "tokens",
        "install",
        "Lab",
        str(path),
        "--offline",
        "--downloaded-by",
        "a@x.org",
        "--downloaded-at",
        DOWNLOADED.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    assert installed.exit_code == 0, installed.output
    # Then the recorded key change dooms it at once
    [replacement] = replacements(cli)
    assert [r["type"] for r in replacement["reasons"]] == [catalog.KEY_REGENERATED]


def test_a_refused_rotation_records_no_key_change(cli, app, clock, tmp_path, snapshot):
    cli("servers", "add", "Lab")
    install(cli, clock, tmp_path, "Lab", "a@x.org", DOWNLOADED)
    assert cli("keys", "rotate", "Lab").exit_code == 0
    before = snapshot()
    again = cli("keys", "rotate", "Lab")
    assert again.exit_code == 1
    assert "--replace-staged" in again.stderr
    assert snapshot() == before

"""`tokenwarden sources` for the directories asked on a schedule: adding one (each refusal one
line, nothing stored), its credential sealed, `list` and `status` showing how its rounds go,
`set-credential`, and the scheduler's rounds under a lease."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from scheduler.directories import DirectoryRounds
from tests.directory_script import ScriptedDirectory
from tests.helpers import (
    DOWNLOADED,
    FIXTURE_NOW,
    assert_refused,
    every_redis_byte,
    install,
    wait_until,
)
from worker.errors import DirectoryCredentialsRejected
from worker.services.directory_checks import DirectoryChecker
from worker.store import keys as k

TOKEN = "00Okta" + "t" * 36
OKTA = ("--kind", "okta-api", "--org-url", "https://school.okta.com", "--api-token", "-",
        "--domain", "school.example")  # fmt: skip


def add_okta(cli, name="staff", *extra):
    result = cli("sources", "add", name, *OKTA, *extra, input=TOKEN + "\n")
    assert result.exit_code == 0, result.output
    return result


def listed(cli) -> dict[str, dict]:
    return {d["name"]: d for d in json.loads(cli("sources", "list", "--json").stdout)}


def test_an_okta_api_source_is_added_with_its_token_sealed_and_due_at_once(app, cli, redis_url):
    result = add_okta(
        cli, "staff", "--interval", "600", "--map-domain", "school.edu=appleid.school.edu"
    )
    assert "asked every 600 s" in result.stdout
    assert TOKEN not in result.output
    shown = listed(cli)["staff"]
    assert shown["kind"] == "okta-api" and shown["path"] is None
    assert shown["options"] == {"org_url": "https://school.okta.com"}
    assert shown["interval_s"] == 600 and shown["last_success"] is None
    assert TOKEN.encode() not in every_redis_byte(redis_url)
    assert app.sources.open_credentials("staff") == {"api_token": TOKEN}
    assert app.sources.due(FIXTURE_NOW) == ["staff"]


def test_an_entra_source_takes_its_ids_and_secret(app, cli):
    result = cli(
        "sources", "add", "staff-entra", "--kind", "entra",
        "--tenant-id", "0b0c1a2e-3d4f-4a5b-8c6d-7e8f9a0b1c2d",
        "--client-id", "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "--client-secret", "-", "--domain", "school.example",
        input="s3cr3t~value.for-the-app\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert listed(cli)["staff-entra"]["options"]["tenant_id"].startswith("0b0c1a2e")
    assert app.sources.open_credentials("staff-entra") == {
        "client_secret": "s3cr3t~value.for-the-app"
    }


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("--kind", "okta-api", "--api-token", "-"), TOKEN, "needs --org-url"),
        (("--kind", "okta-api", "--org-url", "http://school.okta.com", "--api-token", "-"),
         TOKEN, "is not a base URL like https://ORG.okta.com"),
        (("--kind", "okta-api", "--org-url", "https://school.okta.com/api", "--api-token", "-"),
         TOKEN, "is not a base URL"),
        (("--kind", "okta-api", "--org-url", "https://school.okta.com"), None,
         "needs --api-token ('-' reads it from stdin)"),
        (("--kind", "okta-api", "--org-url", "https://school.okta.com", "--api-token", "-"),
         "two words", "--api-token is not usable"),
        ((*OKTA, "--tenant-id", "x"), TOKEN, "--tenant-id is not an option of --kind okta-api"),
        ((*OKTA, "--interval", "5"), TOKEN, "--interval 5 is not from 60"),
        ((*OKTA, "--interval", "0"), TOKEN, "--interval 0 is not from 60"),
        (OKTA[:-2], TOKEN, "name the Managed Apple Account domains this directory holds"),
        (("--kind", "okta-api", "--org-url", "https://school.okta.com", "--api-token", TOKEN,
          "--domain", "school.example"), None, "--api-token takes '-' and the value on stdin"),
        (OKTA, "00Okta\u00e9" + "t" * 30, "printable ASCII"),
        (("--kind", "google", "--admin-subject", "admin@school.edu", "--domain", "school.edu",
          "--service-account-file", "/dev/zero"), None, "is larger than 65536 bytes"),
        ((*OKTA, "--map-domain", "a.edu=apple.edu", "--map-domain", "b.edu=apple.edu"), TOKEN,
         "maps two directory domains to one Managed Apple Account domain"),
        (("--kind", "entra", "--tenant-id", "t", "--client-id", "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",  # noqa: E501
          "--client-secret", "-"), "secret", "--tenant-id 't' is not a tenant id"),
        (("--kind", "entra", "--tenant-id", "school.onmicrosoft.com", "--client-id", "app",
          "--client-secret", "-"), "secret", "is not an application (client) id"),
        (("--kind", "cloudevents", "--org-url", "https://school.okta.com"), None,
         "--org-url is for the directories asked on a schedule, not cloudevents"),
        (("--kind", "google", "--admin-subject", "admin@school.edu"), None,
         "needs --service-account-file"),
        (("--kind", "google", "--admin-subject", "admin@school.edu", "--service-account-file",
          "/nonexistent/key.json"), None, "cannot read --service-account-file"),
    ],
)  # fmt: skip
def test_a_directory_source_that_cannot_work_is_refused_in_one_line(
    cli, snapshot, args, stdin, message
):
    if "--domain" not in args and "--map-domain" not in args and "domains" not in message:
        args = (*args, "--domain", "school.example")
    before = snapshot()
    result = cli("sources", "add", "staff", *args, input=None if stdin is None else stdin + "\n")
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output and TOKEN not in result.output
    assert snapshot() == before


def test_rotate_secret_is_refused_for_a_directory_and_set_credential_replaces_it(
    app, cli, snapshot
):
    add_okta(cli)
    assert_refused(cli, snapshot, ("sources", "rotate-secret", "staff"), "set-credential")
    app.sources.schedule("staff", FIXTURE_NOW + timedelta(hours=1))
    result = cli(
        "sources", "set-credential", "staff", "--api-token", "-", input="00New" + "n" * 30 + "\n"
    )
    assert result.exit_code == 0, result.output
    assert app.sources.open_credentials("staff") == {"api_token": "00New" + "n" * 30}
    assert app.sources.due(FIXTURE_NOW) == ["staff"]  # asked again at once
    assert cli("sources", "add", "push", "--kind", "okta").exit_code == 0
    args = ("sources", "set-credential", "push", "--api-token", "x" * 30)
    assert_refused(cli, snapshot, args, "takes '-'")
    before = snapshot()
    result = cli("sources", "set-credential", "push", "--api-token", "-", input="x" * 30 + "\n")
    assert result.exit_code == 1 and "rotate-secret" in result.output
    assert snapshot() == before


def test_check_refuses_a_push_source_and_an_unknown_one(cli, snapshot):
    assert cli("sources", "add", "push", "--kind", "okta").exit_code == 0
    assert_refused(cli, snapshot, ("sources", "check", "push"), "only the directories")
    assert_refused(cli, snapshot, ("sources", "check", "nope"), "no source named 'nope'")


def test_remove_forgets_the_rounds_and_the_schedule(app, cli):
    add_okta(cli)
    app.sources.record_round("staff", FIXTURE_NOW, {"unchanged": 1})
    assert cli("sources", "remove", "staff").exit_code == 0
    assert not app.redis.exists(k.source_poll("staff"), k.source("staff"))
    assert app.redis.zscore(k.SOURCES_NEXT_POLL, "staff") is None


@pytest.fixture
def scripted(app):
    """The App's rounds asking a scripted directory."""
    directory = ScriptedDirectory()
    checker = app.directory_checker
    app.__dict__["directory_checker"] = DirectoryChecker(
        app.store, app.sources, checker._publish, app.settings.directories, app.now,
        directory.factory,
    )  # fmt: skip
    return directory


def test_list_and_status_show_a_failing_source_until_it_recovers(
    app, cli, clock, tmp_path, scripted
):
    assert cli("servers", "add", "Lab").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "ann@school.example", DOWNLOADED)
    add_okta(cli)
    scripted.error = DirectoryCredentialsRejected("okta: E0000011 Invalid token provided")
    result = cli("sources", "check", "staff")
    assert result.exit_code == 2
    assert "error: okta: E0000011 Invalid token provided" in result.stderr
    shown = listed(cli)["staff"]
    assert shown["failing_since"] and "E0000011" in shown["error"]
    table = cli("sources", "list").stdout
    assert "FAILING since" in table
    status = cli("status")
    assert status.exit_code == 1 and "source staff (okta-api) failing since" in status.stderr
    scripted.error = None
    result = cli("sources", "check", "staff", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["watched"] == 1 and report["findings"][0]["outcome"] == "unchanged"
    shown = listed(cli)["staff"]
    assert shown["failing_since"] is None and shown["last_success"] is not None
    assert cli("status").exit_code == 0


def test_check_exits_1_when_something_changed(app, cli, clock, tmp_path, scripted):
    from worker.directories.base import Observation

    assert cli("servers", "add", "Lab").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "ann@school.example", DOWNLOADED)
    add_okta(cli)
    scripted.answers["ann@school.example"] = Observation(
        "ann@school.example", True, False, "SUSPENDED"
    )
    result = cli("sources", "check", "staff")
    assert result.exit_code == 1
    assert "SUSPENDED" in result.stdout and "user_left" in result.stdout


def test_the_leaders_rounds_run_each_due_source_once_under_its_lease(
    app, cli, clock, tmp_path, scripted
):
    assert cli("servers", "add", "Lab").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "ann@school.example", DOWNLOADED)
    add_okta(cli, "staff", "--interval", "600")
    # Another replica holds the source's lease: this one does not ask.
    held = app.sources.lock("staff", 60)
    assert held.acquire(blocking=False)
    rounds = DirectoryRounds(app, lambda: True)
    rounds.tick()
    rounds.stop()
    assert scripted.asked == []
    held.release()
    # Not leading: nothing either.
    follower = DirectoryRounds(app, lambda: False)
    follower.tick()
    follower.stop()
    assert scripted.asked == []
    leader = DirectoryRounds(app, lambda: True)
    leader.tick()
    wait_until(lambda: app.sources.next_round("staff") > FIXTURE_NOW, what="the round's end")
    leader.stop()
    assert [w.login for w in scripted.asked] == ["ann@school.example"]
    assert app.sources.next_round("staff") == FIXTURE_NOW + timedelta(seconds=600)
    assert not app.redis.exists(k.source_lock("staff"))
    again = DirectoryRounds(app, lambda: True)
    again.tick()  # not due for ten minutes
    again.stop()
    assert len(scripted.asked) == 1


def test_a_round_stopped_by_shutdown_stays_due_for_the_next_leader(
    app, cli, clock, tmp_path, scripted
):
    assert cli("servers", "add", "Lab").exit_code == 0
    install(cli, clock, tmp_path, "Lab", "ann@school.example", DOWNLOADED)
    add_okta(cli)
    leading = [True]
    rounds = DirectoryRounds(app, lambda: leading[0])
    leading[0] = False  # it stops leading as the round runs: between two batches it ends
    rounds._round("staff", app.sources.lock("staff", 60))
    rounds.stop()
    assert app.sources.next_round("staff") == FIXTURE_NOW
    assert app.sources.poll_states(["staff"])["staff"].last_round is None


def test_a_directory_credential_is_resealed_by_reencrypt_and_opens_under_the_new_key(
    app, cli, redis_url, tmp_path, clock
):
    from worker.bootstrap import App
    from worker.config import Settings
    from worker.crypto.sealing import generate_master_key

    add_okta(cli)
    old, new = app.settings.master_key, generate_master_key()
    rotated = App(Settings(redis_url=redis_url, data_dir=tmp_path, master_key=f"{new},{old}"),
                  clock=clock)  # fmt: skip
    assert rotated.store.reseal_all().resealed == 1
    only_new = App(Settings(redis_url=redis_url, data_dir=tmp_path, master_key=new), clock=clock)
    assert only_new.sources.open_credentials("staff") == {"api_token": TOKEN}


def test_a_round_whose_lease_lapsed_stops_at_its_next_batch(
    app, cli, clock, tmp_path, scripted, monkeypatch
):
    from worker.services import directory_checks

    monkeypatch.setattr(directory_checks, "ROUND_BATCH", 1)
    for server, user in (("Lab", "ann@school.example"), ("Office", "bob@school.example")):
        assert cli("servers", "add", server).exit_code == 0
        install(cli, clock, tmp_path, server, user, DOWNLOADED)
    add_okta(cli)
    rounds = DirectoryRounds(app, lambda: True)
    stolen = []

    def observe_then_lose_the_lease(logins):
        if not stolen:  # the lease lapses, another replica takes it; our tick notices
            app.redis.delete(k.source_lock("staff"))
            other = app.sources.lock("staff", 60)
            assert other.acquire(blocking=False)
            stolen.append(other)
            rounds.tick()
        return ScriptedDirectory.observe(scripted, logins)

    scripted.observe = observe_then_lose_the_lease
    lease = app.sources.lock("staff", 60)
    assert lease.acquire(blocking=False)
    rounds._running["staff"] = lease
    rounds._round("staff", lease)
    rounds.stop()
    assert len(scripted.asked) == 1  # the second batch was never asked
    assert app.sources.next_round("staff") == FIXTURE_NOW  # still due for the lease's holder
    assert app.redis.exists(k.source_lock("staff"))  # ours did not release theirs

"""Small things a user trips on (issue 9, item 11): labels, hints and columns that must say
what is true."""

import json
import subprocess
from datetime import timedelta

from tests.helpers import DOWNLOADED, assert_refused, install
from tests.tokenfiles import credentials, encrypt_to


def test_events_list_labels_a_scheduler_warning_by_its_type(cli, clock, tmp_path):
    # Given a token with ten days left, and a scan that warns about it
    cli("servers", "add", "Lab")
    install(cli, clock, tmp_path, "Lab", "a@x.org", DOWNLOADED, days_left=10)
    assert cli("scan").exit_code == 0
    # When the audit trail is listed
    table = cli("events", "list").stdout.splitlines()
    # Then the scan's entry is the warning it sent, and only the install says "token installed"
    warned = [line for line in table if "tokenwarden.token.expiry_approaching" in line]
    installed = [line for line in table if "token installed" in line]
    assert len(warned) == 1, table
    assert len(installed) == 1, table


def test_a_bad_secret_suggests_only_options_that_exist(cli, snapshot):
    line = assert_refused(
        cli,
        snapshot,
        ("subscriptions", "add", "https://hooks.example.org/x", "--secret", "nope"),
        "leave --secret out",
    )
    assert "--generate-secret" not in line
    help_text = cli("subscriptions", "add", "--help").stdout
    assert "--generate-secret" not in help_text


def test_emit_without_arguments_names_the_events_it_takes(cli, snapshot):
    line = assert_refused(cli, snapshot, ("emit",), "give an event name", code=2)
    assert "see below" not in line
    for name in ("password-changed", "user-left", "key-regenerated", "token-generated"):
        assert name in line


def test_the_next_command_after_servers_add_is_quoted_for_the_shell(cli, tmp_path):
    # Given a name a shell would split or expand
    name = "Ms O'Brien's $HOME lab"
    result = cli("servers", "add", name, "--org", "St. Mary's")
    assert result.exit_code == 0, result.output
    # When the suggested command is run by a POSIX shell
    suggestion = result.stderr.split("`")[1]
    assert suggestion.startswith("tokenwarden keys export ")
    argv = subprocess.run(
        ["sh", "-c", f"printf '%s\\0' {suggestion.removeprefix('tokenwarden ')}"],
        capture_output=True,
        check=True,
        cwd=tmp_path,
    ).stdout.split(b"\0")[:-1]
    # Then it reaches tokenwarden as the same name and organization
    assert [a.decode() for a in argv[:5]] == ["keys", "export", name, "--org", "St. Mary's"]


def test_status_and_tokens_list_tell_same_named_servers_apart_by_organization(cli, clock, tmp_path):
    # Given two servers named alike in two organizations, each with a token
    for org, user in (("North District", "n@x.org"), ("South District", "s@x.org")):
        assert cli("servers", "add", "Main", "--org", org).exit_code == 0
        cert = cli("keys", "export", "Main", "--org", org).stdout
        path = tmp_path / f"{org}.p7m"
        path.write_bytes(encrypt_to(cert, credentials(clock.now + timedelta(days=300))))
        installed = cli(
            "tokens",
            "install",
            "Main",
            str(path),
            "--org",
            org,
            "--offline",
            "--downloaded-by",
            user,
        )
        assert installed.exit_code == 0, installed.output
    # Then both tables have an ORG column naming each
    for command in (("status",), ("tokens", "list")):
        lines = cli(*command).stdout.splitlines()
        assert "ORG" in lines[0].split(), lines[0]
        assert any("North District" in line for line in lines[1:]), lines
        assert any("South District" in line for line in lines[1:]), lines
    # and --json carries it
    for command in (("status", "--json"), ("tokens", "list", "--json")):
        described = json.loads(cli(*command).stdout)
        assert sorted(d["org"] for d in described) == ["North District", "South District"]

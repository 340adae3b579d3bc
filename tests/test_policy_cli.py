"""`servers policy`, `orgs policy`, `policy`: show, set, keep what is not named, clear; bad
input is one line and a non-zero exit, nothing stored changed; `status` calls a token due from
its policy's renew-before."""

from __future__ import annotations

import json

from tests.helpers import assert_refused, install


def _add(cli, name="Lab", *extra):
    result = cli("servers", "add", name, *extra)
    assert result.exit_code == 0, result.output


def test_set_show_and_clear_a_server_policy(cli):
    _add(cli)
    shown = cli("servers", "policy", "Lab")
    assert shown.exit_code == 0
    assert "nothing set here" in shown.output
    assert "30 days  (default)" in shown.output

    result = cli(
        "servers", "policy", "Lab", "--renew-before", "45", "--rotate-key", "always",
        "--owner", "a@school.example", "--owner", "mailto:B@school.example",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "set the rotation policy of server 'Lab'" in result.output
    assert "45 days  (server)" in result.output

    owners_only = cli("servers", "policy", "Lab", "--owner", "c@school.example", "--json")
    described = json.loads(owners_only.stdout)
    assert described["layer"] == {
        "renew_before_days": 45,
        "rotate_key": "always",
        "owners": ["c@school.example"],
    }
    assert described["in_force"]["from"]["rotate_key"] == "server"

    cleared = cli("servers", "policy", "Lab", "--clear", "--json")
    assert json.loads(cleared.stdout)["in_force"]["renew_before_days"] == 30


def test_organization_and_global_defaults(cli):
    _add(cli, "Lab", "--org", "North")
    assert cli("policy", "--renew-before", "60").exit_code == 0
    org = cli("orgs", "policy", "north", "--rotate-key", "always", "--json")
    assert org.exit_code == 0, org.output
    described = json.loads(org.stdout)
    assert described["org"] == "North"
    assert described["in_force"]["renew_before_days"] == 60
    assert described["in_force"]["from"] == {
        "renew_before_days": "global",
        "rotate_key": "org",
        "owners": "default",
    }
    server = json.loads(cli("servers", "policy", "Lab", "--json").stdout)
    assert server["in_force"]["rotate_key"] == "always"


def test_bad_policy_input_is_one_line_and_changes_nothing(cli, snapshot):
    _add(cli, "Lab", "--org", "North")
    assert_refused(
        cli, snapshot, ["servers", "policy", "Lab", "--renew-before", "0"], "out of range"
    )
    assert_refused(
        cli, snapshot, ["servers", "policy", "Lab", "--owner", "nobody"], "not a plain e-mail"
    )
    assert_refused(
        cli, snapshot, ["servers", "policy", "Lab", "--clear", "--renew-before", "9"], "--clear"
    )
    assert_refused(cli, snapshot, ["orgs", "policy", "Sotuh", "--renew-before", "9"], "Sotuh", 1)
    assert_refused(cli, snapshot, ["servers", "policy", "Nope"], "no server named", 1)


def test_status_calls_a_token_due_from_renew_before(cli, clock, tmp_path):
    _add(cli)
    install(cli, clock, tmp_path, "Lab", "a@school.example", clock.now, days_left=40)
    fine = cli("status", "--json")
    assert fine.exit_code == 0, fine.output
    assert json.loads(fine.stdout)[0]["state"] == "ok"
    assert cli("servers", "policy", "Lab", "--renew-before", "45").exit_code == 0
    due = cli("status", "--json")
    assert due.exit_code == 1
    assert json.loads(due.stdout)[0]["state"] == "due"


def test_servers_show_names_the_policy_in_force(cli):
    _add(cli)
    assert cli("servers", "policy", "Lab", "--owner", "a@school.example").exit_code == 0
    shown = cli("servers", "show", "Lab")
    assert (
        "policy:       renew 30 days before expiry, rotate key never, owners a@school.example"
        in (shown.output)
    )
    described = json.loads(cli("servers", "show", "Lab", "--json").stdout)
    assert described["policy"]["from"]["owners"] == "server"


def test_scan_says_how_many_renewals_it_opened(cli, clock, tmp_path):
    _add(cli)
    install(cli, clock, tmp_path, "Lab", "a@school.example", clock.now, days_left=40)
    assert cli("servers", "policy", "Lab", "--renew-before", "45", "--rotate-key", "always")
    preview = json.loads(cli("scan", "--dry-run", "--json").stdout)
    assert preview["renewals_opened"] == 1 and preview["keys_staged"] == 0
    result = cli("scan")
    assert "opened 1 scheduled renewals (1 new key pairs staged)" in result.output

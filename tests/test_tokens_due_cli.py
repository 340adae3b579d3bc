"""`tokenwarden tokens due`: the renewal plan as a table and as JSON, its window and its
organization, and the one-line refusals of what cannot be used."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tests.helpers import DOWNLOADED, assert_refused, install
from worker import registry
from worker.policies import GLOBAL_TARGET, org_target, server_target, set_policy
from worker.rules.policy import PolicyLayer


@pytest.fixture
def estate(app, cli, clock, tmp_path):
    """Lab (North, 100 days left, renewed 60 before, rotating keys), Gym (North, 40 days
    left), Annex (no organization, 200 days left); the global layer renews 35 days before."""
    for name, org, days in (("Lab", "North", 100), ("Gym", "North", 40), ("Annex", None, 200)):
        assert cli("servers", "add", name, *(["--org", org] if org else [])).exit_code == 0
        install(cli, clock, tmp_path, name, f"admin@{name.lower()}.example", DOWNLOADED, days)
    lab = registry.resolve_server(app.store, "Lab")
    layer = PolicyLayer(renew_before_days=60, rotate_key="always", owners=("lead@north.example",))
    set_policy(app.store, server_target(lab), layer, clear=False, now=clock.now)
    north = org_target([lab], "North")
    owners = PolicyLayer(owners=("it@north.example", "ops@north.example"))
    set_policy(app.store, north, owners, clear=False, now=clock.now)
    set_policy(
        app.store, GLOBAL_TARGET, PolicyLayer(renew_before_days=35), clear=False, now=clock.now
    )
    return clock.now


def test_the_table_lists_what_falls_due_in_30_days_soonest_first(cli, estate):
    result = cli("tokens", "due")
    assert result.exit_code == 0, result.output
    header, *lines = result.stdout.splitlines()
    assert header.split() == [
        "DUE", "DAYS", "SERVER", "ORG", "EXPIRES", "OWNERS", "NEW", "KEY", "STATE"
    ]  # fmt: skip
    assert len(lines) == 1, result.stdout  # Gym: 40 - 35 = 5 days; Lab's is 40 days away
    gym = lines[0].split()
    due = (estate + timedelta(days=5)).date().isoformat()
    assert gym[:4] == [due, "5", "Gym", "North"]
    assert "it@north.example, ops@north.example" in lines[0]
    assert gym[-2:] == ["-", "planned"]  # the key is kept


def test_within_widens_the_window_and_the_columns_say_key_and_owners(cli, estate):
    result = cli("tokens", "due", "--within", "365")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()[1:]
    assert [line.split()[2] for line in lines] == ["Gym", "Lab", "Annex"]
    lab = lines[1]
    assert "lead@north.example" in lab and "it@north.example" not in lab
    assert "wanted" in lab  # its policy rotates the key; none staged yet


def test_json_gives_each_entry_with_its_policy(cli, estate):
    result = cli("tokens", "due", "--within", "400", "--json")
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert [e["server"] for e in entries] == ["Gym", "Lab", "Annex"]
    gym, lab, annex = entries
    assert lab["days_until_due"] == 40 and lab["renew_before_days"] == 60
    assert lab["rotate_key"] == "always" and lab["new_key_staged"] is False
    assert lab["policy_from"] == {"renew_before_days": "server", "rotate_key": "server",
                                  "owners": "server"}  # fmt: skip
    assert gym["owners"] == ["it@north.example", "ops@north.example"]
    assert gym["policy_from"]["owners"] == "org" and gym["policy_from"]["renew_before_days"] == (
        "global"
    )
    assert annex["org"] is None and annex["days_until_due"] == 165
    assert annex["state"] == "planned" and annex["replacement_open"] is False
    assert set(gym) >= {"due_at", "due_date", "expires_at", "token_id", "renewal_opened_at"}


def test_org_keeps_one_organization(cli, estate):
    result = cli("tokens", "due", "--within", "400", "--org", "north", "--json")
    assert [e["server"] for e in json.loads(result.stdout)] == ["Gym", "Lab"]


def test_the_overdue_show_with_negative_days(cli, clock, estate):
    clock.now = estate + timedelta(days=8)
    result = cli("tokens", "due", "--within", "0", "--json")
    [gym] = json.loads(result.stdout)
    assert (gym["server"], gym["days_until_due"], gym["state"]) == ("Gym", -3, "overdue")


def test_an_empty_plan_says_so_and_succeeds(cli, estate):
    result = cli("tokens", "due", "--within", "0")
    assert result.exit_code == 0
    assert result.stdout == "nothing is due for renewal in the next 0 days\n"
    result = cli("tokens", "due", "--within", "0", "--org", "North")
    assert (
        result.stdout == "nothing is due for renewal in organization 'North' in the next 0 days\n"
    )
    assert json.loads(cli("tokens", "due", "--within", "0", "--json").stdout) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--within", "-1"), "-1 is not in the range 0<=x<=400"),
        (("--within", "401"), "401 is not in the range 0<=x<=400"),
        (("--within", "soon"), "'soon' is not a valid integer"),
        (("--ical", "--json"), "give --ical or --json, not both"),
        (("-o", "plan.ics"), "give --ical with it"),
    ],
)
def test_unusable_options_are_refused_in_one_line_with_exit_2(cli, snapshot, estate, args, message):
    assert_refused(cli, snapshot, ("tokens", "due", *args), message, code=2)


def test_an_unknown_organization_is_refused_in_one_line(cli, snapshot, estate):
    line = assert_refused(cli, snapshot, ("tokens", "due", "--org", "South"), "'South'")
    assert "organizations: 'North'" in line

"""The renewal plan of an estate (worker/services/renewal_plan.py) on each Store: policies set in
layers (a server's own, its organization's, the global one) through worker.policies, tokens
installed through the registry, the servers read in batches."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scheduler.scan import Scanner
from tests.helpers import FIXTURE_NOW, install_on
from worker import registry
from worker.errors import InvalidInput, NotFound
from worker.policies import GLOBAL_TARGET, org_target, server_target, set_policy
from worker.rules.policy import PolicyLayer
from worker.services.renewal_plan import renewal_plan

NOW = FIXTURE_NOW


def add(store, name, org=None, days=None):
    registry.add_server(store, name, org=org, now=NOW)
    if days is not None:
        install_on(store, name, f"admin@{name.lower()}.example", now=NOW, days=days)
    return registry.resolve_server(store, name, org)


def set_layer(store, target, **values):
    set_policy(store, target, PolicyLayer(**values), clear=False, now=NOW)


@pytest.fixture
def estate(store, listings):
    """Lab (North, its own renew-before and owner), Office (North: the organization's layer),
    Annex (no organization: the global layer), Spare (North, no token)."""
    lab = add(store, "Lab", "North", days=100)
    office = add(store, "Office", "North", days=90)
    add(store, "Annex", None, days=50)
    add(store, "Spare", "North")
    set_layer(store, server_target(lab), renew_before_days=60, owners=("lead@north.example",))
    set_layer(
        store,
        org_target(listings.servers(), "north"),
        renew_before_days=45,
        rotate_key="always",
        owners=("it@north.example", "ops@north.example"),
    )
    set_layer(store, GLOBAL_TARGET, renew_before_days=20)
    return {"lab": lab, "office": office}


def test_each_server_with_a_token_is_planned_under_its_policy_in_force(store, listings, estate):
    plan = renewal_plan(store, listings, NOW)
    assert [(e.server, e.org) for e in plan] == [
        ("Annex", ""),  # expires in 50 days, renewed 20 before: due in 30
        ("Lab", "North"),  # 100 - 60: due in 40
        ("Office", "North"),  # 90 - 45: due in 45
    ]
    annex, lab, office = plan
    assert [e.days_until_due for e in plan] == [30, 40, 45]
    assert annex.due_at == annex.expires_at - timedelta(days=20)
    assert lab.due_at == lab.expires_at - timedelta(days=60)
    assert lab.policy.owners == ("lead@north.example",)
    assert lab.policy.rotate_key == "always"  # from the organization, below its own layer
    assert lab.policy.sources == {
        "renew_before_days": "server",
        "rotate_key": "org",
        "owners": "server",
    }
    assert office.policy.owners == ("it@north.example", "ops@north.example")
    assert annex.policy.owners == () and annex.policy.rotate_key == "never"
    assert {e.state for e in plan} == {"planned"}
    assert {e.new_key for e in plan} == {"-", "wanted"}
    assert lab.token_id == store.get_server(estate["lab"].id).token_id


@pytest.mark.parametrize(
    ("within", "servers"),
    [(0, []), (30, ["Annex"]), (44, ["Annex", "Lab"]), (45, ["Annex", "Lab", "Office"])],
)
def test_a_window_keeps_what_falls_due_by_its_end(store, listings, estate, within, servers):
    plan = renewal_plan(store, listings, NOW, within_days=within)
    assert [e.server for e in plan] == servers


def test_the_overdue_are_listed_first_in_any_window(store, listings, estate):
    later = NOW + timedelta(days=41)
    plan = renewal_plan(store, listings, later, within_days=0)
    assert [(e.server, e.days_until_due, e.state) for e in plan] == [
        ("Annex", -11, "overdue"),
        ("Lab", -1, "overdue"),
    ]


def test_an_organization_is_chosen_ignoring_case(store, listings, estate):
    plan = renewal_plan(store, listings, NOW, org=" NORTH ")
    assert [e.server for e in plan] == ["Lab", "Office"]


def test_an_organization_no_server_is_in_is_refused_with_the_ones_there_are(store, listings):
    add(store, "Lab", "North", days=100)
    with pytest.raises(
        NotFound, match=r"no server is registered in organization 'South' .*'North'"
    ):
        renewal_plan(store, listings, NOW, org="South")
    with pytest.raises(InvalidInput, match="give the organization's name"):
        renewal_plan(store, listings, NOW, org="  ")


def test_an_organization_whose_servers_hold_no_token_has_an_empty_plan(store, listings):
    add(store, "Spare", "East")
    assert renewal_plan(store, listings, NOW, org="east") == []
    assert renewal_plan(store, listings, NOW) == []


def test_small_batches_give_the_same_plan(store, listings, estate):
    for name in ("A1", "A2", "A3"):
        add(store, name, "South", days=200)
    whole = renewal_plan(store, listings, NOW)
    assert len(whole) == 6
    assert renewal_plan(store, listings, NOW, batch=2) == whole
    assert renewal_plan(store, listings, NOW, batch=1, org="south") == whole[3:]


def test_a_new_token_moves_the_renewal_to_its_expiry(store, listings, estate):
    [before] = renewal_plan(store, listings, NOW, org="north", within_days=40)
    install_on(store, "Lab", "admin@lab.example", now=NOW + timedelta(days=1), days=300)
    plan = renewal_plan(store, listings, NOW + timedelta(days=1), org="north")
    lab = next(e for e in plan if e.server == "Lab")
    assert lab.token_id != before.token_id
    assert lab.due_at == lab.expires_at - timedelta(days=60)
    assert lab.due_at > before.due_at


def test_the_scan_opening_the_renewal_shows_in_the_plan_with_the_key_it_staged(
    store, listings, estate
):
    due = NOW + timedelta(days=45, hours=1)  # Office's renewal is due (and Lab's, Annex's)
    Scanner(store, (7, 1)).scan(due)
    plan = {e.server: e for e in renewal_plan(store, listings, due)}
    office = plan["Office"]
    assert office.state == "renewal open"
    assert office.renewal_opened == due
    assert office.replacement_open
    assert office.new_key_staged and office.new_key == "staged"
    assert plan["Annex"].new_key == "-"  # its policy keeps the key

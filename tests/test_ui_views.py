"""What the pages show, as the pure views work it out (worker/ui/views/): no Redis, `now`
passed in. The pages themselves are tested over HTTP in test_ui_pages.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.records import Server, Token
from worker.rules import status
from worker.rules.policy import DEFAULT_POLICY
from worker.ui.pages import file_name
from worker.ui.views.estate import PAGE_ROWS, Filters, estate_view, parse_filters
from worker.ui.views.server import concerns, install_command
from worker.ui.views.timeline import (
    AGGREGATE_ABOVE,
    AXIS_Y,
    LEFT,
    PLOT_W,
    bands,
    ticks,
    timeline,
    x_of,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
THRESHOLDS = (120, 60, 30, 14, 7, 3, 1)


def server(i: int, org: str = "Org") -> Server:
    return Server(id=f"srv_{i:04x}", name=f"Server {i}", org=org, created_at=NOW,
                  token_id=f"tok_{i:04x}")  # fmt: skip


def token(i: int, days: float) -> Token:
    return Token(
        id=f"tok_{i:04x}", server_id=f"srv_{i:04x}", consumer_id="c", fingerprint="f",
        downloaded_by=f"user{i}@school.edu", downloaded_at=NOW - timedelta(days=100),
        expires_at=NOW + timedelta(days=days), installed_at=NOW, key_id="k",
    )  # fmt: skip


def rows(expiries: list[float], org: str = "Org") -> list[status.Row]:
    return status.ordered(
        [
            status.row_for(
                server(i, org), token(i, d), None, NOW, THRESHOLDS, policy=DEFAULT_POLICY
            )
            for i, d in enumerate(expiries)
        ]
    )


@pytest.mark.parametrize(
    ("days", "x"),
    [(0, LEFT), (365, LEFT + PLOT_W), (-5, LEFT), (400, LEFT + PLOT_W), (182.5, LEFT + PLOT_W / 2)],
)
def test_a_moment_is_placed_along_the_year_and_kept_inside_it(days, x):
    assert x_of(NOW + timedelta(days=days), NOW) == pytest.approx(x, abs=0.1)


def test_bands_go_widest_first_and_labels_too_close_to_the_last_are_left_out():
    found = bands(NOW, THRESHOLDS)
    assert [b.days for b in found] == list(THRESHOLDS)
    labelled = [b.days for b in found if b.label_x is not None]
    # 7 days sits 18 units from 14 days, 3 days 28: not labelled; 1 day is 33 away
    assert labelled == [120, 60, 30, 14, 1]
    assert [b.days for b in bands(NOW, (400, 30, 0))] == [30]


def test_ticks_name_the_first_of_each_month_with_the_year_at_the_start_and_in_january():
    labels = [t.label for t in ticks(NOW)]
    assert labels[:3] == ["Apr 2026", "May", "Jun"]
    assert "Jan 2027" in labels and len(labels) == 12


def test_up_to_the_limit_each_token_is_a_mark_stacked_within_its_week():
    chart = timeline(rows([10, 10.5, 11, 200, -1]), NOW, THRESHOLDS)
    assert (chart.shown, chart.expired, len(chart.marks), chart.bars) == (4, 1, 4, [])
    same_week = sorted((m for m in chart.marks if m.cx < 100), key=lambda m: -m.cy)
    assert [m.cy for m in same_week] == [AXIS_Y - 6, AXIS_Y - 18, AXIS_Y - 30]
    assert {m.state for m in chart.marks} == {"due", "ok"}


def test_above_the_limit_weeks_are_bars_stacked_by_state_with_the_most_urgent_at_the_bottom():
    expiries = [20] * 100 + [200] * AGGREGATE_ABOVE
    chart = timeline(rows(expiries), NOW, THRESHOLDS)
    assert chart.marks == [] and chart.week_max == AGGREGATE_ABOVE
    assert sum(b.count for b in chart.bars) == len(expiries)
    due, ok = (next(b for b in chart.bars if b.state == s) for s in ("due", "ok"))
    assert due.y + due.height == AXIS_Y and ok.height > due.height


def test_the_estate_counts_states_in_the_organization_asked_for_and_pages_the_rest():
    every = rows([10] * 3 + [200] * (PAGE_ROWS + 5)) + rows([50], org="Other")
    view = estate_view(every, Filters(org="org", page=2))
    assert view.matching == PAGE_ROWS + 8 and view.pages == 2 and len(view.rows) == 8
    assert dict(view.counts)["due"] == 3 and dict(view.counts)["ok"] == PAGE_ROWS + 5
    assert view.orgs == ["Org", "Other"]
    only_due = estate_view(every, Filters(state="due", page=9))
    assert only_due.filters.page == 1 and [r["org"] for r in only_due.rows] == ["Org"] * 3


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"state": "sunny"}, "unknown state 'sunny'"),
        ({"page": "0x2"}, "page must be a page number"),
        ({"page": "9999999"}, "page must be a page number"),
    ],
)
def test_a_filter_that_is_not_one_is_refused_saying_why(query, error):
    with pytest.raises(ValueError, match=error):
        parse_filters(query)


def test_filters_make_the_links_of_the_page():
    filters = parse_filters({"org": " North ", "state": "replace now", "page": "3"})
    assert filters == Filters("North", "replace now", 3)
    assert filters.query(page=4) == "?org=North&state=replace+now&page=4"
    assert filters.query(state=None) == "?org=North"
    assert Filters().query() == "?"


@pytest.mark.parametrize(
    ("entry", "about"),
    [
        ({"event": {"token_id": "tok_0001"}}, True),
        ({"event": {"server_id": "srv_0001"}}, True),
        ({"event": {"data": {"user": "x"}}, "decisions": [{"token": "tok_0001"}]}, True),
        ({"event": {"data": {"server": "SERVER 1"}}}, True),
        ({"event": {"data": {"server": "Server 1", "org": "Elsewhere"}}}, False),
        ({"event": {"data": {"user": "x"}}, "decisions": [{"token": "tok_0002"}]}, False),
        ({"event": "cut short"}, False),
    ],
)
def test_an_audit_entry_concerns_a_server_by_id_token_or_name(entry, about):
    assert concerns(entry, server(1), {"tok_0001"}) is about


def test_the_install_command_and_the_file_name_are_safe_to_use():
    odd = Server(id="srv_1", name="Room 101; rm -rf ~", org="O'Brien", created_at=NOW)
    assert install_command(odd) == (
        "tokenwarden tokens install 'Room 101; rm -rf ~' --org 'O'\"'\"'Brien' DOWNLOADED_TOKEN.p7m"
    )
    assert file_name("Room 101/../../etc") == "Room-101-..-..-etc"
    assert file_name("<>") == "certificate"

"""The estate page: one row per server with the states and order of `tokenwarden status`
(worker/rules/status.py), filtered by organization and state, a page of rows at a time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from worker.names import name_key
from worker.rules import status
from worker.rules.status import STATES, Row
from worker.store.page_reads import EstateEntry

#: Rows on one page (the most urgent come first, so the first page is the one that matters).
PAGE_ROWS = 200


@dataclass(frozen=True)
class Filters:
    """What the query string asks for; None: everything."""

    org: str | None = None
    state: str | None = None
    page: int = 1

    def query(self, **changes: Any) -> str:
        """The query string of these filters with `changes` (a page link, a state link)."""
        values = {"org": self.org, "state": self.state, "page": None} | changes
        parts = [(k, v) for k, v in values.items() if v not in (None, "", 1)]
        return "?" + urlencode(parts) if parts else "?"


@dataclass(frozen=True)
class EstateView:
    rows: list[dict[str, Any]]
    #: Servers in each state (of the organization asked for, if one is), in STATES order.
    counts: list[tuple[str, int]]
    #: Every organization, sorted, for the filter.
    orgs: list[str]
    #: Servers matching the filters, and the pages they take.
    matching: int
    pages: int
    filters: Filters
    total: int


def rows_of(
    entries: Sequence[EstateEntry],
    now: datetime,
    thresholds: Sequence[int],
    apple_interval_s: int,
) -> list[Row]:
    """Every server's row, most urgent first (as `status` orders them)."""
    return status.ordered(
        [
            status.row_for(
                e.server, e.token, e.replacement, now, thresholds, apple_interval_s, e.policy
            )
            for e in entries
        ]
    )


def estate_view(rows: list[Row], filters: Filters) -> EstateView:
    """What the estate page shows of `rows` (ordered) for `filters`."""
    in_org = rows
    if filters.org:
        wanted = name_key(filters.org)
        in_org = [r for r in rows if name_key(r.server.org) == wanted]
    states = [r.state for r in in_org]
    counts = Counter(states)
    matching = (
        [r for r, s in zip(in_org, states, strict=True) if s == filters.state]
        if filters.state
        else in_org
    )
    pages = max(1, -(-len(matching) // PAGE_ROWS))
    page = min(max(filters.page, 1), pages)
    shown = matching[(page - 1) * PAGE_ROWS : page * PAGE_ROWS]
    return EstateView(
        rows=[describe(r) for r in shown],
        counts=[(s, counts[s]) for s in STATES],
        orgs=sorted({r.server.org for r in rows if r.server.org}, key=str.casefold),
        matching=len(matching),
        pages=pages,
        filters=Filters(filters.org, filters.state, page),
        total=len(rows),
    )


def describe(row: Row) -> dict[str, Any]:
    """A row as the template shows it: what `status --json` says, and the server's id."""
    described = row.describe()
    described["server_id"] = row.server.id
    return described


def parse_filters(query: dict[str, str]) -> Filters:
    """The filters of a query string; ValueError (with what to do) for a state or page that is
    not one."""
    state = query.get("state") or None
    if state is not None and state not in STATES:
        raise ValueError(f"unknown state {state!r}; the states are {', '.join(STATES)}")
    page_text = query.get("page") or "1"
    if not page_text.isdigit() or len(page_text) > 6:
        raise ValueError("page must be a page number")
    org = (query.get("org") or "").strip() or None
    return Filters(org=org, state=state, page=int(page_text))
